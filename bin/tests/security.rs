//! TLS on every link, on a real 3-node cluster of `raftchat-server` processes on loopback: the
//! cluster serves clients that check its certificates; nobody without a certificate of the
//! cluster's CA naming the node it claims to be gets a Raft message in, whether it speaks in
//! clear, shows another cluster's certificate, or shows a valid certificate of another node;
//! a member's term is unchanged by all of them; and a client in clear is refused.
#![cfg(not(madsim))]

mod common;

use common::Servers;
use raftchat::chat::{Operation, Status};
use raftchat::raft::{Message, MessageBody};
use raftchat::types::{LogIndex, NodeId, Term};
use raftchat::wire::{self, Frame, PROTOCOL_VERSION};
use raftchat_node::client::{Client, ClientConfig, ClientError};
use raftchat_node::tls::{Authority, NodeTls, Stream};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bound of any one wait.
const WAIT_MAX: Duration = Duration::from_secs(15);

/// The frames a hostile peer sends: a hello claiming to be `claim`, then a vote request and a
/// pre-vote for a term far ahead, which would depose the leader if they were let in.
fn hostile_frames(claim: NodeId, to: NodeId, cluster_id: u64, address: SocketAddr) -> Vec<u8> {
    let mut bytes = Vec::new();
    let hello = Frame::PeerHello {
        version: PROTOCOL_VERSION,
        from: claim,
        cluster_id,
        address,
    };
    wire::encode(&hello, &mut bytes).unwrap();
    for pre_vote in [true, false] {
        let vote = Message {
            from: claim,
            to,
            term: Term(1_000),
            body: MessageBody::RequestVote {
                pre_vote,
                last_log_index: LogIndex(1_000_000),
                last_log_term: Term(999),
                transfer: true,
            },
        };
        wire::encode(&Frame::Raft(vote), &mut bytes).unwrap();
    }
    bytes
}

/// Sends `bytes` on `stream` and reads until the node closes it (or a second passes); returns
/// how many bytes came back.
async fn send_and_drain<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    bytes: &[u8],
) -> usize {
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    let mut received = 0;
    let mut buffer = [0u8; 4096];
    let reading = async {
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            received += n;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), reading).await;
    received
}

fn node_tls(authority: &Authority, id: u64) -> NodeTls {
    authority.node_tls(NodeId(id)).unwrap()
}

