//! Spin cron component `scheduler` (spin-trigger-cron, WIT `fermyon:spin-cron@2.0.0`): on each
//! tick it POSTs the `tick_url` with the `internal_token` and reports a failure in its result.
//! All scheduling logic lives behind `/internal/tick`, so any HTTP scheduler can replace it.

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ world: "spin-cron", path: "wit/cron.wit" });

    struct Cron;

    impl Guest for Cron {
        fn handle_cron_event(metadata: Metadata) -> Result<(), Error> {
            spin_executor::run(super::tick(metadata.timestamp)).map_err(Error::Other)
        }
    }

    export!(Cron);
}

#[cfg(target_arch = "wasm32")]
async fn tick(timestamp: u64) -> Result<(), String> {
    let url = spin_sdk::variables::get("tick_url").map_err(|e| format!("tick_url: {e}"))?;
    let token =
        spin_sdk::variables::get("internal_token").map_err(|e| format!("internal_token: {e}"))?;
    let req = http::Request::builder()
        .method("POST")
        .uri(&url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(format!("{{\"cron_timestamp\":{timestamp}}}").into_bytes())
        .map_err(|e| format!("building the tick request: {e}"))?;
    let resp: http::Response<Vec<u8>> = spin_sdk::http::send(req)
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        let body = String::from_utf8_lossy(resp.body());
        let snippet: String = body.chars().take(300).collect();
        Err(format!("POST {url} answered {}: {snippet}", resp.status()))
    }
}
