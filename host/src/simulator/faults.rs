//! Fault injection and bookkeeping: scripted rules (the next n matching requests, or always, for
//! one method / path / page), seeded random rates for benchmarks, per-request latency, and the
//! counters and request log tests read (e.g. to check that `Retry-After` was honoured).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What goes wrong with a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Fault {
    /// Answer `status` with a Golioth error body instead of processing the request (so nothing
    /// is written). `retry_after` is the raw header value: seconds or an HTTP-date.
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<String>,
    },
    /// Process the request, then hold the response back for `ms` (past the client's timeout):
    /// the write happens but the client never learns it, like a real timeout.
    Hang { ms: u64 },
    /// Process the request, then send only the first half of the body with a matching
    /// `Content-Length`: valid HTTP, unreadable JSON.
    TruncatedBody,
    /// Process the request, then break the connection halfway through the body.
    AbortBody,
    /// Apply the write, then answer 503 as if it had never run: the change is made, the caller
    /// never hears (a proxy or load balancer losing the answer).
    AppliedThenUnavailable,
    /// Apply the write, then drop the connection before a single byte of the answer.
    AppliedThenDropped,
}

impl Fault {
    pub fn internal() -> Fault {
        Fault::Status {
            status: 500,
            retry_after: None,
        }
    }
    pub fn unavailable(retry_after_secs: Option<u64>) -> Fault {
        Fault::Status {
            status: 503,
            retry_after: retry_after_secs.map(|s| s.to_string()),
        }
    }
    pub fn rate_limited(retry_after_secs: Option<u64>) -> Fault {
        Fault::Status {
            status: 429,
            retry_after: retry_after_secs.map(|s| s.to_string()),
        }
    }
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            retry_after: None,
        }
    }
    pub fn hang(d: Duration) -> Fault {
        Fault::Hang {
            ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        }
    }
    /// The gRPC code grpc-gateway pairs with an HTTP status (GOLIOTH_API.md §7).
    pub fn grpc_code(status: u16) -> i32 {
        match status {
            400 => 3,
            401 => 16,
            403 => 7,
            404 => 5,
            408 => 1,
            409 => 6,
            429 => 8,
            501 => 12,
            503 => 14,
            504 => 4,
            _ => 13,
        }
    }
    pub(crate) fn label(&self) -> String {
        match self {
            Fault::Status { status, .. } => format!("status_{status}"),
            Fault::Hang { .. } => "hang".into(),
            Fault::TruncatedBody => "truncated_body".into(),
            Fault::AbortBody => "abort_body".into(),
            Fault::AppliedThenUnavailable => "applied_then_503".into(),
            Fault::AppliedThenDropped => "applied_then_dropped".into(),
        }
    }
}

/// Which requests a rule applies to. Every set field must match; an empty matcher matches all
/// Golioth API requests (never the `/_sim/` controls).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RequestMatch {
    /// e.g. `GET`.
    pub method: Option<String>,
    /// The exact path, without query.
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    /// The `page` query parameter (0 when absent), e.g. to make one page of a listing fail.
    pub page: Option<u64>,
    /// The request kind, e.g. `devices.list`, `device.create` (see [`RequestRecord::kind`]).
    pub kind: Option<String>,
    /// A query parameter the request carries, e.g. `hardwareId` (a device lookup, not a page of
    /// the listing).
    pub param: Option<String>,
}

