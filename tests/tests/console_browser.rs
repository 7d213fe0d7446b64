//! The web console in a real browser: headless Chromium (the distribution's `chromium` and
//! `chromium-driver` packages) driven over WebDriver (fantoccini) against the app and the Golioth
//! simulator: the native host, and in the Spin suite (`GS_TEST_HOST=spin`) the same tests against
//! `spin up`. One operator's day: sign in with a token from the URL fragment, create
//! a service, dry-run then run a sync, see a concurrent edit become a conflict, resolve it in the
//! conflict view, and check through the API, the database and the simulator that both sides
//! converged; sign-in problems are explained; the screens fit a 375 px wide phone. Each screen is
//! saved as `target/console-screenshots/<name>.png` (`…/spin/<name>.png` under Spin).
//!
//! Without `chromedriver` and a Chromium on PATH (or `GS_CHROMEDRIVER` / `GS_CHROMIUM`) the browser
//! tests print that they were SKIPPED and why, and record it in the `GS_TEST_REPORT` file (the
//! xtask lists it); with `GS_REQUIRE_BROWSER=1` (CI) a missing browser fails instead.
//! `console_is_served_with_its_security_headers` needs no browser: the console's smoke test on both
//! hosts (files, media types, 404, the CSP and the other headers).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use harness::{AppOptions, INTERNAL_TOKEN, TestApp};
use host::procs::ProcessGuard;
use host::simulator::{ProjectSpec, SeedSpec, SimOptions, Simulator, SimulatorHandle};
use serde_json::{Value, json};
use uuid::Uuid;

/// axe-core, vendored (tests/assets/README.md): injected into every screen by [`Browser::check`].
const AXE: &str = include_str!("../assets/axe.min.js");
const AXE_VERSION: &str = "4.14.1";

const PROJECT: &str = "proj-console";
/// WebDriver key codes.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";
const KEY: &str = "key-console-0001-abcd";
const WAIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------------------
// Finding and starting the browser

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// chromedriver and a Chromium binary, or why they are missing.
fn browser_binaries() -> Result<(PathBuf, PathBuf), String> {
    let given = |var: &str| -> Result<Option<PathBuf>, String> {
        match std::env::var_os(var) {
            Some(p) if Path::new(&p).is_file() => Ok(Some(PathBuf::from(p))),
            Some(p) => Err(format!("{var}={} is not a file", p.to_string_lossy())),
            None => Ok(None),
        }
    };
    let driver = match given("GS_CHROMEDRIVER")? {
        Some(p) => p,
        None => on_path("chromedriver").ok_or(
            "no chromedriver on PATH (Debian/Ubuntu: apt-get install chromium chromium-driver)",
        )?,
    };
    let chromium = match given("GS_CHROMIUM")? {
        Some(p) => p,
        None => [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ]
        .iter()
        .find_map(|n| on_path(n))
        .ok_or("no chromium on PATH (Debian/Ubuntu: apt-get install chromium chromium-driver)")?,
    };
    Ok((driver, chromium))
}

/// Skip (loudly) when the browser is missing; fail instead when `GS_REQUIRE_BROWSER` is set.
fn browser_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    match browser_binaries() {
        Ok(b) => Some(b),
        Err(why) => {
            if std::env::var_os("GS_REQUIRE_BROWSER").is_some() {
                panic!("{test}: GS_REQUIRE_BROWSER is set but {why}");
            }
            // Straight to the terminal's stderr: libtest captures `println!`/`eprintln!` of a
            // passing test, and a skip must be seen in a plain `cargo test` too.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED console browser test {test}: {why}"
            );
            harness::report("skipped", &why);
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("console-screenshots");
    if harness::on_spin() {
        dir.join("spin")
    } else {
        dir
    }
}

/// A headless Chromium session through its own chromedriver process. chromedriver runs in its
/// own process group with a mark in its environment that Chromium inherits: dropping the
/// `Browser` (a passing test, or a failing one unwinding) kills chromedriver and every Chromium
/// process, and removes the browser's profile folder.
struct Browser {
    client: Client,
    _driver: ProcessGuard,
    base: String,
    /// chromedriver's URL, for the browser-log endpoint fantoccini does not wrap.
    driver_url: String,
    /// axe results per screen, `screen: n violations (serious/critical: m)`, printed at the end.
    axe_report: std::sync::Mutex<Vec<String>>,
}

