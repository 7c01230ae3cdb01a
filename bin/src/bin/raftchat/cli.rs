//! The command line: flags and commands, and the exit code each outcome gives.
//!
//! Exit codes: 0 when the command ran, whatever the chat status it answered (a missing
//! account is an answer, not a failure); 1 when the cluster could not be reached, timed out, or
//! left the outcome unknown; 2 on a usage or input error (clap's own usage errors exit 2 too).

use crate::chat::Session;
use crate::local_cluster::{self, ClusterCommand};
use crate::members::{self, MemberCommand};
use crate::prompt;
use clap::{Parser, Subcommand};
use raftchat_node::client::ReadMode;
use raftchat_node::cluster_file::{self, ClusterFile};
use std::path::PathBuf;
use std::process::ExitCode;

const AFTER_HELP: &str = "\
Without a COMMAND, raftchat opens an interactive prompt (with help and history).

Examples:
  raftchat cluster up --nodes 3 --dir /tmp/rc
  raftchat --cluster /tmp/rc/cluster.toml create alice
  raftchat --cluster /tmp/rc/cluster.toml create carol --password
  raftchat --cluster /tmp/rc/cluster.toml --user carol fetch carol
  raftchat --cluster /tmp/rc/cluster.toml send alice alice hello there
  raftchat --cluster /tmp/rc/cluster.toml --json fetch alice
  raftchat --cluster /tmp/rc/cluster.toml --reads any fetch alice
  raftchat --cluster /tmp/rc/cluster.toml member add 4 127.0.0.1:7104
  raftchat --cluster /tmp/rc/cluster.toml transfer-leader 2
  raftchat cluster down --dir /tmp/rc

Exit codes: 0 the command ran (whatever chat status it answered); 1 the cluster was
unreachable, timed out, or the outcome is unknown; 2 usage or input error.

Passwords: `create USER --password` makes an account only its owner can send as, read or
delete; `--user USER` logs in first and acts as USER. The password comes from the environment
variable RAFTCHAT_PASSWORD if set, else it is asked for on the terminal (without echo), else
read as one line from standard input. A wrong password or a refused token is AUTH_FAILED.";

/// The raftchat client and local cluster launcher.
#[derive(Parser, Debug)]
#[command(
    name = "raftchat",
    version,
    about = "Chat through a raftchat cluster, or start and stop a local one.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// The cluster file (see bin/cluster.example.toml); needed by every chat command.
    #[arg(long, global = true, value_name = "CLUSTER.toml")]
    pub cluster: Option<PathBuf>,
    /// Print results as JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// Where reads (check, list, fetch) go, overriding the cluster file's `[client] reads`:
    /// `leader` (linearizable, served by the leader), `any` (linearizable, served by a node
    /// picked at random, follower or leader) or `log` (through the log, like writes).
    #[arg(long, global = true, value_name = "MODE")]
    pub reads: Option<String>,
    /// Log in as USER first (its password from RAFTCHAT_PASSWORD, the terminal or standard
    /// input), and act as USER: needed to send as, fetch or delete an account with a password.
    // Its own id: the commands' positional USER arguments share the name `user`.
    #[arg(long = "user", id = "login_as", global = true, value_name = "USER")]
    pub login_as: Option<String>,
    #[command(subcommand)]
    command: Option<TopCommand>,
}

#[derive(Subcommand, Debug)]
enum TopCommand {
    #[command(flatten)]
    Chat(ChatCommand),
    /// Start or stop a local cluster of raftchat-server processes on 127.0.0.1.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Add, remove or list the cluster's members.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Hand leadership to voter ID (or to the most up-to-date other voter): the leader brings
    /// it up to date and it takes over at once, with no election timeout.
    TransferLeader {
        /// The voter to lead.
        id: Option<u64>,
    },
}