impl RequestMatch {
    pub fn any() -> Self {
        RequestMatch::default()
    }
    pub fn kind(kind: &str) -> Self {
        RequestMatch {
            kind: Some(kind.to_owned()),
            ..RequestMatch::default()
        }
    }
    /// One page of the device listing.
    pub fn devices_page(page: u64) -> Self {
        RequestMatch {
            kind: Some("devices.list".into()),
            page: Some(page),
            ..RequestMatch::default()
        }
    }
    /// Every request on one exact path (e.g. one device), any method.
    pub fn path(path: impl Into<String>) -> Self {
        RequestMatch {
            path: Some(path.into()),
            ..RequestMatch::default()
        }
    }
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }
    /// Only requests carrying this query parameter.
    pub fn with_param(mut self, name: &str) -> Self {
        self.param = Some(name.to_owned());
        self
    }

    pub(crate) fn matches(&self, req: &RequestInfo<'_>) -> bool {
        self.method
            .as_ref()
            .is_none_or(|m| m.eq_ignore_ascii_case(req.method))
            && self.path.as_ref().is_none_or(|p| p == req.path)
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|p| req.path.starts_with(p.as_str()))
            && self.page.is_none_or(|p| p == req.page)
            && self.kind.as_ref().is_none_or(|k| k == req.kind)
            && self
                .param
                .as_ref()
                .is_none_or(|p| req.params.iter().any(|have| have == p))
    }
}

/// A scripted fault: applies to matching requests after the first `skip` of them, `times` times
/// (`None`: always).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    #[serde(default, rename = "match")]
    pub matcher: RequestMatch,
    pub fault: Fault,
    #[serde(default)]
    pub times: Option<u32>,
    #[serde(default)]
    pub skip: u32,
}

impl FaultRule {
    pub fn always(matcher: RequestMatch, fault: Fault) -> Self {
        FaultRule {
            matcher,
            fault,
            times: None,
            skip: 0,
        }
    }
    pub fn times(n: u32, matcher: RequestMatch, fault: Fault) -> Self {
        FaultRule {
            matcher,
            fault,
            times: Some(n),
            skip: 0,
        }
    }
    /// Let the first `n` matching requests through first.
    pub fn after(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }
}

/// Random faults for benchmarks and soak runs, drawn from an RNG seeded with `seed`, so a run
/// with the same request order sees the same faults. Shares are in `[0, 1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FaultRates {
    pub seed: u64,
    pub internal_error: f64,
    pub unavailable: f64,
    pub rate_limited: f64,
    /// `Retry-After` sent with random 429/503 answers.
    pub retry_after: Option<String>,
    pub hang: f64,
    pub hang_ms: u64,
    pub truncated: f64,
    /// Share of writes (any method but GET) applied and then answered 503.
    pub lost_unavailable: f64,
    /// Share of writes applied and then answered by a dropped connection.
    pub lost_dropped: f64,
}

impl Default for FaultRates {
    fn default() -> Self {
        FaultRates {
            seed: 1,
            internal_error: 0.0,
            unavailable: 0.0,
            rate_limited: 0.0,
            retry_after: None,
            hang: 0.0,
            hang_ms: 60_000,
            truncated: 0.0,
            lost_unavailable: 0.0,
            lost_dropped: 0.0,
        }
    }
}

/// What the fault layer knows about a request.
pub(crate) struct RequestInfo<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub page: u64,
    pub kind: &'a str,
    /// The names of the query parameters.
    pub params: &'a [&'a str],
}

/// One request as the simulator saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// Arrival order, from 0.
    pub seq: u64,
    /// Arrival time (monotonic), before any injected latency.
    pub at: Instant,
    pub time: DateTime<Utc>,
    pub method: String,
    pub path: String,
    pub query: String,
    /// e.g. `devices.list`, `device.get`, `device.create`, `device.update`, `device.delete`,
    /// `credential.create`, `state.get`, `state.write`, `tags.list`, `tag.create`,
    /// `blueprints.list`, `project.get`, `projects.list`, `unknown`.
    pub kind: String,
    /// The status answered; `None` while the request is in progress or was abandoned (a hang).
    pub status: Option<u16>,
    /// The injected fault, if any.
    pub fault: Option<String>,
}

/// Counters of API traffic (controls excluded).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimStats {
    pub requests: u64,
    pub by_method: BTreeMap<String, u64>,
    pub by_kind: BTreeMap<String, u64>,
    /// Successful writes through the API (not console edits or seeding).
    pub writes: u64,
    pub writes_by_kind: BTreeMap<String, u64>,
    pub faults_injected: u64,
    pub in_flight: u64,
    pub max_in_flight: u64,
}

