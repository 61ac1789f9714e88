//! Progress for the long operations (`ctl backup`, `restore`, `ctl replace-node`, `bench`'s
//! preload): an `indicatif` bar on stderr when stderr is a terminal, and nothing at all
//! otherwise, so a pipe, a log file or a script sees only the command's own lines.
//!
//! Lines the command prints while a bar is up go through [`Progress::line`], which lifts the bar
//! off the screen while the line is written, so the two never garble each other. Dropping a
//! [`Progress`] clears its bar (also on an error path, before `main` prints the error).

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often a bar redraws by itself, so a single long step (one large group's backup, a
/// node catching up) still shows time passing.
const TICK_MS: u64 = 120;

/// A bar (or spinner) that is drawn only on a terminal.
pub struct Progress {
    /// Hidden (draws nothing, costs next to nothing) unless stderr is a terminal.
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `len` steps counted in `unit`s (`"groups"`, `"sessions"`), with rate and ETA.
    pub fn bar(len: u64, unit: &str) -> Self {
        let template = format!(
            "{{spinner}} {{msg}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} \
             ({{rate}}, {{elapsed}}, eta {{eta}})"
        );
        Self::new(ProgressBar::new(len), &template)
    }

    /// A spinner for a step whose size is unknown; `msg` says what it is doing.
    pub fn spinner(msg: impl Into<Cow<'static, str>>) -> Self {
        let progress = Self::new(ProgressBar::new_spinner(), "{spinner} {msg} ({elapsed})");
        progress.bar.set_message(msg);
        progress
    }

    fn new(bar: ProgressBar, template: &str) -> Self {
        if !shown() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
            return Self { bar };
        }
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
            // Whole steps per second (`{per_sec}` prints four decimals).
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}/s", state.per_sec());
                },
            );
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(TICK_MS));
        Self { bar }
    }

    /// What is being done now (shown before the bar).
    pub fn set_message(&self, msg: impl Into<Cow<'static, str>>) {
        self.bar.set_message(msg);
    }

    /// Count `n` more steps done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// A `Fn(done)` for a library callback that reports how many steps are done so far.
    pub fn position_setter(&self) -> impl Fn(usize) + Send + Sync + 'static {
        let bar = self.bar.clone();
        move |done| bar.set_position(done as u64)
    }

    /// One line on stdout (as `out!` writes it), with the bar lifted off the screen meanwhile.
    pub fn line(&self, args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
        self.bar.suspend(|| crate::output::line(args))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Whether bars are drawn: only for a person watching stderr.
pub fn shown() -> bool {
    std::io::stderr().is_terminal()
}
