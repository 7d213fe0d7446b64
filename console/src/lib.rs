//! The operators' web console: a single-page app written by hand (ES modules, one stylesheet,
//! one HTML page; no build step, no Node toolchain, no CDN) compiled into this crate with
//! `include_bytes!`, and the one function both hosts call to serve it under `/console/...`.
//!
//! Portable on purpose (only the `http` crate): the `console` Spin component and the native host
//! call [`handle`] with the same request and get the same bytes and headers. Every response
//! carries a strict Content-Security-Policy (no inline script or style, no third-party origin),
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`; the bearer token the
//! console uses travels only in the URL fragment and `sessionStorage`, never to this server.

use http::{HeaderValue, Method, Request, Response, StatusCode, header};

/// The console's route in `spin.toml` (also matches `/console` itself).
pub const ROUTE: &str = "/console/...";

/// Where the console lives.
pub const PREFIX: &str = "/console";

/// The Content-Security-Policy of every console response: scripts, styles, fetches and images
/// from this origin only (images also as `data:` URLs), nothing inline, no framing, no `<base>`,
/// no form posts.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file: its path under `/console/`, its media type and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $ct:literal) => {
        Asset {
            path: $path,
            content_type: $ct,
            body: include_bytes!(concat!("../assets/", $path)),
        }
    };
}

/// Every file the console consists of. `index.html` is also the answer for the app's own paths.
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
    asset!("validate.js", "text/javascript; charset=utf-8"),
    asset!("services.js", "text/javascript; charset=utf-8"),
    asset!("sync.js", "text/javascript; charset=utf-8"),
    asset!("history.js", "text/javascript; charset=utf-8"),
    asset!("conflicts.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The asset at `name` (the path after `/console/`), if there is one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == name)
}

fn index() -> &'static Asset {
    &ASSETS[0]
}

/// What a request path under `/console` resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// An embedded file.
    Asset(&'static str),
    /// A path the single-page app routes itself (`/console`, `/console/`, `/console/services/…`):
    /// the answer is `index.html`.
    App,
    /// A file name (its last segment has a dot) that is not embedded, or a path outside the
    /// console.
    NotFound,
}

/// Resolve a request path (no query string). A last segment with a dot names a file, which must
/// exist; any other path under `/console` belongs to the app's client-side router.
pub fn resolve(path: &str) -> Resolved {
    let rest = match path.strip_prefix(PREFIX) {
        Some("") => return Resolved::App,
        Some(r) if r.starts_with('/') => &r[1..],
        _ => return Resolved::NotFound,
    };
    if rest.split('/').any(|s| s == "..") {
        return Resolved::NotFound;
    }
    let last = rest.rsplit('/').next().unwrap_or("");
    if last.contains('.') {
        match asset(rest) {
            Some(a) if a.path != "index.html" || rest == "index.html" => Resolved::Asset(a.path),
            _ => Resolved::NotFound,
        }
    } else {
        Resolved::App
    }
}

/// A strong validator for an embedded body (FNV-1a, 64 bits): the bodies only change with a new
/// build, and a revalidation costs a 304 instead of the body.
pub fn etag(body: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

fn security_headers(resp: &mut Response<Vec<u8>>) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

fn build(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    security_headers(&mut resp);
    resp
}

fn problem(status: StatusCode, detail: &str) -> Response<Vec<u8>> {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "{{\"type\":\"about:blank\",\"title\":\"{title}\",\"status\":{},\"detail\":\"{}\"}}",
        status.as_u16(),
        detail.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let mut resp = build(status, "application/problem+json", body.into_bytes());
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Serve one request under `/console`: GET and HEAD only (405 with `Allow` otherwise), an
/// embedded asset or `index.html` for the app's own paths, a problem+json 404 for a file that is
/// not embedded. Every answer carries the security headers; bodies carry an `ETag` and
/// `Cache-Control: no-cache` (always revalidated, so a new build is seen at once) and a matching
/// `If-None-Match` gets a 304.
pub fn handle<B>(req: &Request<B>) -> Response<Vec<u8>> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut resp = problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "the console answers GET and HEAD",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let path = req.uri().path();
    let asset = match resolve(path) {
        Resolved::Asset(name) => asset(name).unwrap_or_else(index),
        Resolved::App => index(),
        Resolved::NotFound => {
            return problem(StatusCode::NOT_FOUND, "no such console file");
        }
    };
    let tag = etag(asset.body);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Vec::new())
    } else if head {
        (StatusCode::OK, Vec::new())
    } else {
        (StatusCode::OK, asset.body.to_vec())
    };
    let mut resp = build(status, asset.content_type, body);
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const JS: &str = "text/javascript; charset=utf-8";

    fn get(path: &str) -> Response<Vec<u8>> {
        handle(&Request::get(path).body(()).unwrap())
    }

    fn header<'a>(r: &'a Response<Vec<u8>>, name: &str) -> &'a str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn app_paths_answer_the_index() {
        for p in [
            "/console",
            "/console/",
            "/console/services",
            "/console/services/5b1c/edit",
            "/console/conflicts/abc",
        ] {
            let r = get(p);
            assert_eq!(r.status(), 200, "{p}");
            assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
            assert_eq!(r.body(), index().body, "{p}");
        }
    }

    #[test]
    fn assets_have_their_types_and_unknown_files_are_404() {
        let r = get("/console/app.js");
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), JS);
        assert_eq!(get("/console/app.css").status(), 200);
        for p in [
            "/console/nope.js",
            "/console/services/app.js",
            "/console/../Cargo.toml",
            "/consolex",
            "/other",
        ] {
            let r = get(p);
            assert_eq!(r.status(), 404, "{p}");
            assert_eq!(header(&r, "content-type"), "application/problem+json");
            assert_eq!(
                header(&r, "content-security-policy"),
                CONTENT_SECURITY_POLICY
            );
        }
    }

    #[test]
    fn every_answer_carries_the_security_headers() {
        for p in ["/console/", "/console/api.js", "/console/missing.png"] {
            let r = get(p);
            assert_eq!(
                header(&r, "content-security-policy"),
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(header(&r, "x-content-type-options"), "nosniff");
            assert_eq!(header(&r, "referrer-policy"), "no-referrer");
        }
    }

    #[test]
    fn revalidation_and_methods() {
        let r = get("/console/app.js");
        let tag = header(&r, "etag").to_owned();
        assert_eq!(header(&r, "cache-control"), "no-cache");
        let again = handle(
            &Request::get("/console/app.js")
                .header("if-none-match", &tag)
                .body(())
                .unwrap(),
        );
        assert_eq!(again.status(), 304);
        assert!(again.body().is_empty());
        let head = handle(&Request::head("/console/").body(()).unwrap());
        assert_eq!(head.status(), 200);
        assert!(head.body().is_empty());
        let post = handle(&Request::post("/console/").body(()).unwrap());
        assert_eq!(post.status(), 405);
        assert_eq!(header(&post, "allow"), "GET, HEAD");
    }

    /// The CSP forbids inline script and style, so the page must have none: no `<script>` with a
    /// body, no `style=` attribute, no `<style>` element, no `on…=` handler, no remote script
    /// or stylesheet; the modules build DOM nodes (no `innerHTML`) and never `eval`.
    #[test]
    fn the_page_has_nothing_inline_and_nothing_remote() {
        for a in ASSETS {
            let text = String::from_utf8_lossy(a.body);
            if a.path.ends_with(".html") {
                let lower = text.to_lowercase();
                assert!(!lower.contains("src=\"http"), "{}", a.path);
                assert!(!lower.contains("href=\"http"), "{}", a.path);
                assert!(!lower.contains("src=\"//"), "{}", a.path);
                assert!(!lower.contains("<style"), "{}", a.path);
                assert!(!lower.contains(" style="), "{}", a.path);
                assert!(!lower.contains(" onclick="), "{}", a.path);
                for chunk in lower.split("<script").skip(1) {
                    let (tag, rest) = chunk.split_once('>').unwrap();
                    assert!(tag.contains("src="), "inline script in {}", a.path);
                    assert!(rest.starts_with("</script"), "inline script in {}", a.path);
                }
            }
            if a.path.ends_with(".js") {
                assert!(!text.contains("innerHTML"), "{}: build DOM nodes", a.path);
                assert!(!text.contains("eval("), "{}", a.path);
                assert!(!text.contains(".setAttribute('style'"), "{}", a.path);
            }
        }
    }

    /// Every module an asset imports is embedded.
    #[test]
    fn every_import_is_embedded() {
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = String::from_utf8_lossy(a.body);
            for part in text.split(" from '").skip(1) {
                let spec = part.split('\'').next().unwrap_or("");
                let name = spec.trim_start_matches("./");
                assert!(asset(name).is_some(), "{}: import {spec}", a.path);
            }
        }
    }
}
