//! Who may drive the web console: only a browser that was given the address with its secret.
//!
//! - The secret is made at start and printed in the address (`/?secret=…`, like a notebook
//!   server). The first visit with it gets a session cookie (HttpOnly, SameSite=Strict) and is
//!   sent on without the secret in its address bar; any request without the cookie (or the
//!   secret) is refused. Another local user cannot guess it, and another web page cannot read it.
//! - The Host header must name this server (a DNS-rebinding page names its own host).
//! - A form that changes something (POST) must come from this server's own pages: its Origin is
//!   this server, and it carries the page's CSRF token.

use axum::http::{HeaderMap, Method, header};

/// What a request is allowed, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Allow,
    /// The secret in the address is right: set the cookie and send the browser to `to`.
    SetCookie { to: String },
    /// Refused, and why (shown on the page).
    Deny(&'static str),
}

/// The console's secrets and the names it answers to.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The secret in the printed address.
    pub secret: String,
    /// The token forms carry.
    pub csrf: String,
    /// `host:port` values the Host header may have.
    pub hosts: Vec<String>,
    /// Listening on every address: any IP address of this machine may be in the Host header
    /// (with this port); names only as listed.
    pub any_ip: Option<u16>,
    /// The cookie's name (the port is in it: cookies are per host, not per port).
    pub cookie: String,
}

impl Guard {
    /// A guard for a server on `port` reachable as `names` (IP addresses or host names).
    pub fn new(secret: String, csrf: String, port: u16, names: &[String]) -> Self {
        let mut hosts: Vec<String> = names.iter().map(|n| format!("{n}:{port}")).collect();
        for local in ["127.0.0.1", "localhost", "[::1]"] {
            hosts.push(format!("{local}:{port}"));
        }
        Self { secret, csrf, hosts, any_ip: None, cookie: format!("outpost_console_{port}") }
    }

    /// The same, listening on every address of this machine (`0.0.0.0`, `[::]`).
    pub fn on_every_address(mut self, port: u16) -> Self {
        self.any_ip = Some(port);
        self
    }

    fn host_allowed(&self, host: &str) -> bool {
        if self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return true;
        }
        // An address literal (a DNS-rebinding page would send its own name, not an address).
        self.any_ip.is_some_and(|port| host.parse::<std::net::SocketAddr>().is_ok_and(|a| a.port() == port))
    }

    /// Judges a request from its method, path, query and headers (`form_csrf`: the CSRF
    /// field of a POSTed form).
    pub fn judge(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        form_csrf: Option<&str>,
    ) -> Verdict {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !self.host_allowed(host) {
            return Verdict::Deny("this console answers only to its own address");
        }
        let given = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("secret=")).map(|v| v.to_string()));
        if method == Method::GET && given.as_deref().is_some_and(|g| same(g, &self.secret)) {
            let rest: Vec<&str> =
                query.unwrap_or("").split('&').filter(|kv| !kv.starts_with("secret=") && !kv.is_empty()).collect();
            let to = if rest.is_empty() { path.to_string() } else { format!("{path}?{}", rest.join("&")) };
            return Verdict::SetCookie { to };
        }
        if !self.has_cookie(headers) {
            return Verdict::Deny(
                "open the address `outpost console web` printed (with its secret); this browser has no session",
            );
        }
        if method != Method::GET && method != Method::HEAD {
            let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("");
            if origin != format!("http://{host}") {
                return Verdict::Deny("a change must come from this console's own pages (wrong Origin)");
            }
            if !form_csrf.is_some_and(|t| same(t, &self.csrf)) {
                return Verdict::Deny("a change must come from this console's own pages (no CSRF token)");
            }
        }
        Verdict::Allow
    }

    fn has_cookie(&self, headers: &HeaderMap) -> bool {
        headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).any(|v| {
            v.split(';')
                .filter_map(|c| c.trim().split_once('='))
                .any(|(k, val)| k == self.cookie && same(val, &self.secret))
        })
    }

    /// The `Set-Cookie` value that opens a session.
    pub fn set_cookie(&self) -> String {
        format!("{}={}; HttpOnly; SameSite=Strict; Path=/", self.cookie, self.secret)
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new("s3cret".into(), "tok".into(), 7445, &[])
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_secret_opens_a_session_and_nothing_else_does() {
        let g = guard();
        let host = ("host", "127.0.0.1:7445");
        assert_eq!(
            g.judge(&Method::GET, "/hosts", Some("secret=s3cret&q=x"), &headers(&[host]), None),
            Verdict::SetCookie { to: "/hosts?q=x".into() }
        );
        assert!(matches!(g.judge(&Method::GET, "/", Some("secret=wrong"), &headers(&[host]), None), Verdict::Deny(_)));
        assert!(matches!(g.judge(&Method::GET, "/", None, &headers(&[host]), None), Verdict::Deny(_)));
        let cookie = ("cookie", "a=b; outpost_console_7445=s3cret");
        assert_eq!(g.judge(&Method::GET, "/", None, &headers(&[host, cookie]), None), Verdict::Allow);
        let other_port = ("cookie", "outpost_console_7446=s3cret");
        assert!(matches!(g.judge(&Method::GET, "/", None, &headers(&[host, other_port]), None), Verdict::Deny(_)));
        assert!(g.set_cookie().contains("HttpOnly") && g.set_cookie().contains("SameSite=Strict"));
    }

    #[test]
    fn on_every_address_any_address_literal_of_its_port_is_accepted_but_no_other_name() {
        let g = Guard::new("s".into(), "t".into(), 7445, &["wall.example".into()]).on_every_address(7445);
        let cookie = ("cookie", "outpost_console_7445=s");
        for (host, ok) in [
            ("192.168.1.20:7445", true),
            ("[fe80::1]:7445", true),
            ("wall.example:7445", true),
            ("192.168.1.20:80", false),
            ("evil.example:7445", false),
        ] {
            let v = g.judge(&Method::GET, "/", None, &headers(&[("host", host), cookie]), None);
            assert_eq!(v == Verdict::Allow, ok, "{host}: {v:?}");
        }
    }

    #[test]
    fn another_host_name_or_another_page_cannot_drive_it() {
        let g = guard();
        let cookie = ("cookie", "outpost_console_7445=s3cret");
        // DNS rebinding: the browser sends the attacker's name.
        let evil = headers(&[("host", "evil.example:7445"), cookie]);
        assert!(matches!(g.judge(&Method::GET, "/", None, &evil, None), Verdict::Deny(_)));
        let host = ("host", "localhost:7445");
        let ok_post = headers(&[host, cookie, ("origin", "http://localhost:7445")]);
        assert_eq!(g.judge(&Method::POST, "/act", None, &ok_post, Some("tok")), Verdict::Allow);
        assert!(matches!(g.judge(&Method::POST, "/act", None, &ok_post, None), Verdict::Deny(_)));
        assert!(matches!(g.judge(&Method::POST, "/act", None, &ok_post, Some("tik")), Verdict::Deny(_)));
        let cross = headers(&[host, cookie, ("origin", "http://evil.example")]);
        assert!(matches!(g.judge(&Method::POST, "/act", None, &cross, Some("tok")), Verdict::Deny(_)));
        let no_origin = headers(&[host, cookie]);
        assert!(matches!(g.judge(&Method::POST, "/act", None, &no_origin, Some("tok")), Verdict::Deny(_)));
        // The secret in a POST's address does not open a session.
        let fresh = headers(&[host, ("origin", "http://localhost:7445")]);
        assert!(matches!(g.judge(&Method::POST, "/act", Some("secret=s3cret"), &fresh, Some("tok")), Verdict::Deny(_)));
    }
}
