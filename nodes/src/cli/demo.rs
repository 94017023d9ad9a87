//! `outpost demo`.

use std::path::PathBuf;

use clap::Args;

/// `outpost demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Work in DIR instead of a temporary folder (kept afterwards).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Leave everything running until Ctrl-C (to try the console and watch the metrics).
    #[arg(long)]
    pub keep_running: bool,
    /// How many agents (spread over the three sites).
    #[arg(long, default_value_t = 12)]
    pub agents: usize,
}
