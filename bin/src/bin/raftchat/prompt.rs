//! The interactive prompt: the chat commands of the command line, one per line, with line
//! editing and history (rustyline), `help` and `quit`. One client session serves every line.
//! Words are split like a shell's, so `send alice bob "hi  there"` keeps its spaces.

use crate::chat::Session;
use crate::cli::{read_password, ChatCommand, Failure};
use clap::{Parser, Subcommand};
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

/// Lines of history kept.
const HISTORY_LINES_MAX: usize = 1000;

/// One line typed at the prompt.
#[derive(Parser, Debug)]
#[command(multicall = true, help_template = "{all-args}")]
struct PromptLine {
    #[command(subcommand)]
    command: PromptCommand,
}

#[derive(Subcommand, Debug)]
enum PromptCommand {
    #[command(flatten)]
    Chat(ChatCommand),
    /// Log in as an account with a password (asked without echo); later commands act as it.
    Login {
        /// The account.
        user: String,
    },
    /// Act as nobody again.
    Logout,
    /// Leave the prompt (also `exit`, or Ctrl-D).
    #[command(alias = "exit")]
    Quit,
}

/// Runs the prompt until `quit` or end of input.
pub fn run(session: &mut Session, runtime: &tokio::runtime::Runtime) -> Result<(), Failure> {
    let config = rustyline::Config::builder()
        .max_history_size(HISTORY_LINES_MAX)
        .map_err(|e| Failure::input(format!("cannot set up the prompt: {e}")))?
        .auto_add_history(false)
        .build();
    let mut editor = DefaultEditor::with_config(config)
        .map_err(|e| Failure::input(format!("cannot open the prompt: {e}")))?;
    let file = session.file();
    out!(
        "raftchat: cluster {} ({} nodes, {}; reads: {}). Type `help` for the commands, `quit` \
         to leave.",
        file.cluster_id,
        file.members.len(),
        file.path.display(),
        file.client.reads.name()
    );
    loop {
        let prompt = match session.user() {
            Some(user) => format!("raftchat ({user})> "),
            None => "raftchat> ".to_owned(),
        };
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            // Ctrl-C abandons the line being typed, as in a shell.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return Ok(()),
            Err(error) => return Err(Failure::input(format!("cannot read the prompt: {error}"))),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        let words = match split_words(line) {
            Ok(words) => words,
            Err(error) => {
                eprintln!("error: {error}");
                continue;
            }
        };
        match PromptLine::try_parse_from(words) {
            Ok(PromptLine {
                command: PromptCommand::Quit,
            }) => return Ok(()),
            Ok(PromptLine {
                command: PromptCommand::Login { user },
            }) => {
                let logged_in = read_password(&user)
                    .and_then(|password| runtime.block_on(session.login(&user, &password)));
                match logged_in {
                    Ok(()) => out!("logged in as {user}"),
                    Err(failure) => eprintln!("error: {}", failure.message),
                }
            }
            Ok(PromptLine {
                command: PromptCommand::Logout,
            }) => {
                session.logout();
                out!("logged out");
            }
            Ok(PromptLine {
                command: PromptCommand::Chat(command),
            }) => {
                if let Err(failure) = runtime.block_on(session.run(command)) {
                    eprintln!("error: {}", failure.message);
                }
            }
            // Also `help` and `COMMAND --help`, which clap reports as an "error" to print.
            Err(error) => {
                let _ = error.print();
            }
        }
    }
}

/// Splits a line into words: whitespace separates, single or double quotes group, and a
/// backslash outside single quotes takes the next character literally.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (_, '\\') => {
                let escaped = chars.next().ok_or("a line cannot end with a backslash")?;
                word.push(escaped);
                in_word = true;
            }
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        let split = |line: &str| split_words(line).unwrap();
        assert_eq!(split("send a b hi"), ["send", "a", "b", "hi"]);
        assert_eq!(
            split("  send a b \"hi  there\" "),
            ["send", "a", "b", "hi  there"]
        );
        assert_eq!(split("list 'a*' \"\""), ["list", "a*", ""]);
        assert_eq!(split(r"send a b it\'s"), ["send", "a", "b", "it's"]);
        assert_eq!(split(r#"x "a\"b""#), ["x", "a\"b"]);
        assert!(split_words("send \"open").is_err());
        assert!(split_words("x \\").is_err());
    }

    #[test]
    fn prompt_lines_parse_into_commands() {
        let parse = |line: &str| PromptLine::try_parse_from(split_words(line).unwrap());
        assert!(matches!(
            parse("fetch bob").unwrap().command,
            PromptCommand::Chat(ChatCommand::Fetch { from_id: 1, .. })
        ));
        assert!(matches!(
            parse("exit").unwrap().command,
            PromptCommand::Quit
        ));
        assert!(parse("fetch bob -3").is_err());
        assert!(parse("cluster up").is_err());
        assert!(parse("help").is_err()); // clap's way to show help
    }
}
