//! Running chat commands through the client library and printing their results, for people
//! (status names, one item a line) or for scripts (`--json`, in the shapes the README gives).

use crate::cli::{read_password, seed, ChatCommand, Failure};
use raftchat::chat::{Operation, Reply};
use raftchat::limits::FETCH_MESSAGES_MAX;
use raftchat_node::client::{Client, ClientError};
use raftchat_node::cluster_file::ClusterFile;
use raftchat_node::cluster_status::{role_name, ClusterStatus, MemberStatus};
use serde_json::{json, Value};

/// A client session with one cluster: the prompt keeps one for all its commands.
pub struct Session {
    file: ClusterFile,
    client: Client,
    json: bool,
}

impl Session {
    /// A session with the cluster of `file`; it connects on its first command.
    pub fn new(file: ClusterFile, json: bool) -> Session {
        let client = Client::new(file.client_config(seed()));
        Session { file, client, json }
    }

    /// The cluster file this session talks to.
    pub fn file(&self) -> &ClusterFile {
        &self.file
    }

    /// Logs in as `user`: every later command acts as it, until `logout`.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), Failure> {
        match self.client.login(user, password).await {
            Ok(_) => Ok(()),
            Err(ClientError::AuthFailed(why)) => Err(Failure::cluster(format!(
                "AUTH_FAILED: cannot log in as {user}: {why}"
            ))),
            Err(error) => Err(describe_client_error(&error, true)),
        }
    }

    /// Forgets the token: later commands act as nobody.
    pub fn logout(&mut self) {
        self.client.set_token(None);
    }

    /// The account this session acts as, if it logged in.
    pub fn user(&self) -> Option<&str> {
        let token = self.client.token()?;
        Some(token.principal.username.as_str())
    }

    /// Runs one command and prints its result.
    pub async fn run(&mut self, command: ChatCommand) -> Result<(), Failure> {
        let operation = match command {
            ChatCommand::Status => return self.status().await,
            ChatCommand::Create {
                user,
                password: true,
            } => {
                let password = read_password(&user)?;
                return match self.client.create_with_password(&user, &password).await {
                    Ok(completed) => {
                        print_reply(&completed.reply, ReplyKind::Plain, self.json);
                        Ok(())
                    }
                    Err(error) => Err(describe_client_error(&error, false)),
                };
            }
            ChatCommand::Create { user, .. } => Operation::CreateAccount { username: user },
            ChatCommand::Check { user } => Operation::CheckAccount { username: user },
            ChatCommand::List { pattern } => Operation::ListAccounts { pattern },
            ChatCommand::Delete { user } => Operation::DeleteAccount { username: user },
            ChatCommand::Send { from, to, message } => Operation::SendMessage {
                from,
                to,
                message: message.join(" "),
            },
            ChatCommand::Fetch { user, from_id } => Operation::FetchMessages {
                username: user,
                first_message_id: from_id,
            },
        };
        let read_only = operation.is_read_only();
        let kind = match &operation {
            Operation::ListAccounts { .. } => ReplyKind::List,
            Operation::FetchMessages { .. } => ReplyKind::Fetch,
            _ => ReplyKind::Plain,
        };
        match self.client.execute(operation).await {
            Ok(completed) => {
                print_reply(&completed.reply, kind, self.json);
                Ok(())
            }
            Err(error) => Err(describe_client_error(&error, read_only)),
        }
    }

    async fn status(&mut self) -> Result<(), Failure> {
        let status = ClusterStatus::poll(&self.file.client_config(seed())).await;
        if self.json {
            out!("{}", status_json(&status));
        } else {
            print_status(&status);
        }
        if status.reachable().next().is_none() {
            return Err(Failure::cluster(format!(
                "no node of the cluster in {} answered",
                self.file.path.display()
            )));
        }
        Ok(())
    }
}

/// The one line for an operation that did not complete.
fn describe_client_error(error: &ClientError, read_only: bool) -> Failure {
    match error {
        ClientError::Failed(why) => Failure::cluster(format!(
            "the cluster did not answer, nothing was applied ({why}); is it running? \
             `raftchat status` shows each node"
        )),
        ClientError::Unknown(why) if read_only => {
            Failure::cluster(format!("no answer from the cluster ({why})"))
        }
        ClientError::Unknown(why) => Failure::cluster(format!(
            "outcome unknown: the operation may or may not have been applied ({why})"
        )),
        ClientError::AuthFailed(why) => {
            Failure::cluster(format!("AUTH_FAILED: nothing was applied ({why})"))
        }
    }
}

/// Which fields a reply carries, by the command that asked for it.
#[derive(Clone, Copy, Debug)]
enum ReplyKind {
    Plain,
    List,
    Fetch,
}

