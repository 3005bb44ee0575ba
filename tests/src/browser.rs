//! A real browser for end-to-end tests of the web UI: Debian's Chromium,
//! headless, driven over WebDriver by Debian's chromedriver (started on a
//! loopback port for the test and stopped on drop).
//!
//! The client is the few W3C WebDriver commands the tests use (session,
//! navigate, execute script, find element, send keys, window size,
//! screenshot) plus chromedriver's log endpoint for the browser console,
//! over blocking reqwest: a WebDriver crate would bring an HTTP stack of its
//! own for these dozen JSON calls.
//!
//! Screenshots go to `$VIGIL_TEST_ARTIFACTS/ui/` (default `target/ui-artifacts/`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The browser and its driver as Debian installs them.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether Chromium and chromedriver are installed (tests skip, saying why, otherwise).
pub fn usable() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

/// Where screenshots and other artefacts of the UI tests go.
pub fn artifacts_dir() -> PathBuf {
    let base = std::env::var_os("VIGIL_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("workspace")
                .join("target/ui-artifacts")
        });
    let d = base.join("ui");
    std::fs::create_dir_all(&d).expect("artifacts dir");
    d
}

/// One console message of the page.
#[derive(Debug, Clone)]
pub struct ConsoleEntry {
    pub level: String,
    pub message: String,
}

/// A headless Chromium session; the driver is killed on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile at
    /// `width`×`height`.
    pub fn start(width: u32, height: u32) -> Browser {
        vigil_collector::tls::ensure_crypto_provider();
        let port = crate::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        crate::wait_for(Duration::from_secs(20), "chromedriver", || {
            http.get(format!("{base}/status"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
                .ok_or_else(|| "not up".to_string())
        });
        let profile = tempfile::tempdir().expect("profile dir");
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b.window(width, height);
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{}", self.base, path);
        let rb = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or(json!({}))),
        };
        let resp = rb
            .send()
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"));
        let v: Value = resp.json().unwrap_or(Value::Null);
        if v["value"]["error"].is_string() {
            panic!(
                "webdriver {method} {path}: {} {}",
                v["value"]["error"], v["value"]["message"]
            );
        }
        if path == "/session" {
            return v["value"].clone();
        }
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Sets the outer window size.
    pub fn window(&self, width: u32, height: u32) {
        self.call(
            "POST",
            &self.s("/window/rect"),
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Navigates and waits for the document to load.
    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Polls `script` until it returns something other than null/false/"".
    pub fn wait_js(&self, timeout: Duration, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(script, vec![]);
            let done = !(v.is_null() || v == json!(false) || v == json!(""));
            if done {
                return v;
            }
            if Instant::now() > deadline {
                let page = self.js(
                    "return document.querySelector('main') ? document.querySelector('main').innerText.slice(0, 2000) : document.body.innerText",
                    vec![],
                );
                panic!("timed out after {timeout:?} waiting for {what}; the page shows:\n{page}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the UI's current page has finished its first load.
    pub fn wait_ready(&self) {
        self.wait_js(
            Duration::from_secs(60),
            "the page to load",
            "const m = document.querySelector('main'); return m && m.dataset.ready === '1';",
        );
    }

    /// The element id of the first match of a CSS selector.
    pub fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|x| x.as_str())
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Types `text` into an element (keys such as Tab as WebDriver's
    /// code points, e.g. "\u{E004}").
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{id}/value")),
            Some(json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.call("POST", &self.s(&format!("/element/{id}/click")), None);
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self.call("GET", &self.s("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("screenshot data"))
            .expect("base64");
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Console messages since the last call (chromedriver's log endpoint).
    pub fn console(&self) -> Vec<ConsoleEntry> {
        let v = self.call("POST", &self.s("/se/log"), Some(json!({"type": "browser"})));
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| ConsoleEntry {
                        level: e["level"].as_str().unwrap_or("").to_string(),
                        message: e["message"].as_str().unwrap_or("").to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Console errors since the last call.
    pub fn console_errors(&self) -> Vec<ConsoleEntry> {
        self.console()
            .into_iter()
            .filter(|e| e.level == "SEVERE")
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .http
                .delete(format!("{}/session/{}", self.base, self.session))
                .send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A script that finds text whose contrast against its background is
/// below WCAG AA (4.5:1, or 3:1 for large text); returns the offenders.
pub const CONTRAST_CHECK: &str = r#"
const lum = (c) => {
  const m = c.match(/rgba?\(([^)]+)\)/); if (!m) return null;
  const p = m[1].split(',').map(Number);
  if (p.length === 4 && p[3] === 0) return null;
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(p[0]) + 0.7152 * f(p[1]) + 0.0722 * f(p[2]);
};
const bg = (el) => {
  for (let e = el; e; e = e.parentElement) {
    const s = getComputedStyle(e);
    if (s.backgroundImage && s.backgroundImage !== 'none') return null;
    const l = lum(s.backgroundColor);
    if (l !== null) return l;
  }
  return lum('rgb(255,255,255)');
};
const bad = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const seen = new Set();
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const el = n.parentElement;
  if (!el || seen.has(el) || !n.textContent.trim()) continue;
  seen.add(el);
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) continue;
  const s = getComputedStyle(el);
  if (s.visibility === 'hidden' || s.display === 'none' || el.closest('[hidden]') || el.closest('.u-legend .u-off')) continue;
  const fg = lum(s.color), b = bg(el);
  if (fg === null || b === null) continue;
  const opacity = Number(s.opacity);
  const ratio = (Math.max(fg, b) + 0.05) / (Math.min(fg, b) + 0.05);
  const large = parseFloat(s.fontSize) >= 24 || (parseFloat(s.fontSize) >= 18.66 && Number(s.fontWeight) >= 700);
  if (opacity >= 1 && ratio < (large ? 3 : 4.5)) bad.push(el.tagName + ' "' + n.textContent.trim().slice(0, 40) + '" ' + ratio.toFixed(2) + ':1');
}
return bad;
"#;
