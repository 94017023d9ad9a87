//! A small WebDriver client (the W3C protocol: JSON over HTTP) driving Debian's chromium
//! through chromedriver, for the web console's tests. Screenshots go under
//! `target/web-screenshots/` for people to look at.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::cluster::{tcp_port, wait_for};
use crate::common::root;

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium and chromedriver, when this machine has them.
pub fn browsers() -> Option<(PathBuf, PathBuf)> {
    let chromium =
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().map(PathBuf::from).find(|p| p.exists())?;
    let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())?;
    Some((chromium, driver))
}

/// A headless browser session.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(&self.addr, "DELETE", &format!("/session/{}", self.session), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One HTTP/1.1 exchange (chromedriver answers with a Content-Length), the body as JSON.
fn request(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let (head_end, length) = loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the connection closed before an answer".into());
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("an answer without Content-Length")?;
            break (end + 4, length);
        }
    };
    while got.len() < head_end + length {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let json = String::from_utf8_lossy(&got[head_end..]);
    let v: Value = serde_json::from_str(&json).map_err(|e| format!("{e}: {json}"))?;
    if let Some(e) = v["value"]["error"].as_str() {
        return Err(format!("{e}: {}", v["value"]["message"]));
    }
    Ok(v)
}

impl Browser {
    /// Starts chromedriver and a headless chromium; screenshots go in a folder named `name`.
    pub fn start(chromium: &Path, driver: &Path, name: &str) -> Self {
        let port = tcp_port("127.0.0.1");
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let shots = root().join("target").join("web-screenshots").join(name);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        let mut b = Browser { driver: child, addr, session: String::new(), shots };
        wait_for(Duration::from_secs(30), "chromedriver to answer", || {
            request(&b.addr, "GET", "/status", None).ok().filter(|v| v["value"]["ready"] == true)
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]
            }
        }}});
        let v = request(&b.addr, "POST", "/session", Some(&caps)).expect("a browser session");
        b.session = v["value"]["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        request(&self.addr, method, &format!("/session/{}{path}", self.session), body)
    }

    /// Opens `url`.
    pub fn go(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({"url": url}))).unwrap();
    }

    /// Runs JavaScript in the page; returns its value.
    pub fn js(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(&json!({"script": script, "args": []}))).unwrap()["value"].clone()
    }

    /// The element `css` selects, if there is one.
    pub fn find(&self, css: &str) -> Option<String> {
        let v = self.call("POST", "/element", Some(&json!({"using": "css selector", "value": css}))).ok()?;
        v["value"][ELEMENT].as_str().map(str::to_string)
    }

    /// How many elements `css` selects.
    pub fn count(&self, css: &str) -> usize {
        let v = self.call("POST", "/elements", Some(&json!({"using": "css selector", "value": css}))).unwrap();
        v["value"].as_array().map_or(0, Vec::len)
    }

    /// The text of the element `css` selects (waits for it a while).
    pub fn text(&self, css: &str) -> String {
        let v = self.on_element(css, |id| self.call("GET", &format!("/element/{id}/text"), None));
        v["value"].as_str().unwrap_or("").to_string()
    }

    /// Runs `act` on the element `css` selects, finding it again when the page redrew it in
    /// between (the live page replaces `<main>` every second: "stale element reference").
    fn on_element(&self, css: &str, act: impl Fn(&str) -> Result<Value, String>) -> Value {
        wait_for(Duration::from_secs(20), css, || {
            let id = self.find(css)?;
            match act(&id) {
                Ok(v) => Some(v),
                Err(e) if e.contains("stale element") => None,
                Err(e) => panic!("{css}: {e}"),
            }
        })
    }

    /// Clicks the element `css` selects (waits for it a while).
    pub fn click(&self, css: &str) {
        self.on_element(css, |id| self.call("POST", &format!("/element/{id}/click"), Some(&json!({}))));
    }

    /// Types `text` into the element `css` selects, after clearing it.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = wait_for(Duration::from_secs(20), css, || self.find(css));
        self.call("POST", &format!("/element/{id}/clear"), Some(&json!({}))).unwrap();
        self.call("POST", &format!("/element/{id}/value"), Some(&json!({"text": text}))).unwrap();
    }

    /// The page's whole text.
    pub fn page_text(&self) -> String {
        self.js("return document.body ? document.body.innerText : ''").as_str().unwrap_or("").to_string()
    }

    /// Waits until `check` holds on the page, up to `limit`.
    pub fn wait_until(&self, limit: Duration, what: &str, check: impl Fn(&Self) -> bool) -> Duration {
        let start = Instant::now();
        wait_for(limit, what, || check(self).then_some(()));
        start.elapsed()
    }

    /// Forgets every cookie (a browser that never had the secret).
    pub fn forget_cookies(&self) {
        self.call("DELETE", "/cookie", None).unwrap();
    }

    /// Saves a screenshot as `name.png`.
    pub fn shot(&self, name: &str) {
        if let Ok(v) = self.call("GET", "/screenshot", None)
            && let Some(png) = v["value"].as_str()
            && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(png)
        {
            let _ = std::fs::write(self.shots.join(format!("{name}.png")), bytes);
        }
    }
}