impl Browser {
    async fn start(driver: &Path, chromium: &Path, base: &str) -> Browser {
        let port = free_port();
        let mut cmd = Command::new(driver);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = ProcessGuard::spawn(&mut cmd)
            .unwrap_or_else(|e| panic!("starting {}: {e}", driver.display()));
        let profile = std::env::temp_dir().join(format!("gs-chromium-{}", Uuid::new_v4().simple()));
        child.remove_after(profile.clone());
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = http
                .get(format!("{url}/status"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         "--no-first-run", "--no-default-browser-check",
                         format!("--user-data-dir={}", profile.display())],
            }),
        );
        // The browser's console (errors, unhandled rejections), read on every screen.
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("WebDriver session: {e}"));
        Browser {
            client,
            _driver: child,
            base: base.to_owned(),
            driver_url: url,
            axe_report: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The browser console's entries since the last call (chromedriver's log endpoint), each as
    /// `LEVEL source: message`.
    async fn browser_log(&self) -> Vec<(String, String)> {
        let sid = self
            .client
            .session_id()
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no WebDriver session"));
        let r: Value = reqwest::Client::new()
            .post(format!("{}/session/{sid}/se/log", self.driver_url))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("reading the browser log: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("reading the browser log: {e}"));
        r["value"]
            .as_array()
            .unwrap_or_else(|| panic!("browser log: {r}"))
            .iter()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or("").to_owned(),
                    format!(
                        "{} {}",
                        e["source"].as_str().unwrap_or(""),
                        e["message"].as_str().unwrap_or("")
                    ),
                )
            })
            .collect()
    }

    /// Fail on any error in the browser console since the last check: a script error, an
    /// unhandled rejection, a CSP violation, a failed load. `expected` lists substrings of the
    /// failed requests this step provokes on purpose (e.g. `"status of 422"` for a refusal the
    /// screen shows); each must match an entry's text.
    async fn no_console_errors(&self, screen: &str, expected: &[&str]) {
        let severe: Vec<String> = self
            .browser_log()
            .await
            .into_iter()
            .filter(|(level, _)| level == "SEVERE")
            .map(|(_, text)| text)
            .collect();
        for x in expected {
            assert!(
                severe
                    .iter()
                    .any(|t| t.starts_with("network ") && t.contains(x)),
                "{screen}: the browser log shows no failed request with {x:?}: {severe:?}"
            );
        }
        let errors: Vec<String> = severe
            .into_iter()
            .filter(|text| {
                !(text.starts_with("network ") && expected.iter().any(|x| text.contains(x)))
            })
            .collect();
        assert!(
            errors.is_empty(),
            "{screen}: errors in the browser console:\n{}",
            errors.join("\n")
        );
    }

    /// Run axe-core on the page; fail on any serious or critical violation.
    async fn axe(&self, screen: &str) {
        let present = self.js("return typeof window.axe === 'object'").await;
        if present != json!(true) {
            self.js(&format!("{AXE}\nreturn true")).await;
        }
        let version = self.js("return window.axe.version").await;
        assert_eq!(version, json!(AXE_VERSION), "the vendored axe-core");
        let script = r#"
            const done = arguments[arguments.length - 1];
            window.axe.run(document, { resultTypes: ['violations'] })
              .then((r) => done(r.violations.map((v) => ({
                  id: v.id, impact: v.impact, help: v.help,
                  targets: v.nodes.slice(0, 5).map((n) => n.target.join(' ')) }))))
              .catch((e) => done({ error: String(e) }));
        "#;
        let found = self
            .client
            .execute_async(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("axe on {screen}: {e}"));
        let list = found
            .as_array()
            .unwrap_or_else(|| panic!("axe on {screen}: {found}"));
        let serious: Vec<&Value> = list
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        let line = format!(
            "{screen}: {} violation(s), serious or critical: {}{}",
            list.len(),
            serious.len(),
            if list.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    list.iter()
                        .map(|v| format!(
                            "{} {}",
                            v["impact"].as_str().unwrap_or("?"),
                            v["id"].as_str().unwrap_or("?")
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        self.axe_report.lock().unwrap().push(line);
        assert!(
            serious.is_empty(),
            "axe on {screen}: serious or critical violations:\n{}",
            serious
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// One screen's checks: no browser-console errors (but the `expected` failed requests), no
    /// serious or critical axe violation, no horizontal scrolling at the window's width, and a
    /// screenshot (without success notices).
    async fn check(&self, screen: &str, expected: &[&str]) {
        self.no_console_errors(screen, expected).await;
        self.axe(screen).await;
        let width = self
            .js("return window.innerWidth")
            .await
            .as_u64()
            .unwrap_or(0);
        self.fits(screen, width).await;
        // The picture shows the screen, not the success toasts still fading out over it (they
        // were part of the axe check above).
        self.js(
            "document.querySelectorAll('#notices .notice:not(.error)').forEach((n) => n.remove())",
        )
        .await;
        self.shot(screen).await;
    }

    /// Press keys on whatever has the focus (WebDriver key codes: `TAB`, `ENTER`, …).
    async fn keys(&self, keys: &str) {
        let el = self
            .client
            .active_element()
            .await
            .unwrap_or_else(|e| panic!("no focused element: {e}"));
        el.send_keys(keys)
            .await
            .unwrap_or_else(|e| panic!("keys {keys:?}: {e}"));
    }

    /// Whether the focused element matches `css`.
    async fn focused(&self, css: &str) -> bool {
        self.client
            .execute(
                "return !!document.activeElement && document.activeElement.matches(arguments[0])",
                vec![json!(css)],
            )
            .await
            .unwrap_or_else(|e| panic!("focus check: {e}"))
            == json!(true)
    }

    /// Move the focus with Tab (or Shift+Tab when `back`) until it is on `css`: proves the control
    /// is reachable by keyboard, in the page's own focus order. Fails after 80 presses.
    async fn tab_to(&self, css: &str, back: bool) {
        self.wait_for(css).await;
        for _ in 0..80 {
            if self.focused(css).await {
                return;
            }
            self.keys(if back {
                "\u{E008}\u{E004}\u{E000}"
            } else {
                TAB
            })
            .await;
        }
        let at = self
            .js("const a = document.activeElement; return a ? a.outerHTML.slice(0, 200) : ''")
            .await;
        panic!("Tab never reached {css}; the focus is on {at}");
    }

    /// [`Browser::check`] at the desktop size, then again at 375 px (`phone-<screen>`), then back.
    async fn screen(&self, screen: &str, expected: &[&str]) {
        self.check(screen, expected).await;
        self.size(375, 812).await;
        self.check(&format!("phone-{screen}"), &[]).await;
        self.size(1280, 1000).await;
    }

    /// Print what axe found on each screen (stderr, so it shows in a plain `cargo test` run with
    /// `--nocapture`), and close the session.
    async fn finish(self) {
        {
            use std::io::Write;
            let report = self.axe_report.lock().unwrap().clone();
            let mut err = std::io::stderr();
            for l in report {
                let _ = writeln!(err, "axe-core {AXE_VERSION}: {l}");
            }
        }
        self.close().await;
    }

    /// End the WebDriver session (Chromium quits); dropping the `Browser` then kills what is left.
    async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("goto {path}: {e}"));
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// The text of the first element matching `css`, once it appears.
    async fn wait_for(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && let Ok(t) = el.text().await
            {
                return t;
            }
            if started.elapsed() > WAIT {
                panic!("no {css} after {WAIT:?}; page: {}", self.page_text().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until the first element matching `css` contains `needle`.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        let started = Instant::now();
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && let Ok(t) = el.text().await
                && t.contains(needle)
            {
                return t;
            }
            if started.elapsed() > WAIT {
                panic!(
                    "no {needle:?} in {css} after {WAIT:?}; page: {}",
                    self.page_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn page_text(&self) -> String {
        self.client
            .execute("return document.body.innerText", vec![])
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Click like a person (WebDriver's click, which refuses an obscured element); when a notice
    /// toast happens to cover the target, dismiss the toasts and try again.
    async fn click(&self, css: &str) {
        self.wait_for(css).await;
        let el = self.client.find(Locator::Css(css)).await.unwrap();
        if el.click().await.is_err() {
            self.js("document.getElementById('notices').replaceChildren()")
                .await;
            let el = self.client.find(Locator::Css(css)).await.unwrap();
            el.click()
                .await
                .unwrap_or_else(|e| panic!("click {css}: {e}"));
        }
    }

    /// Click the link whose text is `text`.
    async fn click_link(&self, text: &str) {
        self.wait_text("main", text).await;
        let el = self
            .client
            .find(Locator::LinkText(text))
            .await
            .unwrap_or_else(|e| panic!("link {text:?}: {e}"));
        el.click()
            .await
            .unwrap_or_else(|e| panic!("click {text:?}: {e}"));
    }

    async fn fill(&self, css: &str, text: &str) {
        self.wait_for(css).await;
        let el = self.client.find(Locator::Css(css)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Wait until exactly `n` elements match `css` (at most [`WAIT`]); the count reached.
    async fn wait_count(&self, css: &str, n: usize) -> usize {
        let started = Instant::now();
        loop {
            let count = self.count(css).await;
            if count == n || started.elapsed() > WAIT {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|v| v.len())
            .unwrap_or(0)
    }

    async fn shot(&self, name: &str) {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn size(&self, w: u32, h: u32) {
        self.client.set_window_size(w, h).await.unwrap();
    }

    /// No horizontal scrolling at `width`: the page is no wider than the window, and no element
    /// inside it scrolls sideways either (a table in a scrolling box counts as scrolling).
    async fn fits(&self, screen: &str, width: u64) {
        let w = self
            .js("return document.documentElement.scrollWidth")
            .await
            .as_u64()
            .unwrap_or(0);
        assert!(
            w <= width,
            "{screen}: the page is {w}px wide at a {width}px window"
        );
        if width >= 640 {
            // Wider screens may scroll a code block or a wide table inside its own box.
            return;
        }
        let inner = self
            .js(r#"
                return Array.from(document.querySelectorAll('body *'))
                  .filter((e) => e.tagName !== 'TEXTAREA' && e.clientWidth > 0
                    && e.scrollWidth > e.clientWidth + 1
                    && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
                  .map((e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}.${e.className} ${e.scrollWidth}>${e.clientWidth}`)
            "#)
            .await;
        assert_eq!(
            inner,
            json!([]),
            "{screen}: elements scroll sideways at {width}px"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// The system under test

struct Env {
    app: TestApp,
    sim: SimulatorHandle,
    org: Uuid,
    user: Uuid,
    token: String,
}

/// The operator's display name: the token carries it as the `name` claim, as the platform's do.
const OPERATOR: &str = "Ada Operator";

async fn env() -> Env {
    env_with(&[]).await
}

/// [`env`] with some application variables overridden (e.g. a short `slice_budget_ms`).
async fn env_with(overrides: &[(&str, &str)]) -> Env {
    let sim = Simulator::start(SimOptions::default()).await.unwrap();
    let mut vars: HashMap<String, String> =
        [("golioth_base_url".to_owned(), sim.base_url())].into();
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let app = harness::spawn_app_with(AppOptions { vars }).await;
    let org = app.seed_org("acme").await;
    let user = app.seed_member(org, "admin").await;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user.to_string(), "exp": chrono::Utc::now().timestamp() + 3600,
                "name": OPERATOR, "email": "ada@example.com"}),
        &jsonwebtoken::EncodingKey::from_secret(harness::JWT_SECRET.as_bytes()),
    )
    .unwrap();
    sim.create_project(ProjectSpec::new(PROJECT, KEY)).unwrap();
    Env {
        app,
        sim,
        org,
        user,
        token,
    }
}

impl Env {
    /// Create a service on the simulator's project through the API.
    async fn service(&self, name: &str) -> Uuid {
        let r = self
            .app
            .post(
                &format!("/api/v1/orgs/{}/services", self.org),
                Some(&self.token),
                &json!({"name": name, "api_key": KEY,
                        "webhook_secret": "whsec-console-test-0123456789",
                        "config": {"project_id": PROJECT, "base_url": self.sim.base_url(),
                                   "match_by_name": true}}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        Uuid::parse_str(r.json()["id"].as_str().unwrap()).unwrap()
    }

    fn link(&self) -> String {
        host::dev::console_link("", &self.token, &self.org.to_string())
    }

    async fn local_name(&self, service: Uuid, external: &str) -> String {
        self.app
            .admin()
            .await
            .query_one(
                "SELECT d.name FROM devices d JOIN device_service_assignments a ON a.device_id = d.id \
                 WHERE a.service_id = $1 AND a.external_device_id = $2",
                &[&service, &external],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn local_devices(&self) -> i64 {
        self.app
            .admin()
            .await
            .query_one("SELECT count(*) FROM devices", &[])
            .await
            .unwrap()
            .get(0)
    }
}

// ------------------------------------------------------------------------------------------------
// Tests

/// The console's files under `/console/...` on either host (the Spin suite's smoke test): the
/// index for the app's paths, a module with its media type, a 404 for an unknown file, and the
/// strict CSP and the other security headers on every answer.
#[tokio::test]
async fn console_is_served_with_its_security_headers() {
    let app = harness::spawn_app().await;
    for path in ["/console", "/console/", "/console/services/new"] {
        let r = app.get(path, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.content_type(), "text/html; charset=utf-8", "{path}");
        assert!(
            r.text()
                .contains(r#"<script type="module" src="/console/app.js"></script>"#),
            "{path}"
        );
        assert_eq!(
            r.headers["content-security-policy"],
            golioth_console::CONTENT_SECURITY_POLICY
        );
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        assert_eq!(r.headers["referrer-policy"], "no-referrer");
        assert_eq!(r.headers["cache-control"], "no-cache");
    }
    assert!(golioth_console::CONTENT_SECURITY_POLICY.contains("script-src 'self';"));
    let js = app.get("/console/app.js", None).await;
    assert_eq!(js.status, 200);
    assert_eq!(js.content_type(), "text/javascript; charset=utf-8");
    assert!(js.text().contains("adoptFragment"));
    assert_eq!(
        js.headers["content-security-policy"],
        golioth_console::CONTENT_SECURITY_POLICY
    );
    let etag = js.headers["etag"].to_str().unwrap().to_owned();
    let again = app
        .send(
            app.client
                .get(format!("{}/console/app.js", app.base_url))
                .header("if-none-match", &etag),
        )
        .await;
    assert_eq!(again.status, 304);
    let css = app.get("/console/app.css", None).await;
    assert_eq!(css.content_type(), "text/css; charset=utf-8");
    let missing = app.get("/console/nope.js", None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.content_type(), "application/problem+json");
    assert_eq!(
        missing.headers["content-security-policy"],
        golioth_console::CONTENT_SECURITY_POLICY
    );
    let post = app.post("/console/", None, &json!({})).await;
    assert_eq!(post.status, 405);
    // The API beside it is untouched: still problem+json 404 for unknown paths.
    assert_eq!(app.get("/consolex", None).await.status, 404);
}

/// The operator's whole flow in Chromium, with a screenshot of each screen.
#[tokio::test]
async fn console_configures_syncs_and_resolves_a_conflict_in_chromium() {
    let Some((driver, chromium)) =
        browser_or_skip("console_configures_syncs_and_resolves_a_conflict_in_chromium")
    else {
        return;
    };
    let e = env().await;
    let ids = e
        .sim
        .seed(
            PROJECT,
            &SeedSpec {
                count: 3,
                name_prefix: "cf".into(),
                ..SeedSpec::default()
            },
        )
        .unwrap();
    let b = Browser::start(&driver, &chromium, &e.app.base_url).await;
    b.size(1280, 1000).await;

    // Sign in from the fragment: the token moves to sessionStorage and leaves the address bar.
    b.goto(&e.link()).await;
    b.wait_text("main h1", "Services").await;
    let url = b.client.current_url().await.unwrap();
    assert_eq!(url.path(), "/console/services");
    assert!(url.fragment().is_none(), "{url}");
    assert_eq!(
        b.js("return sessionStorage.getItem('golioth-sync.token')")
            .await,
        json!(e.token)
    );
    b.wait_text("main", "No services yet").await;
    // The header names the user and the organization (GET /api/v1/me), not their ids.
    assert_eq!(b.wait_text("#who-user", OPERATOR).await, OPERATOR);
    b.wait_text("#who-org", "acme").await;
    assert_eq!(
        b.count("#org-switch").await,
        0,
        "one organization: nothing to switch"
    );
    b.screen("services-empty", &[]).await;

    // Create a service: client-side validation first, then the server's answer.
    b.click("a[href='/console/services/new']").await;
    b.wait_for("#service-form").await;
    b.fill("input[name=name]", "prod").await;
    b.fill("input[name=project_id]", "not a project id").await;
    b.fill("input[name=base_url]", &e.sim.base_url()).await;
    b.fill("input[name=api_key]", KEY).await;
    b.fill("input[name=webhook_secret]", "short").await;
    b.click("#service-form button[type=submit]").await;
    let err = b
        .wait_text("input[name=project_id] ~ .error", "project_id must be")
        .await;
    assert!(err.contains("[A-Za-z0-9_-]"), "{err}");
    b.wait_text(
        "input[name=webhook_secret] ~ .error",
        "webhook_secret must be 16-256",
    )
    .await;
    b.fill("input[name=project_id]", PROJECT).await;
    b.fill(
        "input[name=webhook_secret]",
        "whsec-console-test-0123456789",
    )
    .await;
    b.click("input[name=match_by_name]").await;
    b.screen("service-new", &[]).await;
    b.click("#service-form button[type=submit]").await;
    b.wait_text("#notices", "Service created").await;
    b.wait_text("main h1", "prod").await;
    let url = b.client.current_url().await.unwrap();
    let service: Uuid = url
        .path()
        .trim_start_matches("/console/services/")
        .parse()
        .unwrap_or_else(|_| panic!("{url}"));
    let api = e
        .app
        .get(
            &format!("/api/v1/orgs/{}/services/{service}", e.org),
            Some(&e.token),
        )
        .await;
    assert_eq!(api.status, 200);
    let svc = api.json();
    assert_eq!(svc["config"]["project_id"], PROJECT);
    assert_eq!(svc["config"]["match_by_name"], true);
    assert_eq!(svc["credentials"]["api_key_last4"], "abcd");
    // Write-only secrets show as "set, …last4"; the webhook URL and a ready Pipeline YAML.
    let placeholder = b
        .client
        .find(Locator::Css("input[name=api_key]"))
        .await
        .unwrap()
        .attr("placeholder")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(placeholder, "set, …abcd");
    let yaml = b
        .client
        .find(Locator::Css("#pipeline-json"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        yaml.contains(&format!(
            "url: {}/webhooks/golioth/{service}",
            e.app.base_url
        )),
        "{yaml}"
    );
    assert!(yaml.contains("x-webhook-token: $WEBHOOK_TOKEN"), "{yaml}");
    b.click("#test-connection").await;
    b.wait_text("#notices", "Connection OK").await;
    b.screen("service-edit", &[]).await;

    // A server-side problem is shown with its problem+json title and detail.
    b.fill("input[name=base_url]", "https://evil.example").await;
    b.click("#service-form button[type=submit]").await;
    b.wait_text(
        "#form-problem",
        "base_url must be one of the allowed Golioth hosts",
    )
    .await;
    b.no_console_errors("service-refused", &["status of 422"])
        .await;
    b.goto(&format!("/console/services/{service}")).await;
    b.wait_text("main h1", "prod").await;

    // Dry run first: planned changes per device and side, nothing written.
    b.click("a[data-nav=services]").await;
    b.wait_for("#services-table").await;
    b.click(&format!(
        "tr[data-service='{service}'] a[href^='/console/sync']"
    ))
    .await;
    b.wait_for("#dry-run").await;
    b.click("#op-bidirectional").await;
    b.click("#dry-run").await;
    b.wait_text("#run-panel h2", "Dry run").await;
    b.wait_for("#run-panel[data-status=completed]").await;
    assert_eq!(b.count("#run-details tbody tr").await, 3);
    let details = b.wait_text("#run-details", "planned").await;
    assert!(details.contains("create"), "{details}");
    assert_eq!(e.local_devices().await, 0, "a dry run writes nothing");
    // The link column says what happens to the link, in words.
    let links = b.wait_for("#run-details").await;
    assert!(links.contains("links to Golioth"), "{links}");
    assert!(!links.contains("link: link"), "{links}");
    b.screen("sync-dry-run", &[]).await;

    // Apply: the real run, with the device count.
    b.click("#apply-run").await;
    b.wait_text("#run-panel h2", "Run").await;
    b.wait_for("#run-panel[data-status=completed]").await;
    let created = b.wait_for("[data-count=created_local] dd").await;
    assert_eq!(created, "3");
    assert_eq!(b.wait_for("[data-count=processed] dd").await, "3");
    b.wait_text("#notices", "Sync completed").await;
    assert_eq!(e.local_devices().await, 3);
    b.screen("sync-run", &[]).await;
    let run_id = b
        .client
        .find(Locator::Css("#run-panel"))
        .await
        .unwrap()
        .attr("data-run")
        .await
        .unwrap()
        .unwrap_or_default();

    // Concurrent edits: the platform and the Golioth console rename the same device (two devices).
    let ext = ids[1].clone();
    let ext2 = ids[2].clone();
    let original = e.sim.device(PROJECT, &ext).unwrap().name;
    for (id, local, remote) in [
        (&ext, "local-name", "remote-name"),
        (&ext2, "local-2", "remote-2"),
    ] {
        e.app
            .admin()
            .await
            .execute(
                "UPDATE devices d SET name = $2 FROM device_service_assignments a \
                 WHERE a.device_id = d.id AND a.external_device_id = $1",
                &[id, &local],
            )
            .await
            .unwrap();
        e.sim
            .console_patch_device(PROJECT, id, &json!({ "name": remote }))
            .unwrap();
    }
    b.click("#dry-run").await;
    b.wait_text("#run-panel h2", "Dry run").await;
    b.wait_for("#run-panel[data-status=completed]").await;
    b.wait_text("#run-details", "name").await;
    b.click("#apply-run").await;
    b.wait_text("#run-panel h2", "Run").await;
    b.wait_for("#run-panel[data-status=completed]").await;
    assert_eq!(b.wait_for("[data-count=conflicts] dd").await, "2");

    // The conflict view: counts, then the device with base / local / Golioth side by side.
    b.click("a[data-nav=conflicts]").await;
    b.wait_for("#pending-table").await;
    b.wait_text("#conflict-counts", "2 pending conflicts").await;
    b.wait_text("#conflict-counts", "prod: 2").await;
    b.wait_text("#conflict-counts", "name: 2").await;
    b.screen("conflicts", &[]).await;
    b.click_link("local-name").await;
    b.wait_for(".conflict[data-field=name]").await;
    assert_eq!(b.wait_for(".conflict .side.base code").await, original);
    assert_eq!(b.wait_for(".conflict .side.local code").await, "local-name");
    assert_eq!(
        b.wait_for(".conflict .side.remote code").await,
        "remote-name"
    );
    b.screen("conflict-device", &[]).await;
    // Resolve with a custom value (typed, validated, sent).
    let input = "[id^=custom-]";
    b.fill(input, "chosen-name").await;
    b.click(".conflict [data-resolve=custom]").await;
    b.wait_text("#notices", "Resolved with a custom value")
        .await;
    b.wait_for("#device-clear").await;
    let by = b.wait_for("#device-resolved .resolved-by").await;
    assert!(by.starts_with("you"), "{by}");
    b.screen("conflict-resolved", &[]).await;

    // Bulk resolve the other one after a preview of what each side will hold.
    b.click("a[data-nav=conflicts]").await;
    b.wait_text("#conflict-counts", "1 pending conflict").await;
    b.click("#sel-all").await;
    b.client
        .find(Locator::Css("#bulk-resolution"))
        .await
        .unwrap()
        .select_by_value("remote")
        .await
        .unwrap();
    b.click("#bulk-preview").await;
    let preview = b.wait_text("#bulk-preview-out", "Both become").await;
    assert!(
        preview.contains("local-2") && preview.contains("remote-2"),
        "{preview}"
    );
    assert_eq!(
        b.wait_for("#bulk-preview-out .val.chosen").await,
        "remote-2"
    );
    assert_eq!(
        e.local_name(service, &ext2).await,
        "local-2",
        "a preview writes nothing"
    );
    b.screen("conflicts-bulk-preview", &[]).await;
    b.click("#bulk-confirm").await;
    b.wait_text("#notices", "1 resolved, 0 failed").await;
    b.wait_for("#no-conflicts").await;

    // Both sides converge: the queued device refresh carries the choice to Golioth.
    let r = e
        .app
        .request("POST", "/internal/tick", Some(INTERNAL_TOKEN), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(e.local_name(service, &ext).await, "chosen-name");
    assert_eq!(e.sim.device(PROJECT, &ext).unwrap().name, "chosen-name");
    assert_eq!(e.local_name(service, &ext2).await, "remote-2");
    assert_eq!(e.sim.device(PROJECT, &ext2).unwrap().name, "remote-2");
    let resolved = e
        .app
        .get(
            &format!("/api/v1/orgs/{}/conflicts?status=resolved", e.org),
            Some(&e.token),
        )
        .await
        .json();
    let items = resolved["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{resolved}");
    let custom = items
        .iter()
        .find(|c| c["external_device_id"] == json!(ext))
        .unwrap();
    assert_eq!(custom["resolved_value"], "chosen-name");
    assert_eq!(custom["resolution_strategy"], "custom");
    let pending = e
        .app
        .get(
            &format!("/api/v1/orgs/{}/conflicts?status=pending", e.org),
            Some(&e.token),
        )
        .await
        .json();
    assert_eq!(pending["items"], json!([]));
    let after = e
        .app
        .post(
            &format!("/api/v1/orgs/{}/services/{service}/sync", e.org),
            Some(&e.token),
            &json!({"operation": "bidirectional"}),
        )
        .await
        .json();
    assert_eq!(after["status"], "completed", "{after}");
    assert_eq!(after["summary"]["conflicts"], 0, "{after}");

    // Resolved conflicts list who resolved them and when.
    b.goto("/console/conflicts?status=resolved").await;
    b.wait_for("#resolved-table").await;
    b.wait_text("#resolved-table .resolved-by", "you").await;

    // History: runs and the sync log, filtered and paged.
    b.click("a[data-nav=history]").await;
    b.wait_for("table.runs").await;
    assert!(b.count("table.runs tbody tr").await >= 5);
    b.wait_text("table.runs", "dry run").await;
    b.screen("history-runs", &[]).await;
    b.client
        .find(Locator::Css("#f-status"))
        .await
        .unwrap()
        .select_by_value("completed")
        .await
        .unwrap();
    b.click(".filters button[type=submit]").await;
    b.wait_text("table.runs", "completed").await;
    b.click("a.tab[href^='/console/history?tab=log']").await;
    b.wait_for("table.log").await;
    b.wait_text("table.log", "local created").await;
    b.screen("history-log", &[]).await;

    // The services list after the syncs: last sync and success rate from the stats endpoint.
    b.click("a[data-nav=services]").await;
    b.wait_text("#services-table .rate", "100%").await;
    b.wait_text("#services-table .last-sync", "completed").await;
    b.screen("services", &[]).await;

    // A run's own page (polled while active; finished here).
    b.goto(&format!("/console/runs/{run_id}")).await;
    b.wait_for("#run-panel[data-status=completed]").await;
    b.wait_text("main h1", "Run of prod").await;
    b.screen("run-detail", &[]).await;

    // A phone: the sync screen with a dry run done at 375 px.
    b.size(375, 812).await;
    b.goto(&format!("/console/sync?service={service}")).await;
    b.click("#dry-run").await;
    b.wait_for("#run-panel[data-status=completed]").await;
    b.check("phone-sync", &[]).await;
    b.size(1280, 1000).await;

    // A member of a second organization switches to it by name, without pasting its id.
    let globex = e.app.seed_org("globex").await;
    e.app
        .admin()
        .await
        .execute(
            "INSERT INTO organization_members (organization_id, user_id, role) VALUES ($1, $2, 'viewer')",
            &[&globex, &e.user],
        )
        .await
        .unwrap();
    b.goto(&e.link()).await;
    b.wait_for("#org-switch").await;
    let options = b.wait_text("#org-switch", "globex").await;
    assert!(
        options.contains("acme (admin)") && options.contains("globex (viewer)"),
        "{options}"
    );
    b.client
        .find(Locator::Css("#org-switch"))
        .await
        .unwrap()
        .select_by_value(&globex.to_string())
        .await
        .unwrap();
    b.wait_text("#notices", "Switched organization").await;
    b.wait_text("main", "No services yet").await;
    assert_eq!(
        b.js("return sessionStorage.getItem('golioth-sync.org')")
            .await,
        json!(globex.to_string())
    );
    b.screen("org-switch", &[]).await;
    b.finish().await;
}

/// Expired, forged and foreign tokens each explain themselves on the sign-in screen.
#[tokio::test]
async fn console_explains_token_problems_in_chromium() {
    let Some((driver, chromium)) = browser_or_skip("console_explains_token_problems_in_chromium")
    else {
        return;
    };
    let e = env().await;
    let b = Browser::start(&driver, &chromium, &e.app.base_url).await;
    let user = Uuid::new_v4();
    // Expired: refused before any request.
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user.to_string(), "exp": chrono::Utc::now().timestamp() - 60}),
        &jsonwebtoken::EncodingKey::from_secret(harness::JWT_SECRET.as_bytes()),
    )
    .unwrap();
    b.goto(&host::dev::console_link("", &expired, &e.org.to_string()))
        .await;
    b.wait_text("#signin-reason", "expired").await;
    b.screen("sign-in-expired", &[]).await;
    // Signed with another secret: the server's 401, explained.
    let forged = harness::mint_jwt(
        "another-secret-0123456789abcdef",
        &user.to_string(),
        Duration::from_secs(600),
    )
    .unwrap();
    b.goto(&host::dev::console_link("", &forged, &e.org.to_string()))
        .await;
    b.wait_text("#signin-reason", "refused the token").await;
    b.no_console_errors("sign-in-forged", &["status of 401"])
        .await;
    // Valid, but not a member of the organization.
    b.goto(&host::dev::console_link(
        "",
        &e.app.jwt(user),
        &e.org.to_string(),
    ))
    .await;
    b.wait_text("#signin-reason", "not a member").await;
    b.no_console_errors("sign-in-not-member", &["status of 404"])
        .await;
    // Pasting a valid token signs in; without an organization id, into the user's first one
    // (GET /api/v1/me), named in the header.
    b.fill("#main textarea", &e.token).await;
    b.fill("#main input[type=text]", "").await;
    b.screen("sign-in", &[]).await;
    b.click("#main button[type=submit]").await;
    b.wait_text("main h1", "Services").await;
    b.wait_text("#notices", "Signed in").await;
    b.wait_text("#who-org", "acme").await;
    assert_eq!(
        b.js("return sessionStorage.getItem('golioth-sync.org')")
            .await,
        json!(e.org.to_string())
    );
    b.no_console_errors("signed-in", &[]).await;
    b.finish().await;
}

/// The flows the operator's day does not reach: cancelling a running sync, paging through the
/// history and filtering runs and the log by status and time on the server, the copy buttons,
/// and deleting a service after its confirmation.
#[tokio::test]
async fn console_cancels_pages_copies_and_deletes_in_chromium() {
    let Some((driver, chromium)) =
        browser_or_skip("console_cancels_pages_copies_and_deletes_in_chromium")
    else {
        return;
    };
    // Short slices, so a slow Golioth leaves the run unfinished after the first request.
    let e = env_with(&[("slice_budget_ms", "200")]).await;
    e.sim
        .seed(
            PROJECT,
            &SeedSpec {
                count: 3,
                name_prefix: "cx".into(),
                ..SeedSpec::default()
            },
        )
        .unwrap();
    let service = e.service("ops").await;
    let b = Browser::start(&driver, &chromium, &e.app.base_url).await;
    b.size(1280, 1000).await;
    b.goto(&e.link()).await;
    b.wait_text("main h1", "Services").await;

    // Cancel a running sync: the dry run is quick, the real run meets a slow Golioth.
    b.goto(&format!("/console/sync?service={service}")).await;
    b.click("#op-import").await;
    b.click("#dry-run").await;
    b.wait_for("#run-panel[data-status=completed]").await;
    e.sim.set_latency(Duration::from_secs(3));
    b.click("#apply-run").await;
    b.wait_for("#run-panel #cancel-run").await;
    assert_eq!(
        b.wait_for("#apply-run[aria-busy=true]").await,
        "Syncing…",
        "the button is busy while the run is followed"
    );
    b.click("#cancel-run").await;
    b.wait_text("#notices", "Run cancelled").await;
    b.wait_for("#run-panel[data-status=cancelled]").await;
    let run_id = b
        .client
        .find(Locator::Css("#run-panel"))
        .await
        .unwrap()
        .attr("data-run")
        .await
        .unwrap()
        .unwrap_or_default();
    e.sim.set_latency(Duration::ZERO);
    let run = e
        .app
        .get(
            &format!("/api/v1/orgs/{}/sync-runs/{run_id}", e.org),
            Some(&e.token),
        )
        .await
        .json();
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["dry_run"], false, "{run}");
    b.check("sync-cancelled", &[]).await;

    // History: 40 more runs an hour or more ago, and log entries, so there are pages to turn.
    let admin = e.app.admin().await;
    admin
        .execute(
            "INSERT INTO sync_runs (organization_id, service_id, operation, status, created_at, \
                 started_at, finished_at) \
             SELECT $1, $2, 'import', CASE WHEN i % 4 = 0 THEN 'failed' ELSE 'completed' END, \
                    date_trunc('minute', now()) - interval '1 hour' - i * interval '1 minute', \
                    date_trunc('minute', now()) - interval '1 hour' - i * interval '1 minute', \
                    date_trunc('minute', now()) - interval '1 hour' - i * interval '1 minute' + interval '2 seconds' \
             FROM generate_series(1, 40) AS i",
            &[&e.org, &service],
        )
        .await
        .unwrap();
    admin
        .execute(
            "INSERT INTO golioth_sync_log (organization_id, service_id, operation, status, details, created_at) \
             SELECT $1, $2, 'remote_updated', CASE WHEN i % 5 = 0 THEN 'error' ELSE 'success' END, \
                    jsonb_build_object('n', i), now() - i * interval '1 minute' \
             FROM generate_series(1, 30) AS i",
            &[&e.org, &service],
        )
        .await
        .unwrap();
    let total_runs: i64 = admin
        .query_one(
            "SELECT count(*) FROM sync_runs WHERE service_id = $1",
            &[&service],
        )
        .await
        .unwrap()
        .get(0);
    b.goto(&format!("/console/history?service={service}")).await;
    b.wait_for("table.runs[data-page='1']").await;
    assert_eq!(b.count("table.runs tbody tr").await, 25);
    b.screen("history-page-1", &[]).await;
    b.click("#older").await;
    b.wait_for("table.runs[data-page='2']").await;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        if b.count("#older:not([hidden])").await == 0 {
            break;
        }
        let pages = b.count("table.runs").await;
        b.click("#older").await;
        b.wait_for(&format!("table.runs[data-page='{}']", pages + 1))
            .await;
    }
    let ids = b
        .js("return Array.from(document.querySelectorAll('table.runs tbody tr')).map((r) => r.dataset.run)")
        .await;
    for id in ids.as_array().unwrap() {
        assert!(seen.insert(id.as_str().unwrap().to_owned()), "{id} twice");
    }
    assert_eq!(
        seen.len() as i64,
        total_runs,
        "every run once, over the pages"
    );
    assert!(seen.contains(&run_id));

    // Runs filtered by status and time on the server: failed runs between 90 and 61 minutes ago.
    let window = |minutes: i64| {
        (chrono::Utc::now() - chrono::Duration::minutes(minutes))
            .format("%Y-%m-%dT%H:%M:00Z")
            .to_string()
    };
    let (since, until) = (window(90), window(61));
    let expected: i64 = admin
        .query_one(
            "SELECT count(*) FROM sync_runs WHERE service_id = $1 AND status = 'failed' \
               AND created_at >= $2::text::timestamptz AND created_at < $3::text::timestamptz",
            &[&service, &since, &until],
        )
        .await
        .unwrap()
        .get(0);
    assert!(expected > 0);
    b.goto(&format!(
        "/console/history?service={service}&status=failed&since={since}&until={until}"
    ))
    .await;
    b.wait_for("table.runs").await;
    assert_eq!(b.count("table.runs tbody tr").await as i64, expected);
    assert_eq!(
        b.count("table.runs tbody tr .badge.s-failed").await as i64,
        expected
    );
    b.screen("history-filtered", &[]).await;
    // The log filtered by status on the server.
    b.goto(&format!(
        "/console/history?tab=log&service={service}&status=error"
    ))
    .await;
    b.wait_for("table.log").await;
    let errors: i64 = admin
        .query_one(
            "SELECT count(*) FROM golioth_sync_log WHERE service_id = $1 AND status = 'error'",
            &[&service],
        )
        .await
        .unwrap()
        .get(0);
    assert!(errors >= 6, "{errors}");
    assert_eq!(b.count("table.log tbody tr").await as i64, errors);
    assert_eq!(
        b.count("table.log tbody tr .badge.s-error").await as i64,
        errors
    );
    b.no_console_errors("history-log-filtered", &[]).await;

    // The copy buttons put the webhook URL and the pipelines on the clipboard (or, when the
    // browser refuses clipboard access, select the text for the person to copy).
    let sid = b.client.session_id().await.unwrap().unwrap_or_default();
    for name in ["clipboard-read", "clipboard-write"] {
        let _ = reqwest::Client::new()
            .post(format!("{}/session/{sid}/permissions", b.driver_url))
            .json(&json!({"descriptor": {"name": name}, "state": "granted"}))
            .send()
            .await;
    }
    b.goto(&format!("/console/services/{service}")).await;
    b.wait_for("#copy-url").await;
    let url = format!("{}/webhooks/golioth/{service}", e.app.base_url);
    for (button, source) in [
        ("#copy-url", "#webhook-url"),
        ("#copy-pipeline-json", "#pipeline-json"),
        ("#copy-pipeline-cbor", "#pipeline-cbor"),
    ] {
        b.js("document.getElementById('notices').replaceChildren()")
            .await;
        b.click(button).await;
        let notice = b.wait_for("#notices .notice").await;
        let want = b
            .js(&format!(
                "const e = document.querySelector('{source}'); return e.value !== undefined && e.tagName === 'INPUT' ? e.value : e.textContent"
            ))
            .await;
        let want = want.as_str().unwrap().to_owned();
        if button == "#copy-url" {
            assert_eq!(want, url);
        } else {
            assert!(want.contains(&format!("url: {url}")), "{want}");
        }
        let got = if notice.contains("Copied to the clipboard") {
            b.client
                .execute_async(
                    "const done = arguments[0]; navigator.clipboard.readText().then(done, (e) => done('unreadable: ' + e));",
                    vec![],
                )
                .await
                .unwrap()
        } else {
            assert!(notice.contains("Select and copy"), "{notice}");
            b.js(&format!(
                "const e = document.querySelector('{source}'); return e.tagName === 'INPUT' ? e.value.substring(e.selectionStart, e.selectionEnd) : String(window.getSelection())"
            ))
            .await
        };
        assert_eq!(got, json!(want), "{button}: {notice}");
    }
    b.no_console_errors("copy", &[]).await;

    // Notices: at most three at once; successes leave by themselves after a few seconds, errors
    // stay until dismissed.
    b.js("document.getElementById('notices').replaceChildren()")
        .await;
    for _ in 0..4 {
        b.click("#test-connection").await;
        b.wait_text("#test-connection", "Test connection").await;
    }
    b.wait_text("#notices", "Connection OK").await;
    assert_eq!(
        b.count("#notices .notice").await,
        3,
        "at most three notices"
    );
    b.fill("input[name=name]", "").await;
    b.click("#service-form button[type=submit]").await;
    b.wait_text("#notices .notice.error", "Check the form")
        .await;
    assert_eq!(b.count("#notices .notice").await, 3);
    assert_eq!(
        b.count("#notices .notice.ok").await,
        2,
        "the oldest success made room"
    );
    assert_eq!(
        b.wait_count("#notices .notice.ok", 0).await,
        0,
        "successes leave by themselves"
    );
    assert_eq!(b.count("#notices .notice.error").await, 1, "errors stay");
    b.click("#notices .notice.error .dismiss").await;
    assert_eq!(b.count("#notices .notice").await, 0);
    b.no_console_errors("notices", &[]).await;
    b.goto(&format!("/console/services/{service}")).await;
    b.wait_for("#delete-service").await;

    // Delete, with a confirmation first: "Keep it" keeps it.
    b.click("#delete-service").await;
    b.wait_for("#delete-confirm:not([hidden])").await;
    assert!(
        b.focused("#delete-no").await,
        "the safe choice has the focus"
    );
    b.screen("service-delete-confirm", &[]).await;
    b.click("#delete-no").await;
    b.wait_for("#delete-confirm[hidden]").await;
    let r = e
        .app
        .get(
            &format!("/api/v1/orgs/{}/services/{service}", e.org),
            Some(&e.token),
        )
        .await;
    assert_eq!(r.status, 200);
    b.click("#delete-service").await;
    b.click("#delete-yes").await;
    b.wait_text("#notices", "Service deleted").await;
    b.wait_text("main", "No services yet").await;
    let r = e
        .app
        .get(
            &format!("/api/v1/orgs/{}/services/{service}", e.org),
            Some(&e.token),
        )
        .await;
    assert_eq!(r.status, 404);
    b.no_console_errors("service-deleted", &[]).await;
    b.finish().await;
}

/// Conflicts on a whole device, as the engine records them: an identity conflict (a Golioth
/// device with two local candidates) resolved by linking one candidate, another by creating a
/// local device, and a delete-vs-modify conflict resolved by keeping the platform's device. The
/// bulk preview comes from the server (a dry run) and says which of the selection would fail.
#[tokio::test]
async fn console_resolves_identity_and_delete_vs_modify_conflicts_in_chromium() {
    let Some((driver, chromium)) =
        browser_or_skip("console_resolves_identity_and_delete_vs_modify_conflicts_in_chromium")
    else {
        return;
    };
    let e = env().await;
    let service = e.service("fleet").await;
    let admin = e.app.admin().await;
    let device = |name: &'static str| {
        let admin = &admin;
        let org = e.org;
        async move {
            admin
                .query_one(
                    "INSERT INTO devices (organization_id, name, hardware_ids) VALUES ($1, $2, '{hw1}') RETURNING id",
                    &[&org, &name],
                )
                .await
                .unwrap()
                .get::<_, Uuid>(0)
        }
    };
    let twin_a = device("twin-a").await;
    let twin_b = device("twin-b").await;
    let edited = device("edited").await;
    let ext = |n: usize| format!("{n:024x}");
    let conflict = |dev: Option<Uuid>,
                    external: String,
                    field: &'static str,
                    kind: &'static str,
                    values: [Option<Value>; 3]| {
        let admin = &admin;
        let org = e.org;
        async move {
            let [base, local, remote] = values;
            admin
                .query_one(
                    "INSERT INTO device_conflicts (organization_id, service_id, device_id, external_device_id, \
                         field_name, conflict_type, base_value, local_value, remote_value, \
                         local_updated_at, remote_updated_at, detected_run_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() - interval '1 minute', now(), \
                             gen_random_uuid()) RETURNING id",
                    &[&org, &service, &dev, &external, &field, &kind, &base, &local, &remote],
                )
                .await
                .unwrap()
                .get::<_, Uuid>(0)
        }
    };
    let candidates = json!([
        {"id": twin_a, "name": "twin-a", "hardware_ids": ["hw1"]},
        {"id": twin_b, "name": "twin-b", "hardware_ids": ["hw1"]},
    ]);
    let identity = |n: usize| {
        conflict(
            None,
            ext(n),
            "identity",
            "identity",
            [
                None,
                Some(candidates.clone()),
                Some(
                    json!({"id": ext(n), "name": format!("golioth-{n}"), "hardware_ids": ["hw1"]}),
                ),
            ],
        )
    };
    let linked = identity(1).await;
    let created = identity(2).await;
    let values = |name: &str| {
        json!({"name": name, "enabled": true, "tags": [], "hardware_ids": ["hw1"],
               "blueprint_id": null, "cohort_id": null})
    };
    admin
        .execute(
            "INSERT INTO device_service_assignments \
                 (organization_id, device_id, service_id, external_device_id, base, sync_status) \
             VALUES ($1, $2, $3, $4, $5, 'conflict')",
            &[&e.org, &edited, &service, &ext(3), &values("old")],
        )
        .await
        .unwrap();
    let dvm = conflict(
        Some(edited),
        ext(3),
        "device",
        "delete_vs_modify",
        [Some(values("old")), Some(values("edited")), None],
    )
    .await;

    let b = Browser::start(&driver, &chromium, &e.app.base_url).await;
    b.size(1280, 1000).await;
    b.goto(&e.link()).await;
    b.wait_text("main h1", "Services").await;
    b.click("a[data-nav=conflicts]").await;
    b.wait_for("#pending-table").await;
    b.wait_text("#conflict-counts", "3 pending conflicts").await;
    b.wait_text("#conflict-counts", "identity: 2").await;

    // The server's bulk preview: identity conflicts cannot be resolved in bulk with "local", the
    // delete-vs-modify one can; nothing is written.
    b.click(&format!("#sel-{dvm}")).await;
    b.client
        .find(Locator::Css("#bulk-resolution"))
        .await
        .unwrap()
        .select_by_value("local")
        .await
        .unwrap();
    b.click("#bulk-preview").await;
    b.wait_text("#bulk-preview-summary", "1 would be resolved, 0 would fail")
        .await;
    b.wait_text("#bulk-preview-table", "keep the local device")
        .await;
    let pending: i64 = admin
        .query_one(
            "SELECT count(*) FROM device_conflicts WHERE resolution_status = 'pending'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 3, "a preview writes nothing");
    b.screen("conflicts-bulk-preview-device", &[]).await;
    b.click("#bulk-cancel").await;

    // Identity: link the Golioth device to one of the two local candidates.
    b.click(&format!("a[href='/console/conflicts/{linked}']"))
        .await;
    b.wait_for(&format!(".conflict[data-conflict='{linked}']"))
        .await;
    b.wait_text("main h1", &format!("Golioth {}", ext(1))).await;
    b.screen("conflict-identity", &[]).await;
    b.client
        .find(Locator::Css(&format!("#link-{linked}")))
        .await
        .unwrap()
        .select_by_value(&twin_b.to_string())
        .await
        .unwrap();
    b.click(".conflict [data-resolve=link]").await;
    b.wait_text("#notices", "Linked").await;
    b.wait_text(".conflict .resolved-by", "link").await;
    let link: (Option<String>, Option<Value>) = {
        let r = admin
            .query_one(
                "SELECT external_device_id, base FROM device_service_assignments WHERE device_id = $1",
                &[&twin_b],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(link, (Some(ext(1)), None), "linked, first sync next");

    // Identity: create a new local device for the other one.
    b.goto(&format!("/console/conflicts/{created}")).await;
    b.click(".conflict [data-resolve=create]").await;
    b.wait_text("#notices", "Created a local device").await;
    let made: String = admin
        .query_one(
            "SELECT d.name FROM devices d JOIN device_service_assignments a ON a.device_id = d.id \
             WHERE a.external_device_id = $1",
            &[&ext(2)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(made, "golioth-2");

    // Delete-vs-modify: Golioth deleted it, the platform edited it; keep the platform's device.
    b.goto(&format!("/console/conflicts/device/{edited}")).await;
    b.wait_for(".conflict[data-field=device]").await;
    b.screen("conflict-delete-vs-modify", &[]).await;
    b.click(".conflict [data-resolve=local]").await;
    b.wait_text("#notices", "Resolved: local value kept").await;
    b.wait_for("#device-clear").await;
    let reset: (Option<String>, Option<Value>) = {
        let r = admin
            .query_one(
                "SELECT external_device_id, base FROM device_service_assignments WHERE device_id = $1",
                &[&edited],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        reset,
        (None, None),
        "the next sync creates it in Golioth again"
    );
    let statuses: Vec<(String, Option<String>)> = admin
        .query(
            "SELECT resolution_status, resolution_strategy FROM device_conflicts \
             WHERE id = ANY($1) ORDER BY array_position($1, id)",
            &[&vec![linked, created, dvm]],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        statuses,
        [
            ("resolved", "link"),
            ("resolved", "create"),
            ("resolved", "local")
        ]
        .map(|(a, b)| (a.to_owned(), Some(b.to_owned())))
        .to_vec()
    );
    b.goto("/console/conflicts").await;
    b.wait_for("#no-conflicts").await;
    b.no_console_errors("conflicts-done", &[]).await;
    b.finish().await;
}

/// Keyboard only, in the page's own focus order: the skip link first, then create a service,
/// dry-run, apply, and resolve the conflict a concurrent edit made. Every control is reached with
/// Tab / Shift+Tab and used with the keyboard (typing, Space, Enter); nothing is clicked.
#[tokio::test]
async fn console_is_usable_by_keyboard_alone_in_chromium() {
    let Some((driver, chromium)) =
        browser_or_skip("console_is_usable_by_keyboard_alone_in_chromium")
    else {
        return;
    };
    let e = env().await;
    let ids = e
        .sim
        .seed(
            PROJECT,
            &SeedSpec {
                count: 2,
                name_prefix: "kb".into(),
                ..SeedSpec::default()
            },
        )
        .unwrap();
    let b = Browser::start(&driver, &chromium, &e.app.base_url).await;
    b.size(1280, 1000).await;
    b.goto(&e.link()).await;
    b.wait_text("main h1", "Services").await;
    // From the top of the page, Tab reaches the skip link first.
    b.keys(TAB).await;
    assert!(
        b.focused("a.skip").await,
        "the first Tab stop is the skip link"
    );

    // Create a service.
    b.tab_to("a[href='/console/services/new']", false).await;
    b.keys(ENTER).await;
    b.wait_for("#service-form").await;
    let sim_url = e.sim.base_url();
    for (css, text) in [
        ("input[name=name]", "keys"),
        ("input[name=project_id]", PROJECT),
        ("input[name=base_url]", sim_url.as_str()),
        ("input[name=api_key]", KEY),
        (
            "input[name=webhook_secret]",
            "whsec-console-test-0123456789",
        ),
    ] {
        b.tab_to(css, false).await;
        b.keys(text).await;
    }
    b.tab_to("input[name=match_by_name]", false).await;
    b.keys(" ").await;
    assert_eq!(
        b.js("return document.querySelector('input[name=match_by_name]').checked")
            .await,
        json!(true)
    );
    b.tab_to("#service-form button[type=submit]", false).await;
    b.keys(ENTER).await;
    b.wait_text("#notices", "Service created").await;
    b.wait_text("main h1", "keys").await;

    // Dry run, then apply, from the service's page.
    b.tab_to("main a.button[href^='/console/sync']", false)
        .await;
    b.keys(ENTER).await;
    b.wait_for("#dry-run").await;
    b.tab_to("#dry-run", false).await;
    b.keys(ENTER).await;
    b.wait_for("#run-panel[data-status=completed]").await;
    b.wait_text("#run-panel h2", "Dry run").await;
    assert!(
        b.focused("#apply-run").await,
        "Apply has the focus after a dry run"
    );
    b.keys(ENTER).await;
    b.wait_text("#run-panel h2", "Run").await;
    b.wait_for("#run-panel[data-status=completed]").await;
    assert_eq!(b.wait_for("[data-count=created_local] dd").await, "2");
    b.no_console_errors("keyboard-sync", &[]).await;

    // A concurrent edit on both sides, synced again by keyboard, becomes a conflict.
    e.app
        .admin()
        .await
        .execute(
            "UPDATE devices d SET name = 'kb-local' FROM device_service_assignments a \
             WHERE a.device_id = d.id AND a.external_device_id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap();
    e.sim
        .console_patch_device(PROJECT, &ids[0], &json!({"name": "kb-remote"}))
        .unwrap();
    b.tab_to("#dry-run", true).await;
    b.keys(ENTER).await;
    b.wait_text("#run-panel h2", "Dry run").await;
    b.wait_for("#run-panel[data-status=completed]").await;
    assert!(b.focused("#apply-run").await);
    b.keys(ENTER).await;
    b.wait_text("#run-panel h2", "Run").await;
    b.wait_for("#run-panel[data-status=completed]").await;
    assert_eq!(b.wait_for("[data-count=conflicts] dd").await, "1");

    // Resolve it: back to the navigation, the conflicts, the device, "Keep local".
    b.tab_to("a[data-nav=conflicts]", true).await;
    b.keys(ENTER).await;
    b.wait_for("#pending-table").await;
    b.tab_to(
        "#pending-table a[href^='/console/conflicts/device/']",
        false,
    )
    .await;
    b.keys(ENTER).await;
    b.wait_for(".conflict[data-field=name]").await;
    b.tab_to(".conflict [data-resolve=local]", false).await;
    b.keys(ENTER).await;
    b.wait_text("#notices", "Resolved: local value kept").await;
    b.wait_for("#device-clear").await;
    let name: String = e
        .app
        .admin()
        .await
        .query_one(
            "SELECT d.name FROM devices d JOIN device_service_assignments a ON a.device_id = d.id \
             WHERE a.external_device_id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "kb-local");
    b.no_console_errors("keyboard-resolve", &[]).await;
    b.finish().await;
}
