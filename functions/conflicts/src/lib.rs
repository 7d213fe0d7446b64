//! Spin component `conflicts`: a thin adapter that hands each request to `shared::api` and returns
//! its response. No SQL and no business rule lives here (ARCHITECTURE.md).

/// The Spin entry point (WASI P3, `wasi:http/handler@0.3.0-rc-2026-03-15`). Spin's
/// `#[http_service]` macro expands to the export glue, which needs `unsafe`; that expansion is
/// the only unsafe code in the crate.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    #[spin_sdk::http_service]
    async fn handle(
        req: spin_sdk::http::Request,
    ) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        shared::runtime::spin::serve(shared::api::Component::Conflicts, req).await
    }
}
