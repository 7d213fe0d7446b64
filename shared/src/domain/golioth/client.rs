//! The Golioth Management REST client: one project, one API key, every call through the
//! `HttpClient` port (so it runs under Spin and natively) with per-request timeout, bounded
//! retries and full-jitter backoff that honours `Retry-After`.
//!
//! Paths and shapes follow GOLIOTH_API.md: lists are `{list, page, perPage, total}` at the top
//! level, single objects are wrapped in `{data}`, every success is HTTP 200 (create and delete
//! included), and authentication is the `x-api-key` header.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, header};
use serde_json::{Value, json};

use super::error::GoliothError;
use super::listing::{DeviceListing, DevicePage, ListingTracker};
use super::requests::{DeviceUpdate, NewDevice};
use super::retry::{RetryPolicy, bounded, parse_retry_after};
use super::types::{
    Blueprint, BlueprintId, CohortId, Credential, Device, GoliothDeviceId, Project, ProjectId,
    ShapeError, Tag, TagId, TagMap, uint_field,
};
use crate::base::ports::{Clock, HttpClient};
use crate::base::settings::{DEFAULT_GOLIOTH_BASE_URL, Secret};

/// The largest page Golioth serves ("Must be between 1 and 100 (inclusive). Default is 100.").
pub const MAX_PER_PAGE: u32 = 100;

/// A ceiling on pages per listing, so a server that never answers a short page cannot keep a
/// listing going forever (1,000,000 devices at 100 per page).
pub const DEFAULT_MAX_PAGES: u32 = 10_000;

/// What a create made: the device, and whether an earlier attempt of this call had made it and
/// it was found by looking (its answer was lost).
#[derive(Debug, Clone)]
pub struct Created {
    pub device: Device,
    pub adopted: bool,
}

/// Where and as whom to talk to Golioth. `Debug` shows the key as `Secret(***)`.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    base_url: String,
    project_id: ProjectId,
    api_key: Secret,
    api_key_header: HeaderValue,
    /// Per-request timeout, enforced by the `HttpClient` port. Golioth's own client uses 10–30 s
    /// for list calls ([PGT]); 15 s leaves room inside a 20 s sync slice for one retry.
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// `base_url` is the service's (default [`DEFAULT_GOLIOTH_BASE_URL`]); paths are appended
    /// under `/v1/…`. It must be http(s), without credentials, query or fragment.
    pub fn new(
        base_url: &str,
        project_id: ProjectId,
        api_key: Secret,
    ) -> Result<Self, GoliothError> {
        let base_url = normalize_base_url(base_url)?;
        let mut api_key_header = HeaderValue::from_str(api_key.expose())
            .ok()
            .filter(|_| !api_key.expose().trim().is_empty())
            .ok_or_else(|| {
                GoliothError::InvalidInput(
                    "the API key is empty or has characters not allowed in an HTTP header".into(),
                )
            })?;
        // `http`'s Debug prints sensitive headers as `Sensitive`.
        api_key_header.set_sensitive(true);
        Ok(ClientConfig {
            base_url,
            project_id,
            api_key,
            api_key_header,
            timeout: Duration::from_secs(15),
            retry: RetryPolicy::default(),
        })
    }

    /// The default endpoint, `https://api.golioth.io`.
    pub fn golioth(project_id: ProjectId, api_key: Secret) -> Result<Self, GoliothError> {
        Self::new(DEFAULT_GOLIOTH_BASE_URL, project_id, api_key)
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn project_id(&self) -> &ProjectId {
        &self.project_id
    }

    /// The key, for callers that must store it (encrypted) again. Never log the result.
    pub fn api_key(&self) -> &Secret {
        &self.api_key
    }
}

