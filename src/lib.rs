//! raftchat's sans-IO core: the Raft state machine, the chat state machine, the wire and disk
//! codecs, and the replica that composes them.
//!
//! Nothing in this crate performs I/O, reads a clock, spawns a thread or draws OS randomness:
//! every function is a deterministic function of its inputs, so the simulator and the real
//! servers drive exactly the same code. Time enters as `tick()`, randomness as a seeded ChaCha
//! RNG handed in by the host, and every effect leaves as data (`Ready`) for the host to carry out.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod chat;
pub mod codec;
pub mod limits;
#[cfg(feature = "mutants")]
pub mod mutants;
pub mod raft;
pub mod replica;
pub mod storage;
pub mod types;
pub mod wire;
