//! raftchat's node runtime: the async host of one replica, the TCP transport, the durable log
//! and the client library. Written against madsim-tokio, so the simulator runs this very code
//! on its simulated network and clock, and the real server runs it on tokio.
#![deny(missing_docs)]

pub mod auth;
pub mod client;
pub mod client_pool;
pub mod cluster_file;
pub mod cluster_status;
pub mod config;
pub mod deadline;
pub mod disk;
pub mod durable;
pub mod file_disk;
pub mod frame_io;
#[cfg(not(madsim))]
pub mod gateway;
pub mod host;
pub mod observer;
pub mod outbox;
pub mod timeline;
pub mod tls;
pub mod transport;
