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
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use harness::{AppOptions, INTERNAL_TOKEN, TestApp};
use host::simulator::{ProjectSpec, SeedSpec, SimOptions, Simulator, SimulatorHandle};
use serde_json::{Value, json};
use uuid::Uuid;

const PROJECT: &str = "proj-console";
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

/// A headless Chromium session through its own chromedriver process (killed on drop).
struct Browser {
    client: Client,
    driver: Child,
    base: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start(driver: &Path, chromium: &Path, base: &str) -> Browser {
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", driver.display()));
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
                         "--no-first-run", "--no-default-browser-check"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("WebDriver session: {e}"));
        Browser {
            client,
            driver: child,
            base: base.to_owned(),
        }
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

    /// No horizontal scrolling at the current width.
    async fn fits(&self, width: u32) {
        let w = self
            .js("return document.documentElement.scrollWidth")
            .await
            .as_u64()
            .unwrap_or(0);
        assert!(
            w <= u64::from(width),
            "the page is {w}px wide at a {width}px window"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// The system under test

struct Env {
    app: TestApp,
    sim: SimulatorHandle,
    org: Uuid,
    token: String,
}

async fn env() -> Env {
    let sim = Simulator::start(SimOptions::default()).await.unwrap();
    let vars: HashMap<String, String> = [("golioth_base_url".to_owned(), sim.base_url())].into();
    let app = harness::spawn_app_with(AppOptions { vars }).await;
    let org = app.seed_org("acme").await;
    let token = app.jwt(app.seed_member(org, "admin").await);
    sim.create_project(ProjectSpec::new(PROJECT, KEY)).unwrap();
    Env {
        app,
        sim,
        org,
        token,
    }
}

impl Env {
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
    b.shot("service-new").await;
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
    b.shot("service-edit").await;

    // A server-side problem is shown with its problem+json title and detail.
    b.fill("input[name=base_url]", "https://evil.example").await;
    b.click("#service-form button[type=submit]").await;
    b.wait_text(
        "#form-problem",
        "base_url must be one of the allowed Golioth hosts",
    )
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
    b.shot("sync-dry-run").await;

    // Apply: the real run, with the device count.
    b.click("#apply-run").await;
    b.wait_text("#run-panel h2", "Run").await;
    b.wait_for("#run-panel[data-status=completed]").await;
    let created = b.wait_for("[data-count=created_local] dd").await;
    assert_eq!(created, "3");
    assert_eq!(b.wait_for("[data-count=processed] dd").await, "3");
    b.wait_text("#notices", "Sync completed").await;
    assert_eq!(e.local_devices().await, 3);
    b.shot("sync-run").await;

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
    b.shot("conflicts").await;
    b.click_link("local-name").await;
    b.wait_for(".conflict[data-field=name]").await;
    assert_eq!(b.wait_for(".conflict .side.base code").await, original);
    assert_eq!(b.wait_for(".conflict .side.local code").await, "local-name");
    assert_eq!(
        b.wait_for(".conflict .side.remote code").await,
        "remote-name"
    );
    b.shot("conflict-device").await;
    // Resolve with a custom value (typed, validated, sent).
    let input = "[id^=custom-]";
    b.fill(input, "chosen-name").await;
    b.click(".conflict [data-resolve=custom]").await;
    b.wait_text("#notices", "Resolved with a custom value")
        .await;
    b.wait_for("#device-clear").await;
    let by = b.wait_for("#device-resolved .resolved-by").await;
    assert!(by.starts_with("you"), "{by}");
    b.shot("conflict-resolved").await;

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
    b.shot("conflicts-bulk-preview").await;
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
    b.shot("history-runs").await;
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
    b.shot("history-log").await;

    // The services list after the syncs: last sync and success rate from the stats endpoint.
    b.click("a[data-nav=services]").await;
    b.wait_text("#services-table .rate", "100%").await;
    b.wait_text("#services-table .last-sync", "completed").await;
    b.shot("services").await;

    // A phone: 375 px wide, no horizontal scrolling, the same screens.
    b.size(375, 812).await;
    let sync_path = format!("/console/sync?service={service}");
    for (path, css, name) in [
        ("/console/services", "#services-table", "phone-services"),
        (sync_path.as_str(), "#dry-run", "phone-sync"),
        (
            "/console/conflicts?status=resolved",
            "#resolved-table",
            "phone-conflicts",
        ),
    ] {
        b.goto(path).await;
        b.wait_for(css).await;
        b.fits(375).await;
        b.shot(name).await;
    }
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
    b.shot("sign-in-expired").await;
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
    // Valid, but not a member of the organization.
    b.goto(&host::dev::console_link(
        "",
        &e.app.jwt(user),
        &e.org.to_string(),
    ))
    .await;
    b.wait_text("#signin-reason", "not a member").await;
    // Pasting a valid token and organization signs in.
    b.fill("#main textarea", &e.token).await;
    b.fill("#main input[type=text]", &e.org.to_string()).await;
    b.shot("sign-in").await;
    b.click("#main button[type=submit]").await;
    b.wait_text("main h1", "Services").await;
    b.wait_text("#notices", "Signed in").await;
}
