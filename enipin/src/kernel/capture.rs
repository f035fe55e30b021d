//! Programs run for what they print (the support bundle): each bounded in time and killed past
//! it, its exit status kept beside its output. A missing program is an answer, not an error: a
//! bundle from a host without `tc` or `journalctl` still has everything else.

use std::{ffi::OsStr, process::Stdio, time::Duration};

use tokio::process::Command;

/// What one program printed and how it ended.
#[derive(Debug)]
pub(crate) struct Captured {
    /// The command line, as a person would type it.
    pub(crate) command: String,
    /// `Ok(code)` when it exited (`None`: killed by a signal); `Err` why it did not run or end.
    pub(crate) ended: Result<Option<i32>, String>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

/// Runs `program args` with no stdin, for at most `limit`.
pub(crate) async fn capture(
    program: impl AsRef<OsStr>,
    args: &[impl AsRef<OsStr>],
    limit: Duration,
) -> Captured {
    let program = program.as_ref();
    let command = std::iter::once(program)
        .chain(args.iter().map(AsRef::as_ref))
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let none = |why: String| Captured {
        command: command.clone(),
        ended: Err(why),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let child = match child {
        Ok(c) => c,
        Err(e) => return none(format!("not run: {e}")),
    };
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => none(format!("killed after {limit:?}")),
        Ok(Err(e)) => none(format!("waiting for it: {e}")),
        Ok(Ok(out)) => Captured {
            ended: Ok(out.status.code()),
            stdout: out.stdout,
            stderr: out.stderr,
            command,
        },
    }
}
