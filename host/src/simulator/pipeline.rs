//! A Golioth Pipeline with a `webhook` destination, played by the simulator: it POSTs device
//! stream messages to a URL with the CloudEvents headers Golioth sends (`Ce-Source` = device id,
//! `Ce-Subject` = project id, `Ce-Type` = `io.golioth.data.v1/.s/<path>`, `Ce-Time`), the
//! payload as JSON or CBOR, optionally wrapped by the `inject-metadata` transformer, and the
//! destination's configured headers (e.g. a token from a Pipeline Secret). GOLIOTH_API.md §8.1.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::Inner;

/// How the payload travels: as the device sent it in JSON, or in CBOR (a pipeline without a
/// `cbor-to-json` step forwards the device's CBOR bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    #[default]
    Json,
    Cbor,
}

impl PayloadFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            PayloadFormat::Json => "application/json",
            PayloadFormat::Cbor => "application/cbor",
        }
    }
}

/// One pipeline: filter-less, one webhook destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PipelineConfig {
    /// The destination `url`.
    pub url: String,
    /// The destination `headers` (values as resolved from Pipeline Secrets), e.g.
    /// `x-webhook-token: <secret>` or `Authorization: Bearer <secret>`.
    pub headers: BTreeMap<String, String>,
    pub format: PayloadFormat,
    /// Apply `inject-metadata`: `{data, device_id, project_id, timestamp{seconds, nanos}}`.
    pub inject_metadata: bool,
    /// Also send `Ce-Id` and `Ce-Specversion`. The legacy Output Streams sent them; whether
    /// Pipelines do is UNCERTAIN (§8.1), so off by default.
    pub send_ce_id: bool,
    pub timeout_ms: u64,
    /// Record each delivery as a device report in the simulator (`metadata.lastReport` and
    /// `lastSeenOnline` move, `updatedAt` does not), as sending data does on Golioth.
    pub mark_reported: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            url: String::new(),
            headers: BTreeMap::new(),
            format: PayloadFormat::Json,
            inject_metadata: false,
            send_ce_id: false,
            timeout_ms: 10_000,
            mark_reported: true,
        }
    }
}

impl PipelineConfig {
    pub fn webhook(url: impl Into<String>) -> Self {
        PipelineConfig {
            url: url.into(),
            ..PipelineConfig::default()
        }
    }
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
    pub fn cbor(mut self) -> Self {
        self.format = PayloadFormat::Cbor;
        self
    }
    pub fn inject_metadata(mut self) -> Self {
        self.inject_metadata = true;
        self
    }
}

/// One stream message from a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub project_id: String,
    pub device_id: String,
    /// The stream path below `/.s/`, e.g. `sensor` (a leading `/` or `.s/` is ignored).
    pub path: String,
    pub payload: Value,
    /// Message time; arrival time when absent.
    #[serde(default)]
    pub time: Option<DateTime<Utc>>,
    /// `Ce-Id`, when the pipeline sends it; random when absent.
    #[serde(default)]
    pub id: Option<String>,
}

/// A delivery as it goes on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedDelivery {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// What the webhook answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryOutcome {
    pub status: Option<u16>,
    pub body: String,
    pub error: Option<String>,
}

impl DeliveryOutcome {
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

fn stream_path(path: &str) -> &str {
    let p = path.trim_start_matches('/');
    p.strip_prefix(".s/").unwrap_or(p)
}

/// Build the request for one delivery (pure: tests and benchmarks can use it without sending).
pub fn prepare(config: &PipelineConfig, d: &Delivery) -> Result<PreparedDelivery, String> {
    let time = d.time.unwrap_or_else(Utc::now);
    let payload = if config.inject_metadata {
        json!({
            "data": d.payload,
            "device_id": d.device_id,
            "project_id": d.project_id,
            "timestamp": {"seconds": time.timestamp(), "nanos": time.timestamp_subsec_nanos()}
        })
    } else {
        d.payload.clone()
    };
    let body = match config.format {
        PayloadFormat::Json => Bytes::from(payload.to_string()),
        PayloadFormat::Cbor => {
            let mut buf = Vec::new();
            ciborium::into_writer(&payload, &mut buf).map_err(|e| e.to_string())?;
            Bytes::from(buf)
        }
    };
    let mut headers = vec![
        (
            "Content-Type".to_owned(),
            config.format.content_type().to_owned(),
        ),
        ("Ce-Source".to_owned(), d.device_id.clone()),
        ("Ce-Subject".to_owned(), d.project_id.clone()),
        (
            "Ce-Type".to_owned(),
            format!("io.golioth.data.v1/.s/{}", stream_path(&d.path)),
        ),
        // UNCERTAIN but probable: the docs' Supabase example reads `ce-time` (§8.1).
        (
            "Ce-Time".to_owned(),
            time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        ),
    ];
    if config.send_ce_id {
        let id =
            d.id.clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        headers.push(("Ce-Id".to_owned(), id));
        headers.push(("Ce-Specversion".to_owned(), "1.0".to_owned()));
    }
    for (k, v) in &config.headers {
        headers.push((k.clone(), v.clone()));
    }
    Ok(PreparedDelivery {
        url: config.url.clone(),
        headers,
        body,
    })
}

/// Sends deliveries for one pipeline configuration.
#[derive(Debug, Clone)]
pub struct Pipeline {
    config: PipelineConfig,
    client: reqwest::Client,
    sim: Option<Arc<Inner>>,
}

impl Pipeline {
    /// A pipeline that only sends (no simulator to record device reports in).
    pub fn new(config: PipelineConfig) -> Self {
        Self::with_sim(config, None)
    }

