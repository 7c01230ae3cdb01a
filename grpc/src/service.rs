//! The tonic service: each call is translated, run through a [`Backend`], and answered with a
//! status the original client acts on correctly.
//!
//! The original client tries its servers in order and moves on after SERVER_ERROR (190) or a
//! gRPC error; any other status is final. So the gateway answers 190 only when nothing can
//! have been applied (no leader reached), or for a read, which changes nothing either way; a
//! write whose outcome is unknown gets a final GENERAL_ERROR saying so, because a 190 would make
//! the client apply it a second time through another server. Calls are never answered with a
//! gRPC error for a chat outcome: the status is in the message.

use crate::proto::chat_service_server::{ChatService, ChatServiceServer};
use crate::proto::{ChatRequest, ChatResponse};
use crate::translate;
use raftchat::chat::{Operation, Reply};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response};

/// Why a backend could not give a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendError {
    /// Certainly not applied: no attempt could have taken effect.
    Failed(String),
    /// Perhaps applied: an attempt may have reached a leader before contact was lost.
    Unknown(String),
}

/// Runs chat operations against the cluster, each to completion within the gateway's time
/// budget (the original client gives up after about 3 s).
pub trait Backend: Send + Sync + 'static {
    /// Runs one operation: its reply, or why there is none.
    fn execute(
        &self,
        operation: Operation,
    ) -> impl Future<Output = Result<Reply, BackendError>> + Send;
}

/// The `ChatService` in front of a backend.
pub struct Gateway<B> {
    backend: Arc<B>,
}

impl<B: Backend> Gateway<B> {
    /// A gateway that runs every operation through `backend`.
    pub fn new(backend: Arc<B>) -> Gateway<B> {
        Gateway { backend }
    }

    /// The answer to one request.
    pub async fn answer(&self, request: &ChatRequest) -> ChatResponse {
        let operation = match translate::to_operation(request) {
            Ok(operation) => operation,
            Err(response) => return response,
        };
        let read_only = operation.is_read_only();
        match self.backend.execute(operation).await {
            Ok(reply) => translate::to_response(request, reply),
            Err(BackendError::Failed(why)) => translate::unavailable(request, &why),
            // A read changes nothing, so another server may as well be asked.
            Err(BackendError::Unknown(why)) if read_only => translate::unavailable(request, &why),
            Err(BackendError::Unknown(why)) => translate::outcome_unknown(request, &why),
        }
    }
}

#[tonic::async_trait]
impl<B: Backend> ChatService for Gateway<B> {
    async fn rpc_chat_serve(
        &self,
        request: Request<ChatRequest>,
    ) -> Result<Response<ChatResponse>, tonic::Status> {
        let request = request.into_inner();
        let response = self.answer(&request).await;
        tracing::debug!(
            op = request.op,
            status = response.status,
            "rpc_chat_serve answered"
        );
        Ok(Response::new(response))
    }
}

/// Serves the `ChatService` on `listener` (plaintext HTTP/2, like the original) until
/// `shutdown` completes.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    backend: Arc<B>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(ChatServiceServer::new(Gateway::new(backend)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

#[cfg(test)]
mod tests;
