//! A pool of clients for a front end that serves many callers at once (the gRPC gateway): each
//! operation borrows a client, and with it a session, for its whole run, so that a retry inside
//! the client library is applied once, and returns it after. Clients are made on demand, up to
//! a bound, and kept for the next operations, so a busy front end opens a bounded number of
//! sessions rather than one per call. The clients share one connection per node
//! ([`SharedLinks`]), each carrying every busy client's request at once, so a busy front end
//! holds three connections to a three-node cluster, not three per client.
//!
//! An operation that is abandoned midway (its caller went away) drops its client; the session
//! is left for the state machine to evict in time.

use crate::client::{Client, ClientConfig, ClientError, Completed, SharedLinks};
use raftchat::chat::Operation;
use std::sync::atomic::{AtomicU64, Ordering};
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
    next_seed: AtomicU64,
    /// The connections every client of the pool sends through.
    links: SharedLinks,
}

impl ClientPool {
    /// A pool of at most `clients_max` clients configured by `config`, in which an operation
    /// waits at most `wait_max` for a client.
    pub fn new(config: ClientConfig, clients_max: usize, wait_max: Duration) -> ClientPool {
        assert!(clients_max > 0, "a pool needs room for one client");
        let next_seed = AtomicU64::new(config.seed);
        ClientPool {
            config,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(clients_max),
            wait_max,
            next_seed,
            links: SharedLinks::new(),
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
        let mut config = self.config.clone();
        config.seed = self.next_seed.fetch_add(1, Ordering::Relaxed);
        Client::sharing(config, self.links.clone())
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use raftchat::types::NodeId;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use tokio::net::TcpListener;
    use tokio::time::Instant;

    fn check(username: &str) -> Operation {
        Operation::CheckAccount {
            username: username.into(),
        }
    }

    /// A pool of one client for a cluster whose one member accepts connections and never
    /// answers, so every operation runs to its timeout.
    async fn pool_of_one(wait_max: Duration) -> (TcpListener, Arc<ClientPool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let members = BTreeMap::from([(NodeId(1), listener.local_addr().unwrap())]);
        let mut config = ClientConfig::new(members);
        config.operation_timeout = Duration::from_millis(300);
        config.attempt_timeout = Duration::from_millis(100);
        (listener, Arc::new(ClientPool::new(config, 1, wait_max)))
    }

    #[tokio::test]
    async fn a_full_pool_fails_after_its_wait_and_a_finished_operation_frees_its_client() {
        let (_listener, pool) = pool_of_one(Duration::from_millis(50)).await;
        let busy = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.execute(check("a")).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let refused = pool.execute(check("b")).await;
        assert_eq!(
            refused,
            Err(ClientError::Failed(
                "every client of the gateway is busy".into()
            ))
        );
        assert!(started.elapsed() < Duration::from_millis(250));
        // The first operation times out (it never had an answer), and gives its client back.
        assert!(busy.await.unwrap().is_err());
        let next = pool.execute(check("c")).await;
        assert!(
            !matches!(&next, Err(ClientError::Failed(why)) if why.contains("busy")),
            "{next:?}"
        );
    }

    #[tokio::test]
    async fn an_abandoned_operation_gives_its_permit_back() {
        let (_listener, pool) = pool_of_one(Duration::from_millis(50)).await;
        let abandoned =
            tokio::time::timeout(Duration::from_millis(30), pool.execute(check("a"))).await;
        assert!(abandoned.is_err(), "the operation was cut short");
        let next = pool.execute(check("b")).await;
        assert!(
            !matches!(&next, Err(ClientError::Failed(why)) if why.contains("busy")),
            "{next:?}"
        );
    }
}