/// Every member's term, as it reports it.
async fn terms(servers: &Servers) -> Vec<u64> {
    let status = servers
        .wait_for("every member to answer", WAIT_MAX, |s| {
            s.members.iter().all(|m| m.status.is_ok())
        })
        .await;
    status.reachable().map(|s| s.raft.term.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_join_or_disrupt_a_tls_cluster() {
    let (mut servers, authority) = Servers::with_tls("security-tls", 3);
    servers.start_all();
    let leader = servers.leader(WAIT_MAX).await;
    let mut client = Client::new(servers.client_config(1));
    let created = client
        .execute(Operation::CreateAccount {
            username: "ann".into(),
        })
        .await
        .expect("a TLS client is served");
    assert_eq!(created.reply.status, Status::Success);
    let before = terms(&servers).await;

    let cluster_id = servers.file.cluster_id;
    let target = NodeId(leader);
    let address = servers.file.members[&target];
    let claim = servers
        .file
        .members
        .keys()
        .copied()
        .find(|&id| id != target)
        .unwrap();
    let frames = hostile_frames(claim, target, cluster_id, address);

    // In clear: the bytes are not a TLS handshake, and the node hangs up.
    let plain = TcpStream::connect(address).await.unwrap();
    assert!(send_and_drain(plain, &frames).await < 64);

    // Another cluster's certificate for the same id: refused by the CA check.
    let stranger = node_tls(&Authority::new(99).unwrap(), claim.0);
    let tcp = TcpStream::connect(address).await.unwrap();
    if let Ok(stream) = stranger.connect(target, tcp).await {
        assert_eq!(send_and_drain(stream, &frames).await, 0);
    }

    // A valid certificate of this cluster, for a node that claims to be another.
    let impostor = node_tls(&authority, 9);
    let tcp = TcpStream::connect(address).await.unwrap();
    let stream: Stream = impostor
        .connect(target, tcp)
        .await
        .expect("the CA is right");
    assert_eq!(send_and_drain(stream, &frames).await, 0);

    // A valid certificate of a node outside the configuration, as itself: let in, and ignored
    // by Raft (a non-member's vote requests never change a member's term).
    let outsider_frames = hostile_frames(NodeId(9), target, cluster_id, address);
    let tcp = TcpStream::connect(address).await.unwrap();
    let stream = impostor.connect(target, tcp).await.unwrap();
    send_and_drain(stream, &outsider_frames).await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        terms(&servers).await,
        before,
        "a stranger changed a member's term"
    );
    assert_eq!(servers.leader(WAIT_MAX).await, leader);

    // A client in clear is refused by a TLS server: it never gets an answer.
    let mut plain_config = ClientConfig::new(servers.file.members.clone());
    plain_config.operation_timeout = Duration::from_secs(1);
    let mut plain_client = Client::new(plain_config);
    let refused = plain_client
        .execute(Operation::CheckAccount {
            username: "ann".into(),
        })
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // And the cluster still serves.
    let checked = client
        .execute(Operation::CheckAccount {
            username: "ann".into(),
        })
        .await
        .unwrap();
    assert_eq!(checked.reply.status, Status::Success);
    servers.kill(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_past_the_limits_leaves_other_clients_served() {
    use raftchat::wire::{Request, RequestBody, ResponseBody};
    use raftchat_node::frame_io::{write_frames, FrameReader};
    const PER_SOURCE: usize = 20;
    const FLOOD: usize = 60;
    let settings = [
        ("client_connections_per_source_max", "20"),
        ("client_idle_timeout_ms", "1500"),
    ];
    let mut servers = Servers::with_settings("security-flood", 3, &settings);
    servers.start_all();
    let leader = NodeId(servers.leader(WAIT_MAX).await);
    // A client at work before the flood: its connection to the leader is open.
    let mut config = servers.client_config(3);
    config.members.retain(|&id, _| id == leader);
    let mut client = Client::new(config);
    let create = |name: &str| Operation::CreateAccount {
        username: name.into(),
    };
    client.execute(create("ann")).await.unwrap();

    // The flood: connections from the same address, each asking one status and holding on.
    let address = servers.file.members[&leader];
    let (mut served, mut refused) = (0, 0);
    let mut held = Vec::new();
    for id in 0..FLOOD as u64 {
        let stream = TcpStream::connect(address).await.unwrap();
        let (read_half, mut write_half) = tokio::io::split(stream);
        let request = Frame::Request(Request {
            id,
            body: RequestBody::Status,
        });
        write_frames(&mut write_half, [&request], &mut Vec::new())
            .await
            .unwrap();
        let mut reader = FrameReader::new(read_half);
        match reader.next().await.unwrap() {
            Some(Frame::Response(response)) => match response.body {
                ResponseBody::Status(_) => served += 1,
                ResponseBody::Busy => refused += 1,
                other => panic!("unexpected answer {other:?}"),
            },
            other => panic!("no answer: {other:?}"),
        }
        held.push((reader, write_half));
    }
    // The client at work holds one of the source's places; the flood gets the rest.
    assert_eq!(served, PER_SOURCE - 1, "served {served}, refused {refused}");
    assert_eq!(refused, FLOOD - served);

    // The client at work is unaffected: every operation succeeds, on its open connection.
    for i in 0..50 {
        let sent = client
            .execute(Operation::SendMessage {
                from: "ann".into(),
                to: "ann".into(),
                message: format!("during the flood {i}"),
            })
            .await
            .unwrap();
        assert_eq!(sent.reply.status, Status::Success);
    }

    // Idle client connections are closed; then a newcomer is served again.
    let (reader, _) = held.first_mut().unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), reader.next()).await;
    assert!(matches!(closed, Ok(Ok(None))), "{closed:?}");
    drop(held);
    let mut config = servers.client_config(4);
    config.members.retain(|&id, _| id == leader);
    let mut newcomer = Client::new(config);
    let checked = newcomer
        .execute(Operation::CheckAccount {
            username: "ann".into(),
        })
        .await
        .unwrap();
    assert_eq!(checked.reply.status, Status::Success);
    let log = std::fs::read_to_string(servers.dir.join(format!("{}.log", leader.0))).unwrap();
    assert!(
        log.contains("the source address has its most client connections open"),
        "the refusal is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_fetches_only_its_own_inbox_and_sends_only_as_itself() {
    let (mut servers, _authority) = Servers::with_tls("security-accounts", 3);
    servers.start_all();
    servers.leader(WAIT_MAX).await;
    let fetch = |user: &str| Operation::FetchMessages {
        username: user.into(),
        first_message_id: 1,
    };
    let send = |from: &str, to: &str| Operation::SendMessage {
        from: from.into(),
        to: to.into(),
        message: "hi".into(),
    };
    let status = |result: Result<raftchat_node::client::Completed, ClientError>| match result {
        Ok(completed) => completed.reply.status,
        Err(ClientError::AuthFailed(_)) => Status::AuthFailed,
        Err(error) => panic!("{error}"),
    };

    let mut carol = Client::new(servers.client_config(1));
    let created = carol.create_with_password("carol", "carol's secret").await;
    assert_eq!(status(created), Status::Success);
    let mut dave = Client::new(servers.client_config(2));
    assert_eq!(
        status(dave.create_with_password("dave", "dave's secret").await),
        Status::Success
    );
    let mut nobody = Client::new(servers.client_config(3));
    let open = Operation::CreateAccount {
        username: "bob".into(),
    };
    assert_eq!(status(nobody.execute(open).await), Status::Success);

    // A wrong password, or a login to an account without one, gets no token.
    let wrong = carol.login("carol", "not it").await;
    assert!(
        matches!(wrong, Err(ClientError::AuthFailed(_))),
        "{wrong:?}"
    );
    assert!(carol.token().is_none());
    let token = carol
        .login("carol", "carol's secret")
        .await
        .expect("the right password");
    dave.login("dave", "dave's secret")
        .await
        .expect("the right password");

    // Without a token, or with another account's, nobody acts on carol's account.
    assert_eq!(
        status(nobody.execute(fetch("carol")).await),
        Status::AuthFailed
    );
    assert_eq!(
        status(nobody.execute(send("carol", "bob")).await),
        Status::AuthFailed
    );
    assert_eq!(
        status(dave.execute(fetch("carol")).await),
        Status::AuthFailed
    );
    assert_eq!(
        status(dave.execute(send("carol", "dave")).await),
        Status::AuthFailed
    );
    let delete = Operation::DeleteAccount {
        username: "carol".into(),
    };
    assert_eq!(
        status(dave.execute(delete.clone()).await),
        Status::AuthFailed
    );
    // Anyone may write to carol; only carol reads it, and sends as carol.
    assert_eq!(
        status(dave.execute(send("dave", "carol")).await),
        Status::Success
    );
    assert_eq!(
        status(nobody.execute(send("bob", "carol")).await),
        Status::Success
    );
    let read = carol
        .execute(fetch("carol"))
        .await
        .expect("carol reads her inbox");
    assert_eq!(read.reply.status, Status::Success);
    assert_eq!(read.reply.messages.len(), 2);
    assert_eq!(
        status(carol.execute(send("carol", "dave")).await),
        Status::Success
    );
    // An open account stays open, as in the original.
    assert_eq!(status(dave.execute(fetch("bob")).await), Status::NoElement);

    // A forged token (carol's, renamed; or re-signed with another key) is refused.
    let mut forged = token.clone();
    forged.principal.username = "dave".into();
    nobody.set_token(Some(forged));
    let refused = nobody.execute(fetch("dave")).await;
    assert!(
        matches!(refused, Err(ClientError::AuthFailed(_))),
        "{refused:?}"
    );
    let resigned = raftchat_node::auth::TokenKey::generate().unwrap().sign(
        token.principal.clone(),
        token.expires_unix_ms,
        servers.file.cluster_id,
    );
    nobody.set_token(Some(resigned));
    let refused = nobody.execute(send("carol", "bob")).await;
    assert!(
        matches!(refused, Err(ClientError::AuthFailed(_))),
        "{refused:?}"
    );

    // A token is good at every node: a client that reads from any node keeps it.
    let mut anywhere = servers.client_config(4);
    anywhere.reads = raftchat_node::client::ReadMode::Any;
    let mut roaming = Client::new(anywhere);
    roaming.set_token(Some(token));
    let read = roaming
        .execute(fetch("carol"))
        .await
        .expect("read anywhere");
    assert_eq!(read.reply.status, Status::Success);
    assert_eq!(status(carol.execute(delete).await), Status::Success);
    servers.kill(1);
}
