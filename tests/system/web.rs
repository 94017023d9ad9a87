//! The web console in a real headless browser (Debian's chromium through chromedriver) on the
//! demo topology: what the dashboard counts is what `console hosts` says, the filter box,
//! a host's page, an upgrade sent from the page (after its confirmation) and a result that
//! appears without reloading, a view-only certificate without action buttons, and a browser
//! without the secret refused. Screenshots: `target/web-screenshots/`.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::wait_for;
use crate::common::{Stop, demo, outpost, run_in};
use crate::webdriver::{Browser, browsers};

#[test]
fn the_web_console_shows_the_fleet_live_and_acts_only_with_rights() {
    let Some((chromium, driver)) = browsers() else {
        eprintln!("SKIPPED: chromium and chromium-driver are not installed (scripts/setup installs them)");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    // (The demo is stopped with SIGTERM when dropped, even when an assertion fails.)
    let (_demo, info) = demo(work.path(), 6, |v| v["web"].is_string());
    let dir = work.path().join("demo");
    let url = info["web"].as_str().unwrap().to_string();
    let base = url.split("/?").next().unwrap().to_string();
    let admin = &info["admin"];
    let (ca, cert, key) =
        (admin["ca"].as_str().unwrap(), admin["cert"].as_str().unwrap(), admin["key"].as_str().unwrap());
    let central = info["central"].as_str().unwrap();
    let console = |args: &[&str]| -> Value {
        let mut all = vec!["console"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--json", "--server", central, "--ca", ca, "--cert", cert, "--key", key]);
        serde_json::from_str(&run_in(work.path(), &all).ok().stdout).unwrap()
    };

    let b = Browser::start(&chromium, &driver, "web-console");
    // Without the secret: refused.
    b.go(&format!("{base}/hosts"));
    assert!(b.page_text().contains("open the address"), "{}", b.page_text());
    b.shot("0-no-secret");

    // The dashboard counts what the console counts.
    b.go(&url);
    assert!(!b.js("return location.search").as_str().unwrap().contains("secret"), "the secret leaves the address bar");
    let all = console(&["hosts"]);
    let total = all["total"].as_u64().unwrap();
    assert_eq!(b.text("#hosts-total"), total.to_string());
    for status in ["OK", "ERROR", "NEED-UPGRADE"] {
        let want = all["hosts"].as_array().unwrap().iter().filter(|h| h["status"] == status).count();
        assert_eq!(b.text(&format!("[data-status='{status}']")), want.to_string(), "{status}");
    }
    b.wait_until(Duration::from_secs(10), "the page to say it is live", |b| b.text("#live") == "live");
    b.shot("1-dashboard");

    // The filter box: what central filters.
    b.click("nav a[href='/hosts']");
    b.type_into("#filter", "site:lyon status:ok");
    b.click("form.filter button");
    let lyon = console(&["hosts", "site:lyon status:ok"]);
    b.wait_until(Duration::from_secs(10), "the filtered page", |b| {
        b.text("#total") == lyon["total"].as_u64().unwrap().to_string()
    });
    assert_eq!(b.count("tbody tr[data-host]"), lyon["hosts"].as_array().unwrap().len());
    assert!(lyon["total"].as_u64().unwrap() > 0);
    b.type_into("#filter", "status:BROKEN");
    b.click("form.filter button");
    assert!(b.text("#filter-error").contains("not a host status"));
    b.shot("2-hosts-filtered");

    // A host's page.
    let first = lyon["hosts"][0]["fqdn"].as_str().unwrap().to_string();
    b.go(&format!("{base}/hosts?q=name:{first}"));
    b.click(&format!("tr[data-host='{first}'] td a"));
    assert!(b.text("h1").contains(&first));
    assert!(b.count("table.packages tr[data-package]") > 0, "its packages are listed");
    assert!(b.count("table.reports tr") > 0, "its recent reports are listed");
    let edge = b.text("table.transfers td");
    assert!(edge.contains(':'), "the repository that served it: {edge}");
    b.shot("3-host");

    // What is published (from the main's signed snapshot) beside where it is installed.
    b.click("nav a[href='/packages']");
    let app = b.text("tr[data-package='demo-app']");
    assert!(app.contains("demo-app 2.1-1 base 6 6 0 0 2.1-1 × 6"), "published 2.1-1, on the 6 hosts: {app}");
    b.shot("3b-packages");
    b.click("tr[data-package='demo-app'] td a");
    let fields = b.text("table.fields");
    assert!(fields.contains("description") && fields.contains("The application every desktop gets"), "{fields}");
    b.shot("3b-package");

    // The repository tree: every edge under its upstream, with its last sync.
    b.click("nav a[href='/repos']");
    b.wait_until(Duration::from_secs(20), "the main and three edges", |b| b.count("tr[data-repo]") == 4);
    let annex = b.text("tr[data-repo='annex']");
    assert!(annex.contains("└─") && !annex.contains("never"), "annex syncs from paris: {annex}");
    b.shot("3c-repos");

    // An upgrade from the page: confirmation first, then its result.
    b.go(&format!("{base}/hosts?q=name:{first}"));
    b.click(&format!("tr[data-host='{first}'] input[name=host]"));
    assert_eq!(b.text("#selected"), "1");
    b.click("button[value=upgrade]");
    assert_eq!(b.text("#reach"), "1", "the confirmation says how many hosts it reaches");
    b.shot("4-confirm");
    b.click("#confirm");
    b.wait_until(Duration::from_secs(20), "the answer to the confirmed action", |b| {
        let t = b.page_text();
        t.contains("relayed to") || t.contains("Not sent")
    });
    assert!(b.page_text().contains("relayed to"), "{}", b.page_text());
    b.go(&format!("{base}/actions"));
    b.wait_until(Duration::from_secs(30), "the upgrade's result on the actions page", |b| {
        b.page_text().contains(&first) && b.page_text().contains("upgrade done")
    });

    // Set packages from the page: the host's own package is published (signed here), then
    // the host upgrades to it.
    b.go(&format!("{base}/hosts?q=name:{first}"));
    b.click(&format!("tr[data-host='{first}'] input[name=host]"));
    b.type_into("form.act input[name=packages]", "demo-lib");
    b.click("button[value=set-packages]");
    assert_eq!(b.text("#reach"), "1");
    b.click("#confirm");
    b.wait_until(Duration::from_secs(30), "the host package to be published", |b| {
        let t = b.page_text();
        t.contains("relayed to") || t.contains("Not sent")
    });
    assert!(b.page_text().contains(&format!("Published {first}")), "{}", b.page_text());
    b.go(&format!("{base}/host?name={first}"));
    b.wait_until(Duration::from_secs(30), "the host to report its host package", |b| {
        b.count(&format!("tr[data-package='{first}']")) == 1
    });

    // Live: an action sent elsewhere shows on the open page without reloading it.
    b.go(&format!("{base}/actions"));
    b.wait_until(Duration::from_secs(20), "the actions page", |b| b.count("div.action") > 0);
    let before = b.count("div.action");
    let marker = b.js("window.__marker = 42; return window.__marker");
    run_in(
        work.path(),
        &[
            "console", "action", "update", "--hosts", &first, "--server", central, "--ca", ca, "--cert", cert, "--key",
            key,
        ],
    )
    .ok();
    let waited = b.wait_until(Duration::from_secs(10), "the new action to appear on the open page", |b| {
        b.count("div.action") > before
    });
    assert_eq!(b.js("return window.__marker"), marker, "the page was not reloaded, only its main part");
    eprintln!("the new action showed on the open page {waited:?} after central had it");
    // Central answers the relay once it has stored the action; the page shows it within 2 s
    // (asked every second here, central every half second there), plus the test's own polling.
    assert!(waited < Duration::from_millis(2500), "shown {waited:?} after it was sent");
    b.shot("5-actions-live");

    // A view-only certificate: no action buttons, and central refuses its actions anyway.
    let viewer_url = dir.join("viewer.url");
    let pki = dir.join("pki");
    let _viewer = Stop(
        outpost()
            .args([
                "console",
                "web",
                "--listen",
                "127.0.0.1:0",
                "--url-file",
                viewer_url.to_str().unwrap(),
                "--server",
                central,
                "--ca",
                ca,
            ])
            .arg("--cert")
            .arg(pki.join("Demo_Viewer.crt"))
            .arg("--key")
            .arg(pki.join("Demo_Viewer.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let viewer =
        wait_for(Duration::from_secs(30), "the viewer's console", || std::fs::read_to_string(&viewer_url).ok());
    b.go(&viewer);
    b.click("nav a[href='/hosts']");
    b.wait_until(Duration::from_secs(10), "the hosts page", |b| b.find("#total").is_some());
    assert_eq!(b.count("#act"), 0, "no action form");
    assert_eq!(b.count("input[name=host]"), 0, "no selection");
    assert!(b.text("header .who").contains("view only"));
    b.shot("6-view-only");
    let out = outpost()
        .args(["console", "action", "update", "--all", "--server", central, "--ca", ca])
        .arg("--cert")
        .arg(pki.join("Demo_Viewer.crt"))
        .arg("--key")
        .arg(pki.join("Demo_Viewer.key"))
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("act right"), "{out:?}");

    // A browser without the session cookie is refused again.
    b.forget_cookies();
    b.go(&format!("{base}/"));
    assert!(b.page_text().contains("open the address"));
}
