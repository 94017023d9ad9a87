//! placeholder
use anyhow::Result;
pub fn run(_a: &crate::cli::DemoArgs) -> Result<()> {
    anyhow::bail!("x")
}
