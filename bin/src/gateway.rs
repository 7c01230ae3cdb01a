//! The gRPC gateway of a server (the original service's `ChatService`): every call runs through
//! the client library from a [`ClientPool`], so a node that is not the leader forwards it to the
//! leader and its caller gets the real answer from whichever node it asked. Only in the normal
//! build: tonic does not run under the simulator.
//!
//! Every call is answered within [`CALL_BUDGET`], well before the original client gives up
//! (about 3 s) and tries another server with a write that may have been applied. The client
//! library's own deadline is checked between attempts, so an attempt begun just before it can
//! overrun it; the budget bounds the whole call, the wait for a pooled client included. The
//! operation runs in a task of its own, so a call whose budget runs out, or whose caller goes
//! away, never abandons a client in the middle of an operation: the task finishes it and returns
//! the client, with its session, to the pool.

use crate::client::{ClientConfig, ClientError};
use crate::client_pool::ClientPool;
use raftchat::chat::{Operation, Reply};
use raftchat_grpc::service::{self, Backend, BackendError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The longest a gateway call takes to answer, whatever happens to the cluster.
pub const CALL_BUDGET: Duration = Duration::from_millis(2500);
/// How long the client library may spend on one operation, retries included; with one attempt's
/// overrun and the wait for a client it stays within [`CALL_BUDGET`] in all but rare cases,
/// which the budget cuts short with an unknown outcome.
const OPERATION_TIMEOUT: Duration = Duration::from_millis(1800);
/// The longest one attempt against one server may take.
const ATTEMPT_TIMEOUT_MAX: Duration = Duration::from_millis(300);
/// How long a call waits for a free client when every one is busy.
const CLIENT_WAIT_MAX: Duration = Duration::from_millis(200);
/// Most clients (and so sessions) one gateway keeps.
const CLIENTS_MAX: usize = 64;

/// The pool as the gRPC service's backend.
struct Pooled(Arc<ClientPool>);

impl Backend for Pooled {
    async fn execute(&self, operation: Operation) -> Result<Reply, BackendError> {
        let pool = Arc::clone(&self.0);
        let task = tokio::spawn(async move { pool.execute(operation).await });
        match tokio::time::timeout(CALL_BUDGET, task).await {
            Ok(Ok(Ok(completed))) => Ok(completed.reply),
            Ok(Ok(Err(ClientError::Failed(why) | ClientError::AuthFailed(why)))) => {
                Err(BackendError::Failed(why))
            }
            Ok(Ok(Err(ClientError::Unknown(why)))) => Err(BackendError::Unknown(why)),
            Ok(Err(error)) => Err(BackendError::Unknown(format!(
                "the call's task failed: {error}"
            ))),
            Err(_) => Err(BackendError::Unknown(format!(
                "no answer within {} ms",
                CALL_BUDGET.as_millis()
            ))),
        }
    }
}

/// A gateway bound to its address, ready to serve.
pub struct Gateway {
    listener: TcpListener,
    pool: Arc<ClientPool>,
}

impl Gateway {
    /// Binds `address` for a gateway whose calls run as clients of the cluster `client`
    /// describes (with the gateway's own, shorter timeouts).
    pub async fn bind(address: SocketAddr, mut client: ClientConfig) -> std::io::Result<Gateway> {
        // Bound before anything runs, so an address in use is reported at start.
        let listener = TcpListener::bind(address).await?;
        client.operation_timeout = OPERATION_TIMEOUT;
        client.attempt_timeout = client.attempt_timeout.min(ATTEMPT_TIMEOUT_MAX);
        let pool = Arc::new(ClientPool::new(client, CLIENTS_MAX, CLIENT_WAIT_MAX));
        Ok(Gateway { listener, pool })
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        service::serve(self.listener, Arc::new(Pooled(self.pool)), shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftchat::types::NodeId;
    use std::collections::BTreeMap;
    use std::time::Instant;

    /// A cluster member that accepts connections and never answers: the worst case for the
    /// budget, since every attempt runs to its timeout with the request perhaps delivered.
    async fn silent_member() -> (TcpListener, ClientConfig) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let members = BTreeMap::from([(NodeId(1), listener.local_addr().unwrap())]);
        let mut config = ClientConfig::new(members);
        config.attempt_timeout = Duration::from_secs(5);
        (listener, config)
    }

    #[tokio::test]
    async fn a_call_to_a_silent_cluster_is_answered_within_the_budget() {
        let (_listener, config) = silent_member().await;
        let gateway = Gateway::bind("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        let backend = Pooled(Arc::clone(&gateway.pool));
        let started = Instant::now();
        let send = Operation::SendMessage {
            from: "a".into(),
            to: "b".into(),
            message: "hi".into(),
        };
        let result = backend.execute(send).await;
        let took = started.elapsed();
        // Before the original client gives up (about 3 s) and tries another server.
        assert!(took < Duration::from_secs(3), "{took:?}");
        // A session could not even be opened: nothing was applied.
        assert!(matches!(result, Err(BackendError::Failed(_))), "{result:?}");
    }
}
