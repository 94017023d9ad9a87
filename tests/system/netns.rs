//! Sites as separate hosts (`scripts/netns-sites`): network namespaces joined by shaped WAN
//! links; one copy of a package crosses each site's link however many agents install it. Runs
//! when this machine allows network namespaces (root); otherwise says why it skipped.

use crate::common::root;

#[test]
fn one_copy_of_a_package_crosses_each_site_wan_link() {
    let out = std::process::Command::new(root().join("scripts/netns-sites"))
        .args(["--outpost", env!("CARGO_BIN_EXE_outpost"), "--agents", "3", "--size-mib", "3"])
        .output()
        .expect("bash runs the script");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.code() == Some(77) {
        eprintln!("SKIPPED: {}", stderr.trim());
        return;
    }
    assert!(out.status.success(), "scripts/netns-sites failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("one copy of the package crossed each site's WAN link"), "{stdout}");
    for site in ["paris", "lyon"] {
        assert!(stdout.lines().any(|l| l.starts_with(site)), "{site} measured: {stdout}");
    }
}
