//! Formatting and lints are part of the tests: `cargo fmt --check` and `cargo clippy -D
//! warnings` over the whole workspace, every target. Clippy builds in its own target folder so
//! that it never waits on the lock of the build running these tests.

use std::process::Command;

use crate::common::root;

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

#[test]
fn code_is_formatted() {
    let out = cargo().args(["fmt", "--all", "--", "--check"]).output().expect("cargo fmt runs");
    assert!(
        out.status.success(),
        "run `cargo fmt --all`:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn clippy_finds_nothing() {
    let target = root().join("target/hygiene");
    let out = cargo()
        .args(["clippy", "--workspace", "--all-targets", "--locked", "--quiet", "--", "-D", "warnings"])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo clippy runs");
    assert!(out.status.success(), "clippy found problems:\n{}", String::from_utf8_lossy(&out.stderr));
}
