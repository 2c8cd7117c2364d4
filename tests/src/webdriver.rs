//! A minimal W3C WebDriver client (plain HTTP + JSON over ureq) driving a headless Chromium
//! through `chromedriver`, for the dashboard's browser tests: sessions, navigation, elements,
//! clicks, typing, scripts and screenshots. Debian's `chromium` and `chromium-driver` are
//! installed by `.ci/deps`; `CHROMEDRIVER` / `CHROMIUM` pick other binaries.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{free_port, wait_for};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A `chromedriver` process and one browser session; both end when dropped.
pub struct Browser {
    driver: Child,
    base: String,
    http: ureq::Agent,
}

fn program(env: &str, candidates: &[&str]) -> String {
    std::env::var(env).unwrap_or_else(|_| {
        candidates
            .iter()
            .find(|c| Path::new(c).exists())
            .unwrap_or(&candidates[0])
            .to_string()
    })
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width` × `height`.
    pub fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = Command::new(program(
            "CHROMEDRIVER",
            &["/usr/bin/chromedriver", "chromedriver"],
        ))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run chromedriver ({e}): install chromium and chromium-driver (.ci/deps)")
        });
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http,
        };
        wait_for(
            "chromedriver",
            Duration::from_secs(20),
            || {
                let v = b.raw("GET", "/status", None).ok()?;
                (v["value"]["ready"] == true).then_some(())
            },
            String::new,
        );
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // the fleet CA is not in Chromium's store; the TLS itself is tested elsewhere
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": program("CHROMIUM", &["/usr/bin/chromium", "chromium"]),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", format!("--window-size={width},{height}")],
            },
        }}});
        let v = b.raw("POST", "/session", Some(caps)).expect("new session");
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b.base = format!("{}/session/{id}", b.base);
        b
    }

    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let result = match (method, body) {
            ("GET", _) => self.http.get(&url).call(),
            ("DELETE", _) => self.http.delete(&url).call(),
            (_, body) => self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .send(body.unwrap_or(json!({})).to_string().as_bytes()),
        };
        let mut r = result.map_err(|e| e.to_string())?;
        let text = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if v["value"]["error"].is_string() {
            return Err(format!(
                "{}: {}",
                v["value"]["error"], v["value"]["message"]
            ));
        }
        Ok(v)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.raw(method, path, body)
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"))["value"]
            .clone()
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        self.raw(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| v["value"][ELEMENT].as_str().map(str::to_string))
    }

    /// Waits for `css` to match, up to `timeout`; its element id.
    pub fn wait(&self, css: &str, timeout: Duration) -> String {
        wait_for(
            &format!("'{css}' on the page"),
            timeout,
            || self.find(css),
            || {
                self.js("return document.body.innerText.slice(0, 2000)")
                    .to_string()
            },
        )
    }

    /// Clicks the element matching `css` (waiting up to 10 s for it).
    pub fn click(&self, css: &str) {
        let e = self.wait(css, Duration::from_secs(10));
        self.call("POST", &format!("/element/{e}/click"), None);
    }

    /// Types `text` into the element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.wait(css, Duration::from_secs(10));
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// The text of the element matching `css` ("" if none).
    pub fn text(&self, css: &str) -> String {
        self.js(&format!(
            "const e = document.querySelector({}); return e ? e.innerText : ''",
            json!(css)
        ))
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        use std::io::Write;
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().expect("base64 screenshot"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(path)
            .unwrap()
            .write_all(&png)
            .unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.raw("DELETE", "", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (what WebDriver screenshots are in).
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64() {
        assert_eq!(super::base64_decode("aGVsbG8="), b"hello");
        assert_eq!(super::base64_decode("aGk="), b"hi");
    }
}
