//! Fuzz target: everything the Golioth client reads from a response, through the real client.
//!
//! Input format (readable, so seeds are easy to write): one byte choosing the client call (`a`
//! get_project, `b` list_projects, `c` get_device, `d` list_devices_page, `e` list_devices, `f`
//! list_tags, `g` list_blueprints, `h` ensure_tags, `i` create_device, `j` update_device, `k`
//! delete_device, `l` create_psk_credential, `m` read_state; any byte, modulo 13), then one or
//! more responses separated by a line `%%`; each response is a head line `<status>
//! [Retry-After value]` followed by the body. A fake `HttpClient` answers the call's requests
//! with these responses in turn, so the whole read path runs: status classes and error bodies, `Retry-After`, retries, `{data}` unwrapping, list
//! pages and the listing tracker, and the tolerant resource parsers. The parsers are also fed each
//! body directly (the body, its `data` and every `list` entry).

#![no_main]

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::domain::golioth::{
    ApiStatus, Blueprint, BlueprintId, ClientConfig, CohortId, Credential, Device, DeviceUpdate,
    GoliothClient, GoliothDeviceId, GoliothError, ListDevicesOptions, ListingTracker, NewDevice,
    OrganizationId, Project, ProjectId, RetryPolicy, Tag, TagId, TagMap, parse_retry_after,
};
use shared::base::ports::{Clock, HttpClient, HttpError};
use shared::base::settings::Secret;

/// Requests one client call may make before the fake transport fails it: bounds the listings,
/// which otherwise page on while every page looks full.
const MAX_REQUESTS_PER_CALL: usize = 12;

struct Response<'a> {
    status: u16,
    retry_after: Option<&'a str>,
    body: &'a [u8],
}

fn split_responses(data: &[u8]) -> Vec<Response<'_>> {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        let (chunk, next) = match find(rest, b"\n%%\n") {
            Some(i) => (&rest[..i], Some(&rest[i + 4..])),
            None => (rest, None),
        };
        let (head, body) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], &chunk[i + 1..]),
            None => (chunk, &[][..]),
        };
        let head = std::str::from_utf8(head).unwrap_or("");
        let (status, retry_after) = match head.split_once(' ') {
            Some((s, ra)) => (s, Some(ra)),
            None => (head, None),
        };
        out.push(Response {
            status: status.trim().parse().unwrap_or(200),
            retry_after,
            body,
        });
        match next {
            Some(n) if out.len() < 16 => rest = n,
            _ => break,
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Answers requests with the fuzzed responses in turn.
struct FakeGolioth<'a> {
    responses: &'a [Response<'a>],
    sent: Cell<usize>,
}

#[async_trait(?Send)]
impl HttpClient for FakeGolioth<'_> {
    async fn send(
        &self,
        _req: http::Request<Bytes>,
        _timeout: Duration,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let n = self.sent.get();
        self.sent.set(n + 1);
        if n >= MAX_REQUESTS_PER_CALL {
            return Err(HttpError::Connect("fuzz: request budget spent".into()));
        }
        let r = &self.responses[n % self.responses.len()];
        let mut resp = http::Response::new(Bytes::copy_from_slice(r.body));
        *resp.status_mut() = http::StatusCode::from_u16(r.status).unwrap_or(http::StatusCode::OK);
        if let Some(v) = r
            .retry_after
            .and_then(|v| http::HeaderValue::from_str(v).ok())
        {
            resp.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        Ok(resp)
    }
}

struct FixedClock(DateTime<Utc>);

#[async_trait(?Send)]
impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
    async fn sleep(&self, _d: Duration) {}
}

/// Drive a future whose I/O never waits (the fakes above answer at once).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("a client call kept waiting on a transport that never waits");
}

fn check_error(e: &GoliothError) {
    let _ = e.to_string();
    let _ = (e.is_retryable(), e.outcome_unknown(), e.is_duplicate());
    let _ = (
        e.is_not_found(),
        e.retry_after(),
        e.api_status(),
        e.http_status(),
    );
}

fn check<T>(r: Result<T, GoliothError>) {
    if let Err(e) = &r {
        check_error(e);
    }
}

fn parse_resources(v: &Value) {
    if let Ok(d) = Device::from_json(v) {
        let _ = d.firmware_version();
        let _ = serde_json::to_string(&d);
    }
    let _ = Project::from_json(v);
    let tag = Tag::from_json(v);
    let _ = Blueprint::from_json(v);
    let _ = Credential::from_json(v);
    let mut map = TagMap::from_tags(tag.ok());
    if let Some(Value::String(s)) = v.get("name") {
        let _ = map.ids_of([s.as_str()]);
        if let Ok(t) = Tag::from_json(v) {
            let _ = map.names_of([&t.id]);
            map.insert(t);
        }
    }
}

