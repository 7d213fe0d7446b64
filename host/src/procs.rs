//! Processes the tests and tools start end with them: [`ProcessGuard`] spawns a command as the
//! leader of its own process group, marked with a unique `GS_PROCESS_GUARD` environment value,
//! and on drop (a passing test, a failing assertion's unwinding) SIGKILLs the group and then every
//! process still carrying the mark (a browser that left the group keeps its environment).
//! [`marked`] finds live processes by such a mark; `cargo xtask test` uses it with the
//! `GS_TEST_SUITE_ID` it gives the test run to fail if anything the suite started is still alive.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The environment variable `cargo xtask test` sets to one uuid for the whole test run: every
/// process the tests start inherits it, so survivors can be found afterwards.
pub const SUITE_VAR: &str = "GS_TEST_SUITE_ID";
/// The environment variable that marks the processes of one [`ProcessGuard`].
pub const GUARD_VAR: &str = "GS_PROCESS_GUARD";

/// A child process in its own process group, killed with everything it started when dropped.
pub struct ProcessGuard {
    child: Child,
    mark: String,
    /// Folders removed once the processes are gone (e.g. a browser profile).
    remove_after: Vec<PathBuf>,
}

impl std::fmt::Debug for ProcessGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGuard")
            .field("pid", &self.child.id())
            .field("mark", &self.mark)
            .finish()
    }
}

impl ProcessGuard {
    /// Spawn `cmd` as the leader of a new process group, marked for [`marked`].
    pub fn spawn(cmd: &mut Command) -> io::Result<ProcessGuard> {
        let mark = uuid::Uuid::new_v4().simple().to_string();
        cmd.env(GUARD_VAR, &mark).process_group(0);
        let child = cmd.spawn()?;
        Ok(ProcessGuard {
            child,
            mark,
            remove_after: Vec::new(),
        })
    }

    /// Remove `dir` (recursively) after the processes are killed.
    pub fn remove_after(&mut self, dir: PathBuf) {
        self.remove_after.push(dir);
    }

    /// The leader's process id (also the process group's id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The leader, e.g. to take its stdout or `try_wait` on it.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// SIGKILL the process group and every process carrying this guard's mark, and reap the
    /// leader. Safe to call more than once.
    pub fn kill(&mut self) {
        let pid = self.child.id();
        kill(&[format!("-{pid}")]);
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Anything that left the group (a new session) still has the mark in its environment.
        for _ in 0..3 {
            let left: Vec<String> = marked(GUARD_VAR, &self.mark)
                .into_iter()
                .map(|(pid, _)| pid.to_string())
                .collect();
            if left.is_empty() {
                break;
            }
            kill(&left);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        for dir in self.remove_after.drain(..) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `kill -KILL -- <targets>` (a `-pid` target is a process group). No `libc`: unsafe code is
/// forbidden in the workspace.
fn kill(targets: &[String]) {
    if targets.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .args(targets)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Live processes (not zombies, not this process) whose environment holds `var=value`: their
/// ids and command lines. Processes of other users that cannot be read are not seen.
pub fn marked(var: &str, value: &str) -> Vec<(u32, String)> {
    let needle = format!("{var}={value}");
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let path = entry.path();
        let Ok(environ) = std::fs::read(path.join("environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            continue;
        }
        // A zombie has already ended; only its parent's wait is missing.
        let state = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if zombie {
            continue;
        }
        let cmdline = std::fs::read(path.join("cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default();
        found.push((pid, cmdline));
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_guard_leaves_nothing_of_its_group_running() {
        // A shell that starts a grandchild in the background and waits: both carry the mark.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 300 & sleep 300"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let guard = ProcessGuard::spawn(&mut cmd).unwrap();
        let mark = guard.mark.clone();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while marked(GUARD_VAR, &mark).len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                marked(GUARD_VAR, &mark)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(guard);
        assert_eq!(marked(GUARD_VAR, &mark), vec![]);
    }

    #[test]
    fn a_process_that_left_the_group_is_found_by_its_mark_and_killed() {
        // `setsid` puts the grandchild in a new session (and group), out of the group's reach.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "setsid sleep 300 & sleep 300"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let guard = ProcessGuard::spawn(&mut cmd).unwrap();
        let mark = guard.mark.clone();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while marked(GUARD_VAR, &mark).len() < 2 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(guard);
        assert_eq!(marked(GUARD_VAR, &mark), vec![]);
    }
}
