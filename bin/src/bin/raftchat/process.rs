//! Finding and signalling server processes by pid, with the system's `kill` command (no libc
//! dependency). A pid file can outlive its process and the pid be reused, so a process is only
//! signalled if it still looks like a raftchat server.

use std::path::Path;
use std::process::{Command, Stdio};

/// Whether process `pid` is running (a zombie that has exited but was not reaped is not).
pub fn is_running(pid: u32) -> bool {
    let stat = Path::new("/proc").join(pid.to_string()).join("stat");
    if Path::new("/proc/self").exists() {
        let Ok(text) = std::fs::read_to_string(stat) else {
            return false;
        };
        // The state follows the command name, which is in parentheses and may hold spaces.
        let state = text
            .rsplit(')')
            .next()
            .and_then(|rest| rest.trim().chars().next());
        return !matches!(state, Some('Z' | 'X') | None);
    }
    signal(pid, "0").unwrap_or(false)
}

/// Whether process `pid` is a raftchat server; `true` when this cannot be told (no /proc).
pub fn is_server(pid: u32) -> bool {
    let cmdline = Path::new("/proc").join(pid.to_string()).join("cmdline");
    match std::fs::read(cmdline) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).contains("raftchat-server"),
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// Sends `signal` (a name such as "TERM" or "KILL", or "0" to probe) to `pid`; `Ok(false)` if
/// `kill` refused (no such process, not permitted).
pub fn signal(pid: u32, signal: &str) -> std::io::Result<bool> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    Ok(status.success())
}

/// The pid recorded in a pid file.
pub fn read_pid_file(path: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{}: not a pid file", path.display()))
}