fn parse_ids(s: &str) {
    let _ = GoliothDeviceId::parse(s).map(|id| id.to_string());
    let _ = ProjectId::parse(s);
    let _ = OrganizationId::parse(s);
    let _ = TagId::parse(s);
    let _ = BlueprintId::parse(s);
    let _ = CohortId::parse(s);
}

fuzz_target!(|data: &[u8]| {
    let Some((&op, data)) = data.split_first() else {
        return;
    };
    let responses = split_responses(data);
    let now = Utc.with_ymd_and_hms(2025, 11, 9, 20, 0, 0).unwrap();

    // The pure parsers, on each response on its own.
    for r in &responses {
        let status = ApiStatus::parse(r.status, r.body);
        let _ = status.to_string();
        let retry_after = r.retry_after.and_then(|v| parse_retry_after(v, now));
        if let Some(v) = r.retry_after {
            for at in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
                let _ = parse_retry_after(v, at);
            }
        }
        check_error(&GoliothError::from_response(r.status, r.body, retry_after));
        if let Ok(text) = std::str::from_utf8(r.body) {
            parse_ids(text);
        }
        if let Ok(v) = serde_json::from_slice::<Value>(r.body) {
            parse_resources(&v);
            if let Some(d) = v.get("data") {
                parse_resources(d);
            }
            if let Some(Value::Array(list)) = v.get("list") {
                list.iter().for_each(parse_resources);
            }
        }
    }

    // The client, each call answered by the responses in turn.
    let http = FakeGolioth {
        responses: &responses,
        sent: Cell::new(0),
    };
    let clock = FixedClock(now);
    let config = ClientConfig::new(
        "https://api.golioth.io",
        ProjectId::parse("fuzz-project").unwrap(),
        Secret::new("fuzz-key"),
    )
    .unwrap()
    .with_retry(RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    });
    let client = GoliothClient::new(&http, &clock, config);
    let id = GoliothDeviceId::parse("68bf1cc5425dd2ea93f248a3").unwrap();
    let opts = ListDevicesOptions {
        per_page: 2,
        max_pages: 4,
        concurrency: 2,
        state_path: Some("power/battery".into()),
        ..ListDevicesOptions::default()
    };
    match op.wrapping_sub(b'a') % 13 {
        0 => check(block_on(client.get_project())),
        1 => check(block_on(client.list_projects())),
        2 => check(block_on(client.get_device(&id))),
        3 => match block_on(client.list_devices_page(0, &opts)) {
            Ok(p) => {
                let _ = (p.entries(), p.is_last());
                let mut t = ListingTracker::new();
                t.record(p);
                let _ = (t.next_page(), t.expected_pages(), t.summary());
            }
            Err(e) => check_error(&e),
        },
        4 => match block_on(client.list_devices(&opts)) {
            Ok(listing) => {
                // The listing's contract: deduplicated by id, and counted as returned.
                let mut ids: Vec<_> = listing.devices.iter().map(|d| &d.id).collect();
                ids.sort();
                ids.dedup();
                assert_eq!(
                    ids.len(),
                    listing.devices.len(),
                    "a listing repeats a device"
                );
                assert_eq!(listing.summary.unique_devices, ids.len() as u64);
            }
            Err(e) => check_error(&e),
        },
        5 => check(block_on(client.list_tags())),
        6 => check(block_on(client.list_blueprints())),
        7 => {
            let mut map = TagMap::default();
            check(block_on(client.ensure_tags(&mut map, &["fuzz".to_owned()])));
        }
        8 => {
            let mut new = NewDevice::named("fuzz-device");
            new.hardware_ids = vec!["hw-1".into()];
            check(block_on(client.create_device(&new)));
        }
        9 => {
            let update = DeviceUpdate {
                name: Some("renamed".into()),
                ..DeviceUpdate::default()
            };
            check(block_on(client.update_device(&id, &update)));
        }
        10 => check(block_on(client.delete_device(&id))),
        11 => check(block_on(client.create_psk_credential(
            &id,
            "fuzz-identity",
            &Secret::new("00112233445566778899aabbccddeeff"),
        ))),
        _ => check(block_on(client.read_state(&id, "power/battery"))),
    }
});
