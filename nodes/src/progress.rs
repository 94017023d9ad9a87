//! Progress bars for long work, on a terminal only: piped or logged output stays quiet.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Below this many bytes no bar is shown: the work ends before one would help.
const MIN_BYTES: u64 = 32 * 1024 * 1024;

/// A progress bar that is hidden when standard error is not a terminal.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar over `total` bytes, labelled `what`.
    pub fn bytes(what: &str, total: u64) -> Self {
        if total < MIN_BYTES || !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        Self { bar: Some(bar) }
    }

    /// Sets the position.
    pub fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