fn print_reply(reply: &Reply, kind: ReplyKind, json: bool) {
    if json {
        out!("{}", reply_json(reply, kind));
        return;
    }
    out!("{}", reply.status.name());
    for user in &reply.users {
        out!("{user}");
    }
    if let ReplyKind::Fetch = kind {
        // The first id may be past the one asked for: older messages were dropped.
        let first_message_id = reply.first_message_id;
        for (offset, (from, text)) in (0u64..).zip(&reply.messages) {
            out!(
                "#{} {from}: {text}",
                first_message_id.saturating_add(offset)
            );
        }
        if reply.messages.len() >= FETCH_MESSAGES_MAX {
            let next = first_message_id.saturating_add(reply.messages.len() as u64);
            out!("(at most {FETCH_MESSAGES_MAX} a call; fetch again from {next} for more)");
        }
    }
}

/// `{"status": S}`, plus `"users"` for a list and `"messages"` and `"first_id"` (the id of the
/// first message, 0 without one) for a fetch (empty unless the status is SUCCESS), so a script
/// always finds the key it expects.
fn reply_json(reply: &Reply, kind: ReplyKind) -> Value {
    let status = reply.status.code();
    match kind {
        ReplyKind::Plain => json!({ "status": status }),
        ReplyKind::List => json!({ "status": status, "users": reply.users }),
        ReplyKind::Fetch => {
            let messages: Vec<Value> = reply
                .messages
                .iter()
                .map(|(from, text)| json!([from, text]))
                .collect();
            let first_id = reply.first_message_id;
            json!({ "status": status, "first_id": first_id, "messages": messages })
        }
    }
}

fn status_json(status: &ClusterStatus) -> Value {
    let nodes: Vec<Value> = status.members.iter().map(member_json).collect();
    json!({ "leader": status.leader().map(|id| id.0), "nodes": nodes })
}

fn member_json(member: &MemberStatus) -> Value {
    match &member.status {
        Ok(s) => json!({
            "id": member.id.0,
            "address": member.address.to_string(),
            "reachable": true,
            "role": role_name(s.raft.role),
            "term": s.raft.term.0,
            "leader": s.raft.leader.map(|id| id.0),
            "commit_index": s.raft.commit_index.0,
            "applied_index": s.raft.applied_index.0,
            "last_index": s.raft.last_index.0,
            "snapshot_index": s.raft.snapshot_index.0,
            "first_index": s.raft.first_index.0,
            "log_bytes": s.log_bytes,
            "chat_digest": format!("{:016x}", s.chat_digest),
            "error": null,
        }),
        Err(error) => json!({
            "id": member.id.0,
            "address": member.address.to_string(),
            "reachable": false,
            "role": null,
            "term": null,
            "leader": null,
            "commit_index": null,
            "applied_index": null,
            "last_index": null,
            "snapshot_index": null,
            "first_index": null,
            "log_bytes": null,
            "chat_digest": null,
            "error": error,
        }),
    }
}

fn print_status(status: &ClusterStatus) {
    match status.leader() {
        Some(leader) => out!("leader: {}", leader.0),
        None => out!("leader: none"),
    }
    out!(
        "{:<4} {:<21} {:<13} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9}  DIGEST",
        "ID",
        "ADDRESS",
        "ROLE",
        "TERM",
        "COMMIT",
        "APPLIED",
        "LAST",
        "SNAPSHOT",
        "LOG"
    );
    for member in &status.members {
        let address = member.address.to_string();
        match &member.status {
            Ok(s) => out!(
                "{:<4} {:<21} {:<13} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9}  {:016x}",
                member.id.0,
                address,
                role_name(s.raft.role),
                s.raft.term.0,
                s.raft.commit_index.0,
                s.raft.applied_index.0,
                s.raft.last_index.0,
                s.raft.snapshot_index.0,
                human_bytes(s.log_bytes),
                s.chat_digest
            ),
            Err(error) => out!("{:<4} {:<21} unreachable: {error}", member.id.0, address),
        }
    }
}

/// A byte count for a person: `512 B`, `3.4 KiB`, `12.0 MiB`, `1.2 GiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftchat::chat::Status;

    #[test]
    fn reply_shapes_match_the_documented_json() {
        let plain = Reply::new(Status::AccountNotExist);
        let text = reply_json(&plain, ReplyKind::Plain).to_string();
        assert_eq!(text, r#"{"status":102}"#);
        let list = Reply::new(Status::Success);
        let text = reply_json(&list, ReplyKind::List).to_string();
        assert_eq!(text, r#"{"status":0,"users":[]}"#);
        let fetch = Reply::with_messages(4, vec![("a".into(), "hi".into())]);
        let kind = ReplyKind::Fetch;
        let text = reply_json(&fetch, kind).to_string();
        assert_eq!(text, r#"{"first_id":4,"messages":[["a","hi"]],"status":0}"#);
        let text = reply_json(&Reply::new(Status::NoElement), kind).to_string();
        assert_eq!(text, r#"{"first_id":0,"messages":[],"status":1}"#);
    }

    #[test]
    fn byte_counts_read_like_a_person_would_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 + 400), "3.4 KiB");
        assert_eq!(human_bytes(12 * 1024 * 1024), "12.0 MiB");
        assert_eq!(human_bytes(5 << 40), "5120.0 GiB");
    }
}
