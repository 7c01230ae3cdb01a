//! raftchat's node runtime: the async host of one replica, the transport, the durable log and
//! the client library. Written against madsim-tokio so the simulator runs this very code.
#![deny(missing_docs)]
