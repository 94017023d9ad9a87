//! Progress bars for long work, on a terminal only: piped or logged output stays quiet.

use std::io::IsTerminal;
use std::sync::OnceLock;

use indicatif::{ProgressBar, ProgressStyle};

/// Below this many bytes no bar is shown: the work ends before one would help.
const MIN_BYTES: u64 = 32 * 1024 * 1024;

/// A progress bar that is hidden when standard error is not a terminal.
#[derive(Debug)]
pub struct Progress {
    what: String,
    bar: OnceLock<Option<ProgressBar>>,
}

impl Progress {
    /// A bar over `total` bytes (0 when not known yet: see [`Progress::resize`]).
    pub fn bytes(what: &str, total: u64) -> Self {
        let p = Self { what: what.to_string(), bar: OnceLock::new() };
        if total > 0 {
            p.resize(total);
        }
        p
    }

    /// Sets the total; the first call decides whether a bar is shown.
    pub fn resize(&self, total: u64) {
        let bar = self.bar.get_or_init(|| {
            if total < MIN_BYTES || !std::io::stderr().is_terminal() {
                return None;
            }
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_message(self.what.clone());
            Some(bar)
        });
        if let Some(bar) = bar {
            bar.set_length(total);
        }
    }

    /// Sets the position.
    pub fn set(&self, done: u64) {
        if let Some(Some(bar)) = self.bar.get() {
            bar.set_position(done);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(Some(bar)) = self.bar.get() {
            bar.finish_and_clear();
        }
    }
}
