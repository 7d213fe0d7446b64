//! Spin component `console`: a thin adapter that hands each `/console/...` request to the
//! `golioth-console` crate (the web console's static single-page app compiled into the
//! component) and returns its response. No database, no outbound request, no business rule.

/// The Spin entry point (WASI P3, `wasi:http/handler@0.3.0-rc-2026-03-15`). Spin's
/// `#[http_service]` macro expands to the export glue, which needs `unsafe`; that expansion is
/// the only unsafe code in the crate. The console reads no request body.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    #[spin_sdk::http_service]
    async fn handle(
        req: spin_sdk::http::Request,
    ) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        let (parts, _body) = req.into_parts();
        let resp = golioth_console::handle(&http::Request::from_parts(parts, ()));
        let (parts, body) = resp.into_parts();
        http::Response::from_parts(parts, http_body_util::Full::new(bytes::Bytes::from(body)))
    }
}
