//! Everything the command prints on stdout goes through [`line`] (the `out!` macro): a reader
//! that closes the pipe early (`steadfast ctl watch | head -1`) ends the command quietly with
//! exit code 0, instead of the panic `println!` gives on a broken pipe.

use std::io::Write;

/// stdout was closed by its reader; `main` exits 0 without a message.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct StdoutClosed;

/// Writes one line to stdout and flushes it (a watcher or a pipe sees it at once).
pub fn line(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

/// `println!` that returns early from the enclosing `anyhow::Result` function when stdout is
/// closed (see [`line`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))?
    };
}
pub(crate) use out;

/// `1 session`, `2 sessions`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// One group of a backup, printed the same way by `ctl backup`, `restore` and `up --restore`.
pub fn group_line(group: steadfast::GroupId, sessions: usize, index: u64) -> String {
    format!(
        "group {}: {} at log index {index}",
        group.0,
        count(sessions, "session")
    )
}
