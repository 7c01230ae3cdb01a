//! The original CS262 chat service's gRPC API (`rpc_service.ChatService`), served in front of a
//! raftchat cluster so that the original's clients, and any gRPC client, work unchanged.
//!
//! Three layers, each testable alone:
//! - [`proto`]: the messages and the service generated from `proto/rpc_service.proto` at build
//!   time (no `protoc` needed).
//! - [`translate`]: pure functions between those messages and chat operations and replies.
//! - [`service`]: the tonic service, which runs each operation through a [`service::Backend`]
//!   (in the server, the client library: a session per call, leader discovery, retries).
//!
//! This crate is never built for the simulator: tonic needs the real tokio.
#![deny(missing_docs)]

/// The messages and service of `proto/rpc_service.proto`, as prost and tonic generate them.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::doc_markdown,
    unused_qualifications
)]
pub mod proto {
    tonic::include_proto!("rpc_service");
}

pub mod service;
pub mod translate;

#[cfg(test)]
mod local_chat;
