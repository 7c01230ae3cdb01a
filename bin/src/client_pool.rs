//! A pool of clients for a front end that serves many callers at once (the gRPC gateway): each
//! operation borrows a client, and with it a session, for its whole run, so that a retry inside
//! the client library is applied once, and returns it after. Clients are made on demand, up to
//! a bound, and kept for the next operations, so a busy front end opens a bounded number of
//! sessions rather than one per call.
//!
//! An operation that is abandoned midway (its caller went away) drops its client; the session
//! is left for the state machine to evict in time.

use crate::client::{Client, ClientConfig, ClientError, Completed};
use raftchat::chat::Operation;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::timeout;

/// Clients shared by concurrent operations, one operation per client at a time.
pub struct ClientPool {
    config: ClientConfig,
    idle: Mutex<Vec<Client>>,
    /// One permit per client that may exist at once.
    permits: Semaphore,
    /// How long an operation waits for a client when every one is busy.
    wait_max: Duration,
    /// Seeds the next client's retry jitter (each client has its own).
    next_seed: Mutex<u64>,
}

impl ClientPool {
    /// A pool of at most `clients_max` clients configured by `config`, in which an operation
    /// waits at most `wait_max` for a client.
    pub fn new(config: ClientConfig, clients_max: usize, wait_max: Duration) -> ClientPool {
        assert!(clients_max > 0, "a pool needs room for one client");
        let next_seed = Mutex::new(config.seed);
        ClientPool {
            config,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(clients_max),
            wait_max,
            next_seed,
        }
    }

    /// Runs one operation with a client of the pool: applied, certainly not applied (which
    /// includes finding no free client in time), or unknown.
    pub async fn execute(&self, operation: Operation) -> Result<Completed, ClientError> {
        let _permit = match timeout(self.wait_max, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => unreachable!("the pool never closes its semaphore"),
            Err(_) => {
                return Err(ClientError::Failed(
                    "every client of the gateway is busy".into(),
                ))
            }
        };
        let idle = self.idle.lock().expect("pool lock").pop();
        let mut client = idle.unwrap_or_else(|| self.new_client());
        let result = client.execute(operation).await;
        self.idle.lock().expect("pool lock").push(client);
        result
    }

    fn new_client(&self) -> Client {
        let mut seed = self.next_seed.lock().expect("pool lock");
        let mut config = self.config.clone();
        config.seed = *seed;
        *seed = seed.wrapping_add(1);
        Client::new(config)
    }
}