/// A rule with its counters.
#[derive(Debug, Clone)]
pub(crate) struct LiveRule {
    pub rule: FaultRule,
    /// Matching requests seen.
    pub seen: u32,
    /// Times it fired.
    pub fired: u32,
}

/// The mutable fault and bookkeeping state.
#[derive(Debug)]
pub(crate) struct Control {
    pub rules: Vec<LiveRule>,
    pub rates: Option<(FaultRates, StdRng)>,
    pub latency: Duration,
    pub stats: SimStats,
    pub log: VecDeque<RequestRecord>,
    pub log_capacity: usize,
    pub next_seq: u64,
}

impl Control {
    pub fn new(log_capacity: usize) -> Self {
        Control {
            rules: Vec::new(),
            rates: None,
            latency: Duration::ZERO,
            stats: SimStats::default(),
            log: VecDeque::new(),
            log_capacity,
            next_seq: 0,
        }
    }

    pub fn set_rates(&mut self, rates: FaultRates) {
        let rng = StdRng::seed_from_u64(rates.seed);
        self.rates = Some((rates, rng));
    }

    pub fn add_rule(&mut self, rule: FaultRule) {
        self.rules.push(LiveRule {
            rule,
            seen: 0,
            fired: 0,
        });
    }

    /// Pick the fault for a request: the first live matching rule, else a random draw. Every
    /// matching rule counts the request (for `skip`), even when an earlier rule fires.
    pub fn pick(&mut self, req: &RequestInfo<'_>) -> Option<Fault> {
        let mut chosen = None;
        for live in &mut self.rules {
            if !live.rule.matcher.matches(req) {
                continue;
            }
            live.seen += 1;
            let eligible =
                live.seen > live.rule.skip && live.rule.times.is_none_or(|t| live.fired < t);
            if chosen.is_none() && eligible {
                live.fired += 1;
                chosen = Some(live.rule.fault.clone());
            }
        }
        if chosen.is_some() {
            return chosen;
        }
        let (rates, rng) = self.rates.as_mut()?;
        let draw: f64 = rng.random();
        let mut edge = 0.0;
        let mut hit = |share: f64| {
            edge += share.max(0.0);
            draw < edge
        };
        if hit(rates.internal_error) {
            return Some(Fault::internal());
        }
        if hit(rates.unavailable) {
            return Some(Fault::Status {
                status: 503,
                retry_after: rates.retry_after.clone(),
            });
        }
        if hit(rates.rate_limited) {
            return Some(Fault::Status {
                status: 429,
                retry_after: rates.retry_after.clone(),
            });
        }
        if hit(rates.hang) {
            return Some(Fault::Hang { ms: rates.hang_ms });
        }
        if hit(rates.truncated) {
            return Some(Fault::TruncatedBody);
        }
        if !req.method.eq_ignore_ascii_case("GET") {
            if hit(rates.lost_unavailable) {
                return Some(Fault::AppliedThenUnavailable);
            }
            if hit(rates.lost_dropped) {
                return Some(Fault::AppliedThenDropped);
            }
        }
        None
    }