/// The chat commands, shared by the command line and the prompt.
#[derive(Subcommand, Debug, Clone)]
pub enum ChatCommand {
    /// Create an account (create_account); with --password, one only its owner can act on.
    Create {
        /// The new account's name (1 to 20 characters, no control characters).
        user: String,
        /// Protect the account with a password (from RAFTCHAT_PASSWORD, the terminal or
        /// standard input): only a client logged in as it may send as it, fetch its messages
        /// or delete it.
        #[arg(long)]
        password: bool,
    },
    /// Check whether an account exists (check_account).
    Check {
        /// The account.
        user: String,
    },
    /// List the accounts matching a shell glob, in creation order (list_account).
    List {
        /// A shell glob: `*`, `?`, `[...]`. Quote it so the shell does not expand it.
        #[arg(default_value = "*")]
        pattern: String,
    },
    /// Delete an account and the messages it received (delete_account).
    Delete {
        /// The account.
        user: String,
    },
    /// Send a message (send_message); the words after TO are joined by single spaces.
    Send {
        /// The sending account.
        from: String,
        /// The receiving account.
        to: String,
        /// The text (at most 500 characters).
        #[arg(
            required = true,
            num_args = 1..,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        message: Vec<String>,
    },
    /// Fetch an account's messages from a 1-based id on (fetch_messages; at most 1000 a call).
    Fetch {
        /// The account.
        user: String,
        /// The id of the first message wanted.
        #[arg(default_value_t = 1)]
        from_id: u64,
    },
    /// Show every node's role, term, commit and applied index, and the leader.
    Status,
}

/// Why a command failed: the exit code and one line for the user.
#[derive(Debug)]
pub struct Failure {
    /// 1 for an unreachable cluster, a timeout or an unknown outcome; 2 for bad input.
    pub code: u8,
    /// What happened, in one line.
    pub message: String,
}

impl Failure {
    /// A usage or input error (exit 2).
    pub fn input(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// The cluster failed us (exit 1).
    pub fn cluster(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// Parses the command line, runs it, and returns its exit code.
pub fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let result = match cli.command.take() {
        Some(TopCommand::Cluster(command)) => local_cluster::run(command, cli.json),
        Some(TopCommand::Chat(command)) => {
            with_session(&cli, |session, rt| rt.block_on(session.run(command)))
        }
        Some(TopCommand::Member(command)) => with_session(&cli, |session, rt| {
            rt.block_on(members::run_member(session.file(), cli.json, command))
        }),
        Some(TopCommand::TransferLeader { id }) => with_session(&cli, |session, rt| {
            rt.block_on(members::run_transfer(session.file(), cli.json, id))
        }),
        None => with_session(&cli, prompt::run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("raftchat: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Loads the cluster file and runs `body` with a session and a runtime to drive it.
fn with_session(
    cli: &Cli,
    body: impl FnOnce(&mut Session, &tokio::runtime::Runtime) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let reads = cli.reads.as_deref().map(read_mode).transpose()?;
    let Some(path) = &cli.cluster else {
        return Err(Failure::input(
            "--cluster CLUSTER.toml is required (or start a local cluster with `raftchat \
             cluster up --nodes 3 --dir DIR`)",
        ));
    };
    let mut file = ClusterFile::load(path).map_err(|e| Failure::input(e.to_string()))?;
    if let Some(reads) = reads {
        file.client.reads = reads;
    }
    let runtime = runtime()?;
    let mut session = Session::new(file, cli.json);
    if let Some(user) = &cli.login_as {
        let password = read_password(user)?;
        runtime.block_on(session.login(user, &password))?;
    }
    body(&mut session, &runtime)
}

/// A password for `user`: RAFTCHAT_PASSWORD if set, else asked on the terminal without echo,
/// else one line of standard input.
pub fn read_password(user: &str) -> Result<String, Failure> {
    if let Ok(password) = std::env::var("RAFTCHAT_PASSWORD") {
        return Ok(password);
    }
    let read = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        rpassword::prompt_password(format!("password for {user}: "))
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    };
    let password = read.map_err(|e| Failure::input(format!("cannot read the password: {e}")))?;
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(Failure::input("no password given"));
    }
    Ok(password)
}

/// The read mode `--reads` names.
fn read_mode(name: &str) -> Result<ReadMode, Failure> {
    ReadMode::from_name(name).ok_or_else(|| {
        Failure::input(format!(
            "--reads {name:?}: must be {}",
            cluster_file::read_mode_names()
        ))
    })
}

/// A single-threaded runtime: one client needs no more.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::cluster(format!("cannot start the async runtime: {e}")))
}

/// A seed for retry jitter that differs from run to run.
pub fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}
