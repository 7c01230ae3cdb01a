//! The gRPC gateway of a server (the original service's `ChatService`): every call runs through
//! the client library from a [`ClientPool`], so a node that is not the leader forwards it to the
//! leader and its caller gets the real answer from whichever node it asked. Only in the normal
//! build: tonic does not run under the simulator.

use crate::client::{ClientConfig, ClientError};
use crate::client_pool::ClientPool;
use raftchat::chat::{Operation, Reply};
use raftchat_grpc::service::{self, Backend, BackendError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long one gateway call may run, retries included: well within the 3 s after which the
/// original client gives up.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a call waits for a free client when every one is busy.
const CLIENT_WAIT_MAX: Duration = Duration::from_millis(250);
/// Most clients (and so sessions) one gateway keeps.
const CLIENTS_MAX: usize = 64;

impl Backend for ClientPool {
    async fn execute(&self, operation: Operation) -> Result<Reply, BackendError> {
        match ClientPool::execute(self, operation).await {
            Ok(completed) => Ok(completed.reply),
            Err(ClientError::Failed(why)) => Err(BackendError::Failed(why)),
            Err(ClientError::Unknown(why)) => Err(BackendError::Unknown(why)),
        }
    }
}

/// A gateway bound to its address, ready to serve.
pub struct Gateway {
    listener: TcpListener,
    pool: Arc<ClientPool>,
}

impl Gateway {
    /// Binds `address` for a gateway whose calls run as clients configured by `client` (its
    /// operation timeout is cut to [`CALL_TIMEOUT`]).
    pub async fn bind(address: SocketAddr, mut client: ClientConfig) -> std::io::Result<Gateway> {
        let listener = service::bind(address).await?;
        client.operation_timeout = client.operation_timeout.min(CALL_TIMEOUT);
        client.attempt_timeout = client.attempt_timeout.min(client.operation_timeout);
        let pool = Arc::new(ClientPool::new(client, CLIENTS_MAX, CLIENT_WAIT_MAX));
        Ok(Gateway { listener, pool })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        service::serve(self.listener, self.pool, shutdown).await
    }
}