    /// Count and log an arriving request; returns its sequence number.
    pub fn arrive(&mut self, method: &str, path: &str, query: &str, kind: &str) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let s = &mut self.stats;
        s.requests += 1;
        *s.by_method.entry(method.to_owned()).or_default() += 1;
        *s.by_kind.entry(kind.to_owned()).or_default() += 1;
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        if self.log_capacity > 0 {
            if self.log.len() >= self.log_capacity {
                self.log.pop_front();
            }
            self.log.push_back(RequestRecord {
                seq,
                at: Instant::now(),
                time: Utc::now(),
                method: method.to_owned(),
                path: path.to_owned(),
                query: query.to_owned(),
                kind: kind.to_owned(),
                status: None,
                fault: None,
            });
        }
        seq
    }

    fn record_mut(&mut self, seq: u64) -> Option<&mut RequestRecord> {
        self.log.iter_mut().rev().find(|r| r.seq == seq)
    }

    pub fn note_fault(&mut self, seq: u64, fault: &Fault) {
        self.stats.faults_injected += 1;
        if let Some(r) = self.record_mut(seq) {
            r.fault = Some(fault.label());
        }
    }

    pub fn finish(&mut self, seq: u64, status: u16) {
        if let Some(r) = self.record_mut(seq) {
            r.status = Some(status);
        }
    }

    pub fn leave(&mut self) {
        self.stats.in_flight = self.stats.in_flight.saturating_sub(1);
    }

    pub fn count_write(&mut self, kind: &str) {
        self.stats.writes += 1;
        *self
            .stats
            .writes_by_kind
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    pub fn reset(&mut self) {
        let in_flight = self.stats.in_flight;
        self.stats = SimStats {
            in_flight,
            max_in_flight: in_flight,
            ..SimStats::default()
        };
        self.log.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(method: &'a str, kind: &'a str, page: u64) -> RequestInfo<'a> {
        RequestInfo {
            method,
            path: "/v1/projects/p/devices",
            page,
            kind,
            params: &[],
        }
    }

    #[test]
    fn rules_count_skip_and_times() {
        let mut c = Control::new(10);
        c.add_rule(FaultRule::times(2, RequestMatch::devices_page(1), Fault::internal()).after(1));
        let page1 = info("GET", "devices.list", 1);
        assert_eq!(c.pick(&info("GET", "devices.list", 0)), None);
        assert_eq!(c.pick(&page1), None); // skipped
        assert_eq!(c.pick(&page1), Some(Fault::internal()));
        assert_eq!(c.pick(&page1), Some(Fault::internal()));
        assert_eq!(c.pick(&page1), None); // used up
    }

    #[test]
    fn later_rules_count_requests_an_earlier_rule_took() {
        let mut c = Control::new(0);
        c.add_rule(FaultRule::times(
            1,
            RequestMatch::any(),
            Fault::TruncatedBody,
        ));
        c.add_rule(FaultRule::times(1, RequestMatch::any(), Fault::AbortBody).after(1));
        let r = info("GET", "device.get", 0);
        assert_eq!(c.pick(&r), Some(Fault::TruncatedBody));
        assert_eq!(c.pick(&r), Some(Fault::AbortBody));
        assert_eq!(c.pick(&r), None);
    }

    #[test]
    fn rates_are_deterministic_per_seed() {
        let draw = || {
            let mut c = Control::new(0);
            c.set_rates(FaultRates {
                seed: 7,
                internal_error: 0.3,
                ..FaultRates::default()
            });
            (0..100)
                .map(|_| c.pick(&info("GET", "device.get", 0)).is_some())
                .collect::<Vec<_>>()
        };
        let a = draw();
        assert_eq!(a, draw());
        let hits = a.iter().filter(|h| **h).count();
        assert!((10..60).contains(&hits), "{hits}");
    }

    #[test]
    fn log_is_bounded() {
        let mut c = Control::new(2);
        for _ in 0..5 {
            let s = c.arrive("GET", "/x", "", "unknown");
            c.finish(s, 200);
            c.leave();
        }
        assert_eq!(c.log.len(), 2);
        assert_eq!(c.stats.requests, 5);
        assert_eq!(c.log.back().map(|r| r.seq), Some(4));
    }

    #[test]
    fn lost_answers_hit_writes_only() {
        let mut c = Control::new(0);
        c.set_rates(FaultRates {
            lost_unavailable: 0.5,
            lost_dropped: 0.5,
            ..FaultRates::default()
        });
        let get = RequestInfo {
            method: "GET",
            path: "/v1/projects/p/devices",
            page: 0,
            kind: "devices.list",
            params: &[],
        };
        let post = RequestInfo {
            method: "POST",
            ..get
        };
        assert!((0..50).all(|_| c.pick(&get).is_none()));
        let picks: Vec<Fault> = (0..50).filter_map(|_| c.pick(&post)).collect();
        assert_eq!(picks.len(), 50);
        assert!(picks.contains(&Fault::AppliedThenUnavailable));
        assert!(picks.contains(&Fault::AppliedThenDropped));
    }
}