    pub(crate) fn with_sim(config: PipelineConfig, sim: Option<Arc<Inner>>) -> Self {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_default();
        Pipeline {
            config,
            client,
            sim,
        }
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// POST one delivery. Golioth documents no retries for webhook destinations (§8.1), so
    /// there are none here either: one attempt, its outcome reported.
    pub async fn deliver(&self, d: &Delivery) -> DeliveryOutcome {
        if self.config.mark_reported
            && let Some(sim) = &self.sim
        {
            let at = d.time.unwrap_or_else(Utc::now);
            // An unknown device is not an error here: Golioth would not have routed its data,
            // but a test may deliver for a device it made up.
            let _ = sim
                .world()
                .with_device_reported(&d.project_id, &d.device_id, |dev| {
                    dev.last_report = Some(dev.last_report.map_or(at, |t| t.max(at)));
                    dev.last_seen_online = Some(dev.last_seen_online.map_or(at, |t| t.max(at)));
                });
        }
        let prepared = match prepare(&self.config, d) {
            Ok(p) => p,
            Err(e) => {
                return DeliveryOutcome {
                    status: None,
                    body: String::new(),
                    error: Some(e),
                };
            }
        };
        let mut req = self
            .client
            .post(&prepared.url)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .body(prepared.body);
        for (k, v) in &prepared.headers {
            req = req.header(k, v);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                DeliveryOutcome {
                    status: Some(status),
                    body,
                    error: None,
                }
            }
            Err(e) => DeliveryOutcome {
                status: None,
                body: String::new(),
                error: Some(error_chain(&e.without_url())),
            },
        }
    }

    /// Deliver many, `concurrency` at a time; outcomes in input order.
    pub async fn deliver_all(
        &self,
        deliveries: &[Delivery],
        concurrency: usize,
    ) -> Vec<DeliveryOutcome> {
        // Owned items: a stream over borrowed deliveries trips a higher-ranked lifetime
        // error once the future must be `Send` (axum handlers).
        futures::stream::iter(deliveries.iter().cloned())
            .map(|d| async move { self.deliver(&d).await })
            .buffered(concurrency.max(1))
            .collect()
            .await
    }
}

/// An error and its causes, outermost first (`error sending request: connection reset …`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery() -> Delivery {
        Delivery {
            project_id: "proj".into(),
            device_id: "612d3cecf3ee17d321adbec6".into(),
            path: "/.s/sensor".into(),
            payload: json!({"temp": 32}),
            time: DateTime::from_timestamp(1_700_000_000, 5),
            id: Some("evt-1".into()),
        }
    }

    fn header<'a>(p: &'a PreparedDelivery, name: &str) -> Option<&'a str> {
        p.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn plain_json_is_the_payload_itself() {
        let cfg = PipelineConfig::webhook("http://x/hook").header("x-webhook-token", "t");
        let p = prepare(&cfg, &delivery()).unwrap();
        assert_eq!(p.body, Bytes::from(r#"{"temp":32}"#));
        assert_eq!(header(&p, "ce-type"), Some("io.golioth.data.v1/.s/sensor"));
        assert_eq!(header(&p, "ce-source"), Some("612d3cecf3ee17d321adbec6"));
        assert_eq!(header(&p, "ce-subject"), Some("proj"));
        assert_eq!(header(&p, "content-type"), Some("application/json"));
        assert_eq!(header(&p, "x-webhook-token"), Some("t"));
        assert_eq!(header(&p, "ce-id"), None);
    }

    #[test]
    fn cbor_with_metadata_envelope() {
        let mut cfg = PipelineConfig::webhook("http://x").cbor().inject_metadata();
        cfg.send_ce_id = true;
        let p = prepare(&cfg, &delivery()).unwrap();
        let v: Value = ciborium::from_reader(p.body.as_ref()).unwrap();
        assert_eq!(
            v,
            json!({"data": {"temp": 32}, "device_id": "612d3cecf3ee17d321adbec6",
                   "project_id": "proj", "timestamp": {"seconds": 1_700_000_000, "nanos": 5}})
        );
        assert_eq!(header(&p, "content-type"), Some("application/cbor"));
        assert_eq!(header(&p, "ce-id"), Some("evt-1"));
    }
}
