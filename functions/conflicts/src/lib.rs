//! Spin component `conflicts`: a thin adapter that hands each request to `shared::api` and returns
//! its response. No SQL and no business rule lives here (ARCHITECTURE.md).

/// The Spin entry point. Spin's `#[http_component]` macro expands to the wasi-http export glue,
/// which needs `unsafe`; that expansion is the only unsafe code in the crate.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    #[spin_sdk::http_component]
    async fn handle(req: http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
        shared::runtime::spin::serve(shared::api::Component::Conflicts, req).await
    }
}
