//! Spin component `console`: a thin adapter that hands each `/console/...` request to the
//! `golioth-console` crate (the web console's static single-page app compiled into the
//! component) and returns its response. No database, no outbound request, no business rule.

/// The Spin entry point. Spin's `#[http_component]` macro expands to the wasi-http export glue,
/// which needs `unsafe`; that expansion is the only unsafe code in the crate.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    #[spin_sdk::http_component]
    async fn handle(req: http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
        golioth_console::handle(&req)
    }
}
