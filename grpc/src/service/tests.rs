//! The service over real HTTP/2 on loopback, with backends that answer, fail, or lose track:
//! the path the original's stubs call, and the status each outcome becomes.

use super::*;
use crate::local_chat::LocalChat;
use crate::proto::chat_service_client::ChatServiceClient;
use raftchat::chat::Status;
use std::sync::Mutex;

impl Backend for Mutex<LocalChat> {
    async fn execute(&self, operation: Operation) -> Result<Reply, BackendError> {
        Ok(self.lock().unwrap().apply(operation))
    }
}

/// A backend that never gets an answer.
struct Broken(BackendError);

impl Backend for Broken {
    async fn execute(&self, _operation: Operation) -> Result<Reply, BackendError> {
        Err(self.0.clone())
    }
}

/// Serves `backend` on a loopback port and returns a client of it.
async fn start<B: Backend>(backend: B) -> ChatServiceClient<tonic::transport::Channel> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, Arc::new(backend), std::future::pending()));
    ChatServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

fn request(op: i32, username: &str) -> ChatRequest {
    ChatRequest {
        op,
        username: username.into(),
        ..ChatRequest::default()
    }
}

fn code(status: Status) -> i32 {
    i32::from(status.code())
}

#[tokio::test]
async fn the_original_stub_path_creates_sends_and_fetches() {
    let mut client = start(Mutex::new(LocalChat::new())).await;
    for name in ["alice", "bob"] {
        let response = client.rpc_chat_serve(request(1, name)).await.unwrap();
        assert_eq!(response.get_ref().status, code(Status::Success));
    }
    let send = ChatRequest {
        op: 5,
        username: "alice".into(),
        target_name: "bob".into(),
        message: "hello".into(),
        ..ChatRequest::default()
    };
    let response = client.rpc_chat_serve(send).await.unwrap().into_inner();
    assert_eq!(response.status, code(Status::Success));
    let fetch = ChatRequest {
        param_1: 1,
        ..request(6, "bob")
    };
    let response = client.rpc_chat_serve(fetch).await.unwrap().into_inner();
    assert_eq!(response.op, 6);
    assert_eq!(response.usernames, ["alice"]);
    assert_eq!(response.messages, ["hello"]);
    let response = client.rpc_chat_serve(request(9, "bob")).await.unwrap();
    assert_eq!(
        response.get_ref().status,
        code(Status::OperationNotSupported)
    );
}

#[tokio::test]
async fn no_leader_reached_is_server_error_so_the_client_tries_the_next_server() {
    let mut client = start(Broken(BackendError::Failed("no leader".into()))).await;
    for op in 1..=6 {
        let response = client.rpc_chat_serve(request(op, "alice")).await.unwrap();
        assert_eq!(
            response.get_ref().status,
            code(Status::ServerError),
            "op {op}"
        );
        assert_eq!(response.get_ref().messages.len(), 1);
    }
}

#[tokio::test]
async fn an_unknown_outcome_is_final_for_a_write_and_retried_elsewhere_for_a_read() {
    let mut client = start(Broken(BackendError::Unknown("timed out".into()))).await;
    for (op, expected) in [
        (1, Status::GeneralError),
        (2, Status::ServerError),
        (3, Status::ServerError),
        (4, Status::GeneralError),
        (5, Status::GeneralError),
        (6, Status::ServerError),
    ] {
        let response = client.rpc_chat_serve(request(op, "alice")).await.unwrap();
        assert_eq!(response.get_ref().status, code(expected), "op {op}");
    }
}