fn normalize_base_url(raw: &str) -> Result<String, GoliothError> {
    let bad = |why: &str| GoliothError::InvalidInput(format!("base URL {why}"));
    let url = url::Url::parse(raw.trim()).map_err(|_| bad("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be http or https"));
    }
    if url.host_str().is_none() {
        return Err(bad("needs a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Filters and knobs of the device listing (GOLIOTH_API.md §3).
#[derive(Debug, Clone)]
pub struct ListDevicesOptions {
    /// 1..=100; default 100.
    pub per_page: u32,
    /// Put this LightDB State path into each device's `data`, saving one request per device.
    pub state_path: Option<String>,
    /// Full-match name filter (`deviceName`).
    pub device_name: Option<String>,
    /// Full-match hardware id filter (`hardwareId`).
    pub hardware_id: Option<String>,
    /// Devices must have all these tags. Sent as repeated `tags=` keys, grpc-gateway's convention
    /// for repeated query fields: UNCERTAIN for Golioth (GOLIOTH_API.md §3).
    pub tag_ids: Vec<TagId>,
    pub blueprint_id: Option<BlueprintId>,
    pub cohort_id: Option<CohortId>,
    pub enabled: Option<bool>,
    /// Pages fetched at once by [`GoliothClient::list_devices`] once `total` is known. A few at
    /// most: Golioth publishes no rate limit (§11.11).
    pub concurrency: usize,
    /// Stop (incomplete) after this many pages.
    pub max_pages: u32,
}

impl Default for ListDevicesOptions {
    fn default() -> Self {
        ListDevicesOptions {
            per_page: MAX_PER_PAGE,
            state_path: None,
            device_name: None,
            hardware_id: None,
            tag_ids: Vec::new(),
            blueprint_id: None,
            cohort_id: None,
            enabled: None,
            concurrency: 4,
            max_pages: DEFAULT_MAX_PAGES,
        }
    }
}

impl ListDevicesOptions {
    fn query(&self, page: u32) -> Result<String, GoliothError> {
        if !(1..=MAX_PER_PAGE).contains(&self.per_page) {
            return Err(GoliothError::InvalidInput(format!(
                "perPage must be between 1 and {MAX_PER_PAGE}"
            )));
        }
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("page", &page.to_string());
        q.append_pair("perPage", &self.per_page.to_string());
        if let Some(p) = &self.state_path {
            q.append_pair("statePath", p);
        }
        if let Some(n) = &self.device_name {
            q.append_pair("deviceName", n);
        }
        if let Some(h) = &self.hardware_id {
            q.append_pair("hardwareId", h);
        }
        for t in &self.tag_ids {
            q.append_pair("tags", t.as_str());
        }
        if let Some(b) = &self.blueprint_id {
            q.append_pair("blueprintId", b.as_str());
        }
        if let Some(c) = &self.cohort_id {
            q.append_pair("cohortId", c.as_str());
        }
        if let Some(e) = self.enabled {
            q.append_pair("enabled", if e { "true" } else { "false" });
        }
        Ok(q.finish())
    }
}

/// Percent-encode one path segment (RFC 3986 unreserved characters stay as they are).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A LightDB State path as URL path segments: `a/b c` → `a/b%20c`. Empty segments are dropped;
/// `.` and `..` are refused, since a URL resolver would climb out of the device's `data`.
fn encode_state_path(path: &str) -> Result<String, GoliothError> {
    let mut segments = Vec::new();
    for s in path.split('/').filter(|s| !s.is_empty()) {
        if s == "." || s == ".." {
            return Err(GoliothError::InvalidInput(
                "a LightDB State path cannot contain `.` or `..` segments".into(),
            ));
        }
        segments.push(encode_segment(s));
    }
    Ok(segments.join("/"))
}

/// A failed call, plus whether an earlier attempt may already have taken effect (so a create can
/// recognise its own first attempt in a duplicate).
struct Failure {
    error: GoliothError,
    earlier_outcome_unknown: bool,
}

impl From<Failure> for GoliothError {
    fn from(f: Failure) -> Self {
        f.error
    }
}

impl From<GoliothError> for Failure {
    fn from(error: GoliothError) -> Self {
        Failure {
            error,
            earlier_outcome_unknown: false,
        }
    }
}

/// Client for one Golioth project. Cheap to build per run (and to clone); holds no connection
/// itself.
#[derive(Clone)]
pub struct GoliothClient<'a> {
    http: &'a dyn HttpClient,
    clock: &'a dyn Clock,
    config: ClientConfig,
}

impl fmt::Debug for GoliothClient<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoliothClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn shape(what: &str) -> impl Fn(ShapeError) -> GoliothError + '_ {
    move |e| GoliothError::Decode(format!("{what}: {e}"))
}

/// The `data` member of a single-object response.
fn data(mut v: Value, what: &str) -> Result<Value, GoliothError> {
    match v.get_mut("data").map(Value::take) {
        Some(d) if !d.is_null() => Ok(d),
        _ => Err(GoliothError::Decode(format!(
            "{what}: response has no `data`"
        ))),
    }
}

/// `{list, page, perPage, total}` → items (entries without a usable id counted, not kept).
struct ListPage<T> {
    items: Vec<T>,
    invalid: usize,
    per_page: Option<u64>,
    total: Option<u64>,
}

fn list_page<T>(
    v: &Value,
    what: &str,
    parse: impl Fn(&Value) -> Result<T, ShapeError>,
) -> Result<ListPage<T>, GoliothError> {
    let obj = v
        .as_object()
        .ok_or_else(|| GoliothError::Decode(format!("{what}: expected a JSON object")))?;
    let mut items = Vec::new();
    let mut invalid = 0;
    match obj.get("list") {
        Some(Value::Array(list)) => {
            items.reserve(list.len());
            for entry in list {
                match parse(entry) {
                    Ok(item) => items.push(item),
                    Err(_) => invalid += 1,
                }
            }
        }
        // An empty list may be omitted or null (grpc-gateway omits empty repeated fields
        // unless told otherwise).
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(GoliothError::Decode(format!(
                "{what}: `list` is not an array"
            )));
        }
    }
    Ok(ListPage {
        items,
        invalid,
        per_page: uint_field(obj, "perPage"),
        total: uint_field(obj, "total"),
    })
}

impl<'a> GoliothClient<'a> {
    pub fn new(http: &'a dyn HttpClient, clock: &'a dyn Clock, config: ClientConfig) -> Self {
        GoliothClient {
            http,
            clock,
            config,
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn project_path(&self, rest: &str) -> String {
        format!("/v1/projects/{}{rest}", self.config.project_id.as_str())
    }

    // ---------------------------------------------------------------------------------------
    // Transport: one attempt, then the retry loop
    // ---------------------------------------------------------------------------------------

    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        body: &Option<Bytes>,
    ) -> Result<Value, GoliothError> {
        let url = format!("{}{path}", self.config.base_url);
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(url.as_str())
            .header("x-api-key", self.config.api_key_header.clone())
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let req = builder
            .body(body.clone().unwrap_or_default())
            .map_err(|_| {
                GoliothError::InvalidInput(format!("cannot build a request for {path}"))
            })?;
        let resp = self.http.send(req, self.config.timeout).await?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            let body = resp.body();
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(json!({}));
            }
            // The error text says where parsing stopped; it never quotes the body.
            return serde_json::from_slice(body).map_err(|e| {
                let route = path.split('?').next().unwrap_or(path);
                GoliothError::Decode(format!("{method} {route}: {e}"))
            });
        }
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.clock.now()));
        Err(GoliothError::from_response(
            status,
            resp.body(),
            retry_after,
        ))
    }

    /// Send with retries: retryable failures (429, 5xx but 501, timeouts, broken connections,
    /// cut bodies) are retried up to `max_attempts`, waiting `Retry-After` (clamped) when given,
    /// else a full-jitter backoff. Non-idempotent POSTs are retried too: the creates that use
    /// them recognise their own earlier attempt through Golioth's uniqueness rules.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let body = body.map(|b| Bytes::from(b.to_string()));
        let policy = &self.config.retry;
        let mut earlier_outcome_unknown = false;
        let mut attempt = 1;
        loop {
            match self.attempt(&method, path, &body).await {
                Ok(v) => return Ok(v),
                Err(error) => {
                    if !error.is_retryable() || attempt >= policy.max_attempts.max(1) {
                        return Err(Failure {
                            error,
                            earlier_outcome_unknown,
                        });
                    }
                    earlier_outcome_unknown |= error.outcome_unknown();
                    let delay = policy.delay(attempt, error.retry_after(), rand::random::<f64>());
                    self.clock.sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn get(&self, path: &str) -> Result<Value, GoliothError> {
        Ok(self.call(Method::GET, path, None).await?)
    }

    // ---------------------------------------------------------------------------------------
    // Projects
    // ---------------------------------------------------------------------------------------

    /// `GET /v1/projects/{projectId}`: the project, notably its `organizationId`. Also the
    /// cheapest check that the key works for this project.
    pub async fn get_project(&self) -> Result<Project, GoliothError> {
        let v = self.get(&self.project_path("")).await?;
        Project::from_json(&data(v, "project")?).map_err(shape("project"))
    }

    /// `GET /v1/projects` → `{list}` (no paging): the projects the key can see, which for an API
    /// key is its one project.
    pub async fn list_projects(&self) -> Result<Vec<Project>, GoliothError> {
        let v = self.get("/v1/projects").await?;
        Ok(list_page(&v, "projects", Project::from_json)?.items)
    }

    // ---------------------------------------------------------------------------------------
    // Devices
    // ---------------------------------------------------------------------------------------

    /// One page of the device listing (0-based). The sync engine fetches pages in slices and
    /// judges completeness with a [`ListingTracker`].
    pub async fn list_devices_page(
        &self,
        page: u32,
        opts: &ListDevicesOptions,
    ) -> Result<DevicePage, GoliothError> {
        let path = format!("{}?{}", self.project_path("/devices"), opts.query(page)?);
        let v = self.get(&path).await?;
        let p = list_page(&v, "device list", Device::from_json)?;
        Ok(DevicePage {
            page,
            requested_per_page: opts.per_page,
            devices: p.items,
            per_page: p.per_page,
            total: p.total,
            invalid_entries: p.invalid,
        })
    }

    /// Pages `pages` with at most `concurrency` requests in flight, returned in page order.
    pub async fn list_devices_pages(
        &self,
        pages: Range<u32>,
        opts: &ListDevicesOptions,
        concurrency: usize,
    ) -> Vec<(u32, Result<DevicePage, GoliothError>)> {
        let mut out = bounded(pages, concurrency, |p| async move {
            (p, self.list_devices_page(p, opts).await)
        })
        .await;
        out.sort_by_key(|(p, _)| *p);
        out
    }

    /// Every device: page 0, then the remaining pages `concurrency` at a time, until `total` is
    /// reached or a short page arrives; deduplicated by id. A page that still fails after its
    /// retries fails the listing. The summary says whether the listing is complete and `total`
    /// stayed stable; only then may a caller infer deletions.
    pub async fn list_devices(
        &self,
        opts: &ListDevicesOptions,
    ) -> Result<DeviceListing, GoliothError> {
        let mut tracker = ListingTracker::new();
        let mut devices = tracker.record(self.list_devices_page(0, opts).await?);
        let concurrency = u32::try_from(opts.concurrency.max(1)).unwrap_or(u32::MAX);
        while let Some(next) = tracker.next_page() {
            if next >= opts.max_pages {
                break;
            }
            let expected = tracker.expected_pages().unwrap_or(0).max(next + 1);
            let end = expected
                .min(next.saturating_add(concurrency))
                .min(opts.max_pages);
            let window = self
                .list_devices_pages(next..end, opts, opts.concurrency)
                .await;
            for (_, page) in window {
                devices.extend(tracker.record(page?));
            }
        }
        Ok(DeviceListing {
            devices,
            summary: tracker.summary(),
        })
    }

    /// Devices whose name is exactly `name` (`deviceName` filter); used before creating, so a
    /// create is idempotent.
    pub async fn find_devices_by_name(&self, name: &str) -> Result<Vec<Device>, GoliothError> {
        let opts = ListDevicesOptions {
            device_name: Some(name.to_owned()),
            ..ListDevicesOptions::default()
        };
        Ok(self.list_devices(&opts).await?.devices)
    }

    /// Devices holding exactly this hardware id (`hardwareId` filter).
    pub async fn find_devices_by_hardware_id(
        &self,
        hardware_id: &str,
    ) -> Result<Vec<Device>, GoliothError> {
        let opts = ListDevicesOptions {
            hardware_id: Some(hardware_id.to_owned()),
            ..ListDevicesOptions::default()
        };
        Ok(self.list_devices(&opts).await?.devices)
    }

    /// `GET …/devices/{id}` → `{data}`. A device deleted in Golioth answers `NotFound`.
    pub async fn get_device(&self, id: &GoliothDeviceId) -> Result<Device, GoliothError> {
        let v = self.get(&self.device_path(id, "")).await?;
        Device::from_json(&data(v, "device")?).map_err(shape("device"))
    }

    /// Several devices, `concurrency` at a time, in completion order.
    pub async fn get_devices(
        &self,
        ids: &[GoliothDeviceId],
        concurrency: usize,
    ) -> Vec<(GoliothDeviceId, Result<Device, GoliothError>)> {
        bounded(ids, concurrency, |id| async move {
            (id.clone(), self.get_device(id).await)
        })
        .await
    }

    fn device_path(&self, id: &GoliothDeviceId, rest: &str) -> String {
        self.project_path(&format!("/devices/{}{rest}", id.as_str()))
    }

    /// `POST …/devices` → 200 `{data}`. Safe to repeat: when an attempt's outcome is unknown
    /// (no answer, a broken connection, a 5xx) and the call then fails — with a duplicate on a
    /// retry (the first attempt created it) or with the unknown outcome itself — Golioth is asked
    /// whether the device exists ([`GoliothClient::find_created`]), and the device is returned when it
    /// is the one `new` describes. Otherwise the original error stands.
    pub async fn create_device(&self, new: &NewDevice) -> Result<Device, GoliothError> {
        self.create_device_once(new).await.map(|c| c.device)
    }

    /// [`GoliothClient::create_device`], saying whether the device was found rather than created
    /// by this call (`adopted`): the caller then checks it is not already someone else's.
    pub async fn create_device_once(&self, new: &NewDevice) -> Result<Created, GoliothError> {
        let body = new.to_json()?;
        match self
            .call(Method::POST, &self.project_path("/devices"), Some(body))
            .await
        {
            Ok(v) => Ok(Created {
                device: Device::from_json(&data(v, "created device")?)
                    .map_err(shape("created device"))?,
                adopted: false,
            }),
            Err(f)
                if f.error.outcome_unknown()
                    || (f.error.is_duplicate() && f.earlier_outcome_unknown) =>
            {
                match self.find_created(new).await {
                    Ok(Some(device)) => Ok(Created {
                        device,
                        adopted: true,
                    }),
                    _ => Err(f.error),
                }
            }
            Err(f) => Err(f.error),
        }
    }

    /// The device a create of `new` made, if Golioth holds it: looked up by its first hardware
    /// id (unique per project), else by name; it must carry the same name and every hardware id.
    pub async fn find_created(&self, new: &NewDevice) -> Result<Option<Device>, GoliothError> {
        let candidates = match new.hardware_ids.first() {
            Some(h) => self.find_devices_by_hardware_id(h).await?,
            None => self.find_devices_by_name(&new.name).await?,
        };
        Ok(candidates.into_iter().find(|d| {
            d.name.as_deref() == Some(new.name.as_str())
                && new.hardware_ids.iter().all(|h| d.hardware_ids.contains(h))
        }))
    }

    /// `PATCH …/devices/{id}` with only the fields set → `{data}`. A PATCH is idempotent; when the
    /// call ends with an unknown outcome, the device is read back and returned if it shows the
    /// update (the caller's base is then what Golioth holds), otherwise the error stands.
    pub async fn update_device(
        &self,
        id: &GoliothDeviceId,
        update: &DeviceUpdate,
    ) -> Result<Device, GoliothError> {
        let body = update.to_json()?;
        match self
            .call(Method::PATCH, &self.device_path(id, ""), Some(body))
            .await
        {
            Ok(v) => {
                Device::from_json(&data(v, "updated device")?).map_err(shape("updated device"))
            }
            Err(f) if f.error.outcome_unknown() => match self.get_device(id).await {
                Ok(d) if update.is_applied_to(&d) => Ok(d),
                _ => Err(f.error),
            },
            Err(f) => Err(f.error),
        }
    }

    /// `DELETE …/devices/{id}` → 200 `{}`. A `NotFound` after an attempt whose outcome is unknown
    /// means that attempt deleted it, which counts as success; a call that ends with an unknown
    /// outcome is resolved by reading the device (gone = deleted).
    pub async fn delete_device(&self, id: &GoliothDeviceId) -> Result<(), GoliothError> {
        match self
            .call(Method::DELETE, &self.device_path(id, ""), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(f) if f.error.is_not_found() && f.earlier_outcome_unknown => Ok(()),
            Err(f) if f.error.outcome_unknown() => match self.get_device(id).await {
                Err(e) if e.is_not_found() => Ok(()),
                _ => Err(f.error),
            },
            Err(f) => Err(f.error),
        }
    }

    /// `POST …/devices/{id}/credentials` with `{"type":"PRE_SHARED_KEY", identity,
    /// preSharedKey}`: without credentials a new device cannot connect. The server appends
    /// `@<projectId>` to the identity; identities are unique per project. If an attempt's answer
    /// was lost and the retry meets it, the result is `Duplicate`: the credential exists, but its
    /// details are not returned, so callers can treat `is_duplicate()` as done.
    pub async fn create_psk_credential(
        &self,
        id: &GoliothDeviceId,
        identity: &str,
        psk: &Secret,
    ) -> Result<Credential, GoliothError> {
        if identity.trim().is_empty() || psk.expose().is_empty() {
            return Err(GoliothError::InvalidInput(
                "a PSK credential needs an identity and a key".into(),
            ));
        }
        let body =
            json!({"type": "PRE_SHARED_KEY", "identity": identity, "preSharedKey": psk.expose()});
        let v = self
            .call(
                Method::POST,
                &self.device_path(id, "/credentials"),
                Some(body),
            )
            .await?;
        Credential::from_json(&data(v, "credential")?).map_err(shape("credential"))
    }

    // ---------------------------------------------------------------------------------------
    // Tags and blueprints
    // ---------------------------------------------------------------------------------------

    /// Every entry of a paged `{list,page,perPage,total}` resource other than devices.
    async fn list_all<T>(
        &self,
        resource: &str,
        filter: Option<(&str, &str)>,
        parse: impl Fn(&Value) -> Result<T, ShapeError> + Copy,
    ) -> Result<Vec<T>, GoliothError> {
        let mut out = Vec::new();
        for page in 0..DEFAULT_MAX_PAGES {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("page", &page.to_string());
            q.append_pair("perPage", &MAX_PER_PAGE.to_string());
            if let Some((k, v)) = filter {
                q.append_pair(k, v);
            }
            let path = format!(
                "{}?{}",
                self.project_path(&format!("/{resource}")),
                q.finish()
            );
            let v = self.get(&path).await?;
            let p = list_page(&v, resource, parse)?;
            let per_page = p
                .per_page
                .filter(|n| *n > 0)
                .unwrap_or(u64::from(MAX_PER_PAGE));
            let entries = (p.items.len() + p.invalid) as u64;
            out.extend(p.items);
            let reached_total = p
                .total
                .is_some_and(|t| (u64::from(page) + 1).saturating_mul(per_page) >= t);
            if entries < per_page || reached_total {
                break;
            }
        }
        Ok(out)
    }

    /// `GET …/tags`, every page.
    pub async fn list_tags(&self) -> Result<Vec<Tag>, GoliothError> {
        self.list_all("tags", None, Tag::from_json).await
    }

    /// The tag named exactly `name`, if any (`tagName` filter).
    pub async fn find_tag(&self, name: &str) -> Result<Option<Tag>, GoliothError> {
        let tags = self
            .list_all("tags", Some(("tagName", name)), Tag::from_json)
            .await?;
        Ok(tags.into_iter().find(|t| t.name.as_deref() == Some(name)))
    }

    /// The name ↔ id map for this run.
    pub async fn tag_map(&self) -> Result<TagMap, GoliothError> {
        Ok(TagMap::from_tags(self.list_tags().await?))
    }

    /// `POST …/tags` with `{"name"}` → `{data}`. A duplicate after an attempt with an unknown
    /// outcome returns the tag that attempt created.
    pub async fn create_tag(&self, name: &str) -> Result<Tag, GoliothError> {
        match self
            .call(
                Method::POST,
                &self.project_path("/tags"),
                Some(json!({"name": name})),
            )
            .await
        {
            Ok(v) => Tag::from_json(&data(v, "created tag")?).map_err(shape("created tag")),
            Err(f)
                if f.error.outcome_unknown()
                    || (f.error.is_duplicate() && f.earlier_outcome_unknown) =>
            {
                match self.find_tag(name).await {
                    Ok(Some(tag)) => Ok(tag),
                    _ => Err(f.error),
                }
            }
            Err(f) => Err(f.error),
        }
    }

    /// Ids for `names`, creating the tags the map lacks first (device writes fail on unknown
    /// tags). A tag someone else created meanwhile (duplicate) is looked up instead.
    pub async fn ensure_tags(
        &self,
        map: &mut TagMap,
        names: &[String],
    ) -> Result<Vec<TagId>, GoliothError> {
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            if let Some(id) = map.id_of(name) {
                ids.push(id.clone());
                continue;
            }
            let tag = match self.create_tag(name).await {
                Ok(t) => t,
                Err(e) if e.is_duplicate() => self.find_tag(name).await?.ok_or(e)?,
                Err(e) => return Err(e),
            };
            ids.push(tag.id.clone());
            map.insert(tag);
        }
        Ok(ids)
    }

    /// `GET …/blueprints`, every page.
    pub async fn list_blueprints(&self) -> Result<Vec<Blueprint>, GoliothError> {
        self.list_all("blueprints", None, Blueprint::from_json)
            .await
    }

    // ---------------------------------------------------------------------------------------
    // LightDB State
    // ---------------------------------------------------------------------------------------

    /// `GET …/devices/{id}/data/{path}` → `{"data": <any JSON>}`; `None` when the value is null.
    /// An empty `path` reads the whole document at `…/data`, which works in practice but is not
    /// in the OAS: UNCERTAIN (GOLIOTH_API.md §6.1). What Golioth answers for a path that holds
    /// nothing (null or 404) is not documented either.
    pub async fn read_state(
        &self,
        id: &GoliothDeviceId,
        path: &str,
    ) -> Result<Option<Value>, GoliothError> {
        let encoded = encode_state_path(path)?;
        let rest = if encoded.is_empty() {
            "/data".to_owned()
        } else {
            format!("/data/{encoded}")
        };
        let mut v = self.get(&self.device_path(id, &rest)).await?;
        Ok(v.get_mut("data").map(Value::take).filter(|d| !d.is_null()))
    }

    /// One state path for several devices, `concurrency` at a time, in completion order. Prefer
    /// `statePath` on the listing when reading the same path for a whole fleet.
    pub async fn read_states(
        &self,
        ids: &[GoliothDeviceId],
        path: &str,
        concurrency: usize,
    ) -> Vec<(GoliothDeviceId, Result<Option<Value>, GoliothError>)> {
        bounded(ids, concurrency, |id| async move {
            (id.clone(), self.read_state(id, path).await)
        })
        .await
    }
}

/// A fresh random pre-shared key for a new device's credential: 32 hex characters (128 bits).
/// Golioth's PSK length limits are not documented.
pub fn generate_psk() -> Secret {
    Secret::new(hex::encode(rand::random::<[u8; 16]>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_rules() {
        let p = ProjectId::parse("p").unwrap();
        let k = || Secret::new("key");
        assert_eq!(
            ClientConfig::new("https://api.golioth.io/", p.clone(), k())
                .unwrap()
                .base_url(),
            "https://api.golioth.io"
        );
        assert_eq!(
            ClientConfig::new("http://127.0.0.1:8080/prefix/", p.clone(), k())
                .unwrap()
                .base_url(),
            "http://127.0.0.1:8080/prefix"
        );
        for bad in [
            "ftp://x",
            "not a url",
            "https://u:p@x",
            "https://x/?a=b",
            "https://x/#f",
        ] {
            assert!(ClientConfig::new(bad, p.clone(), k()).is_err(), "{bad}");
        }
        assert!(ClientConfig::new("https://x", p.clone(), Secret::new("")).is_err());
        assert!(ClientConfig::new("https://x", p, Secret::new("a\nb")).is_err());
    }

    #[test]
    fn config_debug_hides_the_key() {
        let c = ClientConfig::golioth(
            ProjectId::parse("p").unwrap(),
            Secret::new("k-12345-very-secret"),
        )
        .unwrap();
        let s = format!("{c:?}");
        assert!(!s.contains("k-12345-very-secret"), "{s}");
        assert!(s.contains("Secret(***)"));
    }

    #[test]
    fn list_query() {
        let opts = ListDevicesOptions {
            state_path: Some("sensors/battery".into()),
            tag_ids: vec![TagId::parse("a").unwrap(), TagId::parse("b").unwrap()],
            enabled: Some(true),
            ..ListDevicesOptions::default()
        };
        assert_eq!(
            opts.query(3).unwrap(),
            "page=3&perPage=100&statePath=sensors%2Fbattery&tags=a&tags=b&enabled=true"
        );
        let bad = ListDevicesOptions {
            per_page: 101,
            ..ListDevicesOptions::default()
        };
        assert!(bad.query(0).is_err());
    }

    #[test]
    fn state_path_encoding() {
        assert_eq!(encode_state_path("/a/b c/ü/").unwrap(), "a/b%20c/%C3%BC");
        assert_eq!(encode_state_path("").unwrap(), "");
        assert!(encode_state_path("../x").is_err());
        assert!(encode_state_path("a/./x").is_err());
        assert_eq!(encode_state_path("a..b").unwrap(), "a..b");
    }

    #[test]
    fn psk_is_random_hex() {
        let a = generate_psk();
        assert_eq!(a.expose().len(), 32);
        assert_ne!(a.expose(), generate_psk().expose());
    }
}
