//! One run's executor: slices of work (a window of listing pages, a chunk of unseen assigned
//! devices, a chunk of targeted devices), each planned by the pure core and carried out as
//!
//! 1. remote writes with bounded concurrency — tags created first, and a device re-read just
//!    before a PATCH: if Golioth's copy moved since it was listed, the device is re-planned from
//!    the fresh copy (once), never patched blind;
//! 2. one transaction: fence on the lease, local inserts and version-conditional updates in bulk,
//!    links/bases/statuses, conflicts and sync-log rows in bulk, then cursor + stats.
//!
//! A device the platform edited meanwhile (its `version` moved) is skipped by the conditional
//! update and planned again from a fresh read in a second round; if it moves again it is left for
//! the next run. The window that remains: Golioth has no conditional write, so an edit made in
//! Golioth between the re-read and the PATCH of the same scalar field (name, enabled, blueprint,
//! cohort) is overwritten; tags and hardware ids are patched element-wise and are not affected.
//! A crash between remote writes and the commit redoes the slice: pushed values then show up as
//! converged on both sides, and a created device is found again by its hardware id (a device
//! created without hardware ids could be created twice in that window).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::EngineError;
use super::convert::{
    created_base, device_row, device_update, new_device, reason, remote_device, update_columns,
};
use super::progress::{Cursor, Phase, Stats, Target};
use crate::base::ctx::Ctx;
use crate::domain::golioth::{
    DEFAULT_MAX_PAGES, Device, DevicePage, GoliothClient, GoliothDeviceId, GoliothError,
    ListDevicesOptions, ListingTracker, MAX_PER_PAGE, TagMap, bounded, generate_psk,
};
use crate::domain::store::{self, runs::Lease, sync::Loaded, sync_log::LogRow};
use crate::domain::sync::{
    AssignmentWrite, ConflictChange, DevicePlan, Listing, LocalWrite, MatchBy, PageInput, Pairing,
    PendingConflict, RemoteDevice, RemoteWrite, SyncOptions, match_page, pending_create_base,
    plan_local_only, plan_page, plan_pairing,
};

/// Golioth writes in flight at once (GOLIOTH_API.md §11.11: "a bounded concurrency of a few").
pub const REMOTE_CONCURRENCY: usize = 8;
/// Listing pages fetched at once when the budget allows: the same bound as writes (a few
/// requests in flight, GOLIOTH_API.md §11.11). At Golioth's 100 devices per page this is what
/// sets a large fleet's listing time (⌈N/100⌉ / 8 round trips).
pub const PAGE_CONCURRENCY: u32 = 8;
/// Devices per local-only or targeted slice.
pub const CHUNK: usize = 100;

/// What happened to a device's Golioth write.
#[derive(Debug, Clone)]
enum Outcome {
    NotNeeded,
    Created(RemoteDevice),
    Updated(RemoteDevice),
    Deleted,
    Failed(String),
    Skipped(&'static str),
}

/// One device's plan with what it was planned from.
#[derive(Debug, Clone)]
struct Item {
    plan: DevicePlan,
    local: Option<Loaded>,
    remote: Option<RemoteDevice>,
    remote_pending: Vec<PendingConflict>,
    /// The id of a device this plan creates locally.
    new_local_id: Option<Uuid>,
    outcome: Outcome,
    /// A second-round item (already counted as processed).
    retry: bool,
    /// Its Golioth create failed without a clear answer (it may have been made): the write-ahead
    /// marker stays for the next run.
    unsettled: bool,
}

impl Item {
    fn new(
        plan: DevicePlan,
        local: Option<Loaded>,
        remote: Option<RemoteDevice>,
        remote_pending: Vec<PendingConflict>,
        retry: bool,
    ) -> Item {
        let new_local_id = matches!(plan.local, Some(LocalWrite::Create { .. })).then(Uuid::new_v4);
        Item {
            plan,
            local,
            remote,
            remote_pending,
            new_local_id,
            outcome: Outcome::NotNeeded,
            retry,
            unsettled: false,
        }
    }

    fn device_id(&self) -> Option<Uuid> {
        self.plan.device_id.or(self.new_local_id)
    }

    /// The Golioth id after this item's writes.
    fn external_id(&self) -> Option<String> {
        match &self.outcome {
            Outcome::Created(r) => Some(r.id.clone()),
            _ => self.plan.external_id.clone(),
        }
    }

    /// Linked now by a hardware-id match that finishes a Golioth create an earlier run sent and
    /// never committed (its assignment still carries the `pending_create` marker).
    fn finishes_a_create(&self) -> bool {
        let marked = self.local.as_ref().is_some_and(|l| {
            l.state
                .assignment
                .as_ref()
                .is_some_and(|a| a.pending_create.is_some())
        });
        marked
            && matches!(
                self.plan.assignment,
                Some(AssignmentWrite::Link {
                    external_id: Some(_),
                    ..
                })
            )
            && !matches!(self.outcome, Outcome::Failed(_) | Outcome::Skipped(_))
    }

    /// The freshest Golioth copy known.
    fn remote_now(&self) -> Option<&RemoteDevice> {
        match &self.outcome {
            Outcome::Created(r) | Outcome::Updated(r) => Some(r),
            _ => self.remote.as_ref(),
        }
    }
}

/// A Golioth write's raw result (before conversion).
enum WriteResult {
    /// The device, a credential note, and whether it was found after a lost answer (adopted).
    Created(Box<Device>, Option<String>, bool),
    Updated(Box<Device>),
    Deleted,
    Stale(Box<Device>),
    Gone,
    Failed(String),
    /// Failed, and Golioth may have applied it all the same (no answer, or a 5xx).
    Unsettled(String),
}

/// Everything one slice's transaction writes, prepared from the items once the conditional
/// updates told which local writes applied.
#[derive(Default)]
struct Rows {
    links: Vec<Value>,
    bases: Vec<Value>,
    detach: Vec<Uuid>,
    unassign: Vec<Uuid>,
    statuses: Vec<Value>,
    open: Vec<Value>,
    refresh: Vec<Value>,
    supersede: Vec<Uuid>,
    auto: Vec<Value>,
    logs: Vec<LogRow>,
    batch: Stats,
    /// Items whose local write did not apply (edited meanwhile): planned again.
    leftover: Vec<usize>,
}

/// The executor of one claimed run.
pub(crate) struct Exec<'c> {
    pub ctx: &'c Ctx<'c>,
    pub client: GoliothClient<'c>,
    pub org: Uuid,
    pub service: Uuid,
    pub run: Uuid,
    pub owner: String,
    pub opts: SyncOptions,
    pub dry_run: bool,
    pub create_credentials: bool,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    pub tags: TagMap,
    pub tags_refreshed: bool,
    pub state_prefix: Option<Vec<String>>,
    pub cursor: Cursor,
    pub stats: Stats,
    /// Listing pages fetched per round trip window.
    pub fetch_window: u32,
    /// Pages a window asks for while no page has told the listing's `total` (the run's first
    /// window): as many as the service's links suggest, at most `fetch_window`, so a resync's
    /// first round trip already brings a full window. A guess that is too large costs only
    /// requests for pages past the end, which answer an empty list.
    pub first_window: u32,
    /// Golioth ids this slice's listing pages brought, stored (`sync_run_seen`) with the
    /// slice's commit; the cursor keeps no ids, so it stays small however large the fleet.
    pub pending_seen: Vec<String>,
    /// When this request's budget ends (a window is fetched ahead only with time to use it).
    pub deadline: Instant,
    /// The listing window fetched while the previous one was planned and written.
    pub prefetched: Option<(Range<u32>, Vec<PageResult>)>,
    /// The run's inserted rows when this executor last analyzed (0: not yet).
    pub analyzed_at: u64,
}

/// One fetched listing page: its number and what Golioth answered.
pub type PageResult = (u32, Result<DevicePage, GoliothError>);

/// Fetch the next listing window ahead only when at least this much budget is left, so a
/// request that is about to stop does not fetch pages the next one fetches again.
const PREFETCH_MIN_BUDGET: Duration = Duration::from_secs(1);

/// What a committed batch reports back.
struct Committed {
    processed: u64,
    leftover: Vec<usize>,
}

/// The slice's counters for the log line.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SliceCounts {
    pub pages: u64,
    pub devices: u64,
    pub local_writes: u64,
    pub remote_writes: u64,
    pub conflicts: u64,
    /// Where the slice's time went (ms): waiting for listing pages, loading the local side,
    /// planning, Golioth writes, the commit.
    pub fetch_ms: u64,
    pub load_ms: u64,
    pub plan_ms: u64,
    pub remote_ms: u64,
    pub commit_ms: u64,
}

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// The pages `tracker` still needs, `width` at most, below the page ceiling; `unknown` pages
/// while the listing's size is not known yet.
fn window_of(tracker: &ListingTracker, width: u32, unknown: u32) -> Option<Range<u32>> {
    let next = tracker.next_page().filter(|n| *n < DEFAULT_MAX_PAGES)?;
    let width = width.max(1);
    let end = match tracker.expected_pages() {
        Some(exp) => exp.max(next + 1).min(next + width),
        None => next + unknown.clamp(1, width),
    };
    Some(next..end.min(DEFAULT_MAX_PAGES))
}

impl<'c> Exec<'c> {
    fn list_options(&self) -> ListDevicesOptions {
        ListDevicesOptions {
            per_page: MAX_PER_PAGE,
            state_path: self.state_prefix.as_ref().map(|p| p.join("/")),
            concurrency: self.fetch_window as usize,
            ..ListDevicesOptions::default()
        }
    }

    /// Fetch the listing pages `range`, `fetch_window` at a time; the future borrows nothing of
    /// `self`, so it can run while `self` processes another window.
    fn fetch(&self, range: Range<u32>) -> impl Future<Output = Vec<PageResult>> + use<'c> {
        let (client, opts) = (self.client.clone(), self.list_options());
        let width = self.fetch_window as usize;
        async move { client.list_devices_pages(range, &opts, width).await }
    }

    /// The tag map, fetched from Golioth the first time a run needs it. A listing run fetches
    /// its next listing window at the same time (the first slice takes it from `prefetched`),
    /// so the tag request costs no round trip of its own.
    pub async fn load_tags(&mut self) -> Result<(), EngineError> {
        if let Some(map) = self.cursor.tag_map() {
            self.tags = map;
            return Ok(());
        }
        let window = match self.cursor.phase {
            Phase::Listing if self.prefetched.is_none() => self.next_window(),
            _ => None,
        };
        let Some(range) = window else {
            return self.refresh_tags().await;
        };
        let pages = self.fetch(range.clone());
        let (tags, pages) = futures::join!(self.refresh_tags(), pages);
        self.prefetched = Some((range, pages));
        tags
    }

    async fn refresh_tags(&mut self) -> Result<(), EngineError> {
        let tags = self
            .client
            .list_tags()
            .await
            .map_err(EngineError::Golioth)?;
        self.cursor.tags = Some(
            tags.iter()
                .filter_map(|t| Some((t.name.clone()?, t.id.as_str().to_owned())))
                .collect(),
        );
        self.tags = TagMap::from_tags(tags);
        Ok(())
    }

    /// Golioth devices as the core sees them; an unknown tag id refreshes the map once per run.
    async fn convert(&mut self, devices: &[Device]) -> Result<Vec<RemoteDevice>, EngineError> {
        let prefix = self.state_prefix.clone();
        let convert = |tags: &TagMap| {
            let mut unknown = false;
            let out: Vec<RemoteDevice> = devices
                .iter()
                .map(|d| {
                    let (r, u) = remote_device(d, tags, prefix.as_deref());
                    unknown |= !u.is_empty();
                    r
                })
                .collect();
            (out, unknown)
        };
        let (out, unknown) = convert(&self.tags);
        if !unknown || self.tags_refreshed {
            return Ok(out);
        }
        self.tags_refreshed = true;
        self.refresh_tags().await?;
        Ok(convert(&self.tags).0)
    }

    /// Do one slice. Returns the counters of what it did.
    pub async fn slice(&mut self) -> Result<SliceCounts, EngineError> {
        self.stats.slices += 1;
        match self.cursor.phase {
            Phase::Listing => self.listing_slice().await,
            Phase::LocalOnly => self.local_only_slice().await,
            Phase::Targets => self.targets_slice().await,
            Phase::Done => Ok(SliceCounts::default()),
        }
    }

    /// The listing pages still to fetch, `fetch_window` at most; `None` when the listing is
    /// finished (or at the page ceiling).
    fn next_window(&mut self) -> Option<Range<u32>> {
        let tracker = self.cursor.tracker.get_or_insert_with(ListingTracker::new);
        window_of(tracker, self.fetch_window, self.first_window)
    }

    /// Fetch the next window of listing pages (`fetch_window` at once) and process them as one
    /// batch: one load query, one plan, one commit with the advanced tracker. As soon as a window
    /// has arrived, the one after it is requested (what comes next follows from the pages'
    /// `page` / `total` alone), so Golioth's latency overlaps all of the database's work on this
    /// one: at most one window ahead, and only with budget left to use it.
    async fn listing_slice(&mut self) -> Result<SliceCounts, EngineError> {
        let Some(window) = self.next_window() else {
            // Finished (or the page ceiling): close the listing without a page.
            self.close_listing();
            return self.run_items(Vec::new()).await;
        };
        let opts = self.list_options();
        let fetch_started = Instant::now();
        let fetched = match self.prefetched.take() {
            Some((range, pages)) if range == window => pages,
            _ => {
                self.client
                    .list_devices_pages(window, &opts, self.fetch_window as usize)
                    .await
            }
        };
        let mut pages = Vec::new();
        for (_, page) in fetched {
            match page {
                Ok(p) => pages.push(p),
                // Later pages are fetched again by the next slice; the first one failing after
                // its retries fails this attempt of the run (it resumes from this page).
                Err(e) if pages.is_empty() => return Err(EngineError::Golioth(e)),
                Err(_) => break,
            }
        }
        let fetch_ms = ms_since(fetch_started);
        let budget_left = self.deadline.saturating_duration_since(Instant::now());
        let ahead = if self.fetch_window <= 1 || budget_left < PREFETCH_MIN_BUDGET {
            None
        } else {
            self.cursor
                .tracker
                .as_ref()
                .and_then(|t| window_of(&t.after(&pages), self.fetch_window, self.first_window))
        };
        let mut counts = match ahead {
            None => self.process_window(pages).await?,
            Some(range) => {
                let prefetch = self.fetch(range.clone());
                let (counts, fetched) = futures::join!(self.process_window(pages), prefetch);
                self.prefetched = Some((range, fetched));
                counts?
            }
        };
        counts.fetch_ms += fetch_ms;
        Ok(counts)
    }

    /// Record a fetched window in the tracker, then load, plan, run and commit its devices.
    async fn process_window(&mut self, pages: Vec<DevicePage>) -> Result<SliceCounts, EngineError> {
        // Devices an earlier slice already saw (offset paging shifted under a concurrent
        // change) are dropped here, as the in-memory tracker drops repeats within the window.
        let ids: Vec<String> = pages
            .iter()
            .flat_map(|p| p.devices.iter().map(|d| d.id.as_str().to_owned()))
            .collect();
        let (org, run) = (self.org, self.run);
        let before: HashSet<String> = store::in_org(self.ctx.db, org, |tx| {
            Box::pin(async move { store::sync::seen_before(tx, org, run, &ids).await })
        })
        .await?
        .into_iter()
        .collect();
        let tracker = self.cursor.tracker.get_or_insert_with(ListingTracker::new);
        let mut fresh = Vec::new();
        let n = pages.len() as u64;
        for page in pages {
            fresh.extend(tracker.record_with(page, &|id| before.contains(id.as_str())));
        }
        self.pending_seen
            .extend(fresh.iter().map(|d| d.id.as_str().to_owned()));
        let finished = tracker.is_finished();
        self.stats.pages += n;
        if finished {
            self.close_listing();
        }
        let remotes = self.convert(&fresh).await?;
        let mut counts = self.plan_and_run(remotes, Vec::new(), Vec::new()).await?;
        counts.pages = n;
        self.analyze_if_grown().await?;
        Ok(counts)
    }

    /// Analyze the tables a sync fills once its inserts (local devices, links, seen ids) pass
    /// 5,000 · 2^k rows (see `store::sync::analyze_sync_tables`): O(log n) times per run. Never
    /// in a dry run, nor in a resync, which creates and links nothing and leaves the tables'
    /// statistics as good as they were.
    async fn analyze_if_grown(&mut self) -> Result<(), EngineError> {
        const FIRST: u64 = 5_000;
        let grown = self.stats.created_local + self.stats.linked;
        let inserted = grown + self.stats.processed;
        if self.dry_run || grown == 0 || inserted < FIRST.max(self.analyzed_at.saturating_mul(2)) {
            return Ok(());
        }
        self.analyzed_at = inserted;
        store::sync::analyze_sync_tables(self.ctx.db).await?;
        Ok(())
    }

    /// The listing has no pages left: go on to the local-only pass if it was complete.
    fn close_listing(&mut self) {
        let complete = self
            .cursor
            .tracker
            .as_ref()
            .is_some_and(|t| t.is_finished() && t.summary().complete);
        self.stats.listing_complete = Some(complete);
        self.cursor.phase = if complete {
            Phase::LocalOnly
        } else {
            // A partial listing deletes nothing and creates nothing in Golioth.
            Phase::Done
        };
    }

    /// A cursor written before the store kept the listing's ids still carries them: store them
    /// once, before anything reads `sync_run_seen` (idempotent; the next commit drops them from
    /// the cursor).
    pub async fn store_legacy_seen(&mut self) -> Result<(), EngineError> {
        let Some(tracker) = self.cursor.tracker.as_mut() else {
            return Ok(());
        };
        let ids: Vec<String> = tracker
            .take_legacy_seen()
            .iter()
            .map(|id| id.as_str().to_owned())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let (org, run) = (self.org, self.run);
        store::in_org(self.ctx.db, org, |tx| {
            Box::pin(async move { store::sync::record_seen(tx, org, run, &ids).await })
        })
        .await?;
        Ok(())
    }

    async fn local_only_slice(&mut self) -> Result<SliceCounts, EngineError> {
        let (org, service, run, after) =
            (self.org, self.service, self.run, self.cursor.local_after);
        let rows = store::in_org(self.ctx.db, org, |tx| {
            Box::pin(async move {
                store::sync::load_unseen(tx, org, service, run, after, CHUNK as i64).await
            })
        })
        .await?;
        if rows.len() < CHUNK {
            self.cursor.phase = Phase::Done;
        }
        if let Some(last) = rows.last() {
            self.cursor.local_after = Some(last.state.device.id);
        }
        let excluded: HashSet<Uuid> = self.cursor.dry_paired.iter().copied().collect();
        let ids: Vec<Uuid> = rows
            .iter()
            .map(|l| l.state.device.id)
            .filter(|id| !excluded.contains(id))
            .collect();
        self.plan_and_run(Vec::new(), ids, Vec::new()).await
    }

    async fn targets_slice(&mut self) -> Result<SliceCounts, EngineError> {
        let start = self.cursor.targets_done.min(self.cursor.targets.len());
        let end = (start + CHUNK).min(self.cursor.targets.len());
        let chunk = self.cursor.targets[start..end].to_vec();
        self.cursor.targets_done = end;
        if end >= self.cursor.targets.len() {
            self.cursor.phase = Phase::Done;
        }
        let mut fetch: BTreeSet<String> = BTreeSet::new();
        let mut locals: Vec<Uuid> = Vec::new();
        for t in &chunk {
            match t {
                Target::Remote(id) => {
                    fetch.insert(id.clone());
                }
                Target::Local(id) => locals.push(*id),
            }
        }
        // The targeted local devices: linked ones are fetched by id, unlinked live ones are
        // looked up by hardware id (and name), so a targeted run never creates a duplicate.
        let targeted = if locals.is_empty() {
            Vec::new()
        } else {
            let keys = store::sync::PageKeys {
                device_ids: locals.clone(),
                ..Default::default()
            };
            let (org, service) = (self.org, self.service);
            store::in_org(self.ctx.db, org, |tx| {
                Box::pin(async move { store::sync::load_page(tx, org, service, &keys).await })
            })
            .await?
            .locals
        };
        let mut searches: Vec<(bool, String)> = Vec::new();
        for l in &targeted {
            match l.state.external_id() {
                Some(ext) => {
                    fetch.insert(ext.to_owned());
                }
                None if !l.state.is_deleted() => {
                    for h in &l.state.device.desired.hardware_ids {
                        searches.push((true, h.clone()));
                    }
                    if self.opts.match_by_name && !l.state.device.desired.name.is_empty() {
                        searches.push((false, l.state.device.desired.name.clone()));
                    }
                }
                None => {}
            }
        }
        let ids: Vec<GoliothDeviceId> = fetch
            .iter()
            .filter_map(|s| GoliothDeviceId::parse(s).ok())
            .collect();
        let mut found: HashMap<String, Device> = HashMap::new();
        let mut gone: Vec<String> = Vec::new();
        for (id, result) in self.client.get_devices(&ids, REMOTE_CONCURRENCY).await {
            match result {
                Ok(d) => {
                    found.insert(d.id.as_str().to_owned(), d);
                }
                Err(e) if e.is_not_found() => gone.push(id.as_str().to_owned()),
                Err(e) => return Err(EngineError::Golioth(e)),
            }
        }
        let client = &self.client;
        let searched = bounded(searches, REMOTE_CONCURRENCY, |(by_hw, key)| async move {
            if by_hw {
                client.find_devices_by_hardware_id(&key).await
            } else {
                client.find_devices_by_name(&key).await
            }
        })
        .await;
        for r in searched {
            for d in r.map_err(EngineError::Golioth)? {
                found.entry(d.id.as_str().to_owned()).or_insert(d);
            }
        }
        let mut devices: Vec<Device> = found.into_values().collect();
        devices.sort_by(|a, b| a.id.cmp(&b.id));
        let remotes = self.convert(&devices).await?;
        self.plan_and_run(remotes, locals, gone).await
    }

    /// Load the local side for `remotes` (plus the devices `alone` and those linked to `gone`
    /// Golioth ids), plan, and run the plans. Devices in `alone`, or linked to a `gone` id, that
    /// no remote paired with are planned as local-only after a complete view of them.
    async fn plan_and_run(
        &mut self,
        remotes: Vec<RemoteDevice>,
        alone: Vec<Uuid>,
        gone: Vec<String>,
    ) -> Result<SliceCounts, EngineError> {
        let mut counts = SliceCounts::default();
        let items = self
            .plan(&remotes, &alone, &gone, false, &mut counts)
            .await?;
        let leftover = self.run_batch(items, &mut counts).await?;
        if leftover.is_empty() {
            return Ok(counts);
        }
        // Second round for devices edited locally while this slice ran: plan them again from a
        // fresh read (and Golioth's copy after this slice's own writes).
        let mut retry_remotes = Vec::new();
        let mut retry_alone = Vec::new();
        for it in &leftover {
            match it.remote_now() {
                Some(r) => retry_remotes.push(r.clone()),
                None => retry_alone.extend(it.plan.device_id),
            }
        }
        let items = self
            .plan(&retry_remotes, &retry_alone, &[], true, &mut counts)
            .await?;
        let still = self.run_batch(items, &mut counts).await?;
        if !still.is_empty() {
            let mut batch = Stats::default();
            for it in &still {
                batch.skipped += 1;
                batch.detail(json!({
                    "device_id": it.plan.device_id,
                    "external_id": it.plan.external_id,
                    "status": "skipped",
                    "reason": "edited locally while the run wrote it; planned again next run",
                }));
            }
            self.stats.add(&batch);
            self.commit_progress().await?;
        }
        Ok(counts)
    }

    async fn plan(
        &mut self,
        remotes: &[RemoteDevice],
        alone: &[Uuid],
        gone: &[String],
        retry: bool,
        counts: &mut SliceCounts,
    ) -> Result<Vec<Item>, EngineError> {
        if remotes.is_empty() && alone.is_empty() && gone.is_empty() {
            return Ok(Vec::new());
        }
        let load_started = Instant::now();
        let by_name = self.opts.match_by_name;
        let keys = store::sync::PageKeys {
            external_ids: remotes
                .iter()
                .map(|r| r.id.clone())
                .chain(gone.iter().cloned())
                .collect(),
            match_keys: remotes
                .iter()
                .map(|r| store::sync::MatchKey {
                    id: r.id.clone(),
                    hw: r.desired.hardware_ids.clone(),
                    name: (by_name && !r.desired.name.is_empty()).then(|| r.desired.name.clone()),
                })
                .collect(),
            device_ids: alone.to_vec(),
        };
        let (org, service) = (self.org, self.service);
        let rows = store::in_org(self.ctx.db, org, |tx| {
            Box::pin(async move { store::sync::load_page(tx, org, service, &keys).await })
        })
        .await?;
        counts.load_ms += ms_since(load_started);
        let plan_started = Instant::now();
        let states: Vec<_> = rows.locals.iter().map(|l| l.state.clone()).collect();
        let by_id: HashMap<Uuid, &Loaded> =
            rows.locals.iter().map(|l| (l.state.device.id, l)).collect();
        let remote_by_id: HashMap<&str, &RemoteDevice> =
            remotes.iter().map(|r| (r.id.as_str(), r)).collect();

        // Which locals a remote of this batch paired with or named as a candidate.
        let mut involved: HashSet<Uuid> = HashSet::new();
        for p in match_page(remotes, &states, self.opts.match_by_name) {
            match p {
                Pairing::Linked { local, .. } | Pairing::Matched { local, .. } => {
                    involved.insert(local.device.id);
                }
                Pairing::Ambiguous { candidates, .. } => {
                    involved.extend(candidates.iter().map(|c| c.device.id));
                }
                Pairing::RemoteOnly { .. } | Pairing::LocalOnly { .. } => {}
            }
        }
        if self.dry_run {
            self.cursor.dry_paired.extend(involved.iter().copied());
        }

        let input = PageInput {
            remotes: remotes.to_vec(),
            locals: states.clone(),
            remote_pending: rows.remote_pending.clone(),
        };
        let page = plan_page(&self.opts, self.now, &input);
        let mut items = Vec::with_capacity(page.devices.len());
        for plan in page.devices {
            let local = plan
                .device_id
                .and_then(|id| by_id.get(&id))
                .map(|l| (*l).clone());
            let remote = plan
                .external_id
                .as_deref()
                .and_then(|id| remote_by_id.get(id))
                .map(|r| (*r).clone());
            let pending: Vec<PendingConflict> = remote
                .as_ref()
                .map(|r| {
                    rows.remote_pending
                        .iter()
                        .filter(|p| p.external_id.as_deref() == Some(r.id.as_str()))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            items.push(Item::new(plan, local, remote, pending, retry));
        }

        let alone_set: HashSet<Uuid> = alone.iter().copied().collect();
        let gone_set: HashSet<&str> = gone.iter().map(String::as_str).collect();
        let lonely: Vec<&Loaded> = rows
            .locals
            .iter()
            .filter(|l| !involved.contains(&l.state.device.id))
            .filter(|l| {
                alone_set.contains(&l.state.device.id)
                    || l.state.external_id().is_some_and(|e| gone_set.contains(e))
            })
            .collect();
        let lonely_states: Vec<_> = lonely.iter().map(|l| l.state.clone()).collect();
        let rest = plan_local_only(&self.opts, self.now, &lonely_states, Listing::Complete);
        for (plan, l) in rest.devices.into_iter().zip(lonely) {
            items.push(Item::new(plan, Some(l.clone()), None, Vec::new(), retry));
        }
        counts.plan_ms += ms_since(plan_started);
        Ok(items)
    }

    /// Carry out a batch of plans and commit it with the cursor and stats. Returns the items
    /// whose local write did not apply.
    async fn run_batch(
        &mut self,
        mut items: Vec<Item>,
        counts: &mut SliceCounts,
    ) -> Result<Vec<Item>, EngineError> {
        let before = self.stats.clone();
        let remote_started = Instant::now();
        if !self.dry_run {
            self.remote_phase(&mut items).await?;
        }
        counts.remote_ms += ms_since(remote_started);
        let commit_started = Instant::now();
        let c = self.commit(&items).await?;
        counts.commit_ms += ms_since(commit_started);
        counts.devices += c.processed;
        counts.local_writes += self.stats.local_writes - before.local_writes;
        counts.remote_writes += self.stats.remote_writes - before.remote_writes;
        counts.conflicts += self.stats.conflicts - before.conflicts;
        Ok(c.leftover.into_iter().map(|i| items[i].clone()).collect())
    }

    /// Run every Golioth write of the batch (bounded concurrency), re-planning devices whose
    /// Golioth copy moved since it was read (once).
    async fn remote_phase(&mut self, items: &mut [Item]) -> Result<(), EngineError> {
        // Tags first: writes fail on unknown tags.
        let mut needed: BTreeSet<String> = BTreeSet::new();
        for it in items.iter() {
            match &it.plan.remote {
                Some(RemoteWrite::Create { desired }) => {
                    needed.extend(desired.tags.iter().cloned())
                }
                Some(RemoteWrite::Update { changes, .. }) => {
                    if let Some(t) = &changes.tags {
                        needed.extend(t.added.iter().cloned());
                    }
                }
                _ => {}
            }
        }
        for name in needed {
            if self.tags.id_of(&name).is_some() {
                continue;
            }
            match self
                .client
                .ensure_tags(&mut self.tags, std::slice::from_ref(&name))
                .await
            {
                Ok(ids) => {
                    if let (Some(id), Some(map)) = (ids.first(), self.cursor.tags.as_mut()) {
                        map.insert(name.clone(), id.as_str().to_owned());
                    }
                    self.stats.remote_writes += 1;
                }
                Err(e) if e.is_retryable() => return Err(EngineError::Golioth(e)),
                // A device needing this tag fails below ("tags missing in Golioth").
                Err(_) => {}
            }
        }

        self.mark_creates(items).await?;

        for round in 0..2 {
            let todo: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(_, it)| {
                    it.plan.remote.is_some() && matches!(it.outcome, Outcome::NotNeeded)
                })
                .map(|(i, _)| i)
                .collect();
            if todo.is_empty() {
                break;
            }
            let this = &*self;
            let shared: &[Item] = items;
            let results = bounded(todo, REMOTE_CONCURRENCY, |i| async move {
                (i, this.write_remote(&shared[i]).await)
            })
            .await;
            let mut stale: Vec<(usize, Box<Device>)> = Vec::new();
            for (i, result) in results {
                let outcome = match result {
                    WriteResult::Created(d, _, true)
                        if self.linked_elsewhere(&d, items[i].plan.device_id).await? =>
                    {
                        Outcome::Failed(format!(
                            "identity conflict: Golioth device {} has these hardware ids and is \
                             linked to another local device",
                            d.id.as_str()
                        ))
                    }
                    WriteResult::Created(d, cred, _) => {
                        self.stats.remote_writes += 1 + u64::from(cred.is_some());
                        let r = self.convert(std::slice::from_ref(&*d)).await?.remove(0);
                        if let Some(note) = cred {
                            self.stats.detail(json!({
                                "device_id": items[i].plan.device_id,
                                "external_id": r.id,
                                "status": "credential",
                                "detail": note,
                            }));
                        }
                        Outcome::Created(r)
                    }
                    WriteResult::Updated(d) => {
                        self.stats.remote_writes += 1;
                        Outcome::Updated(self.convert(std::slice::from_ref(&*d)).await?.remove(0))
                    }
                    WriteResult::Deleted => {
                        self.stats.remote_writes += 1;
                        Outcome::Deleted
                    }
                    WriteResult::Failed(why) => Outcome::Failed(why),
                    WriteResult::Unsettled(why) => {
                        items[i].unsettled = true;
                        Outcome::Failed(why)
                    }
                    WriteResult::Gone => Outcome::Skipped("deleted in Golioth during the run"),
                    WriteResult::Stale(d) if round == 0 => {
                        stale.push((i, d));
                        continue;
                    }
                    WriteResult::Stale(_) => Outcome::Skipped("changed in Golioth during the run"),
                };
                items[i].outcome = outcome;
            }
            // Plan again from Golioth's fresh copy; the next round writes the new plan.
            for (i, fresh) in stale {
                let fresh = self.convert(std::slice::from_ref(&*fresh)).await?.remove(0);
                let it = &mut items[i];
                let Some(local) = &it.local else {
                    it.outcome = Outcome::Skipped("changed in Golioth during the run");
                    continue;
                };
                let state = &local.state;
                let pairing = if state.external_id() == Some(fresh.id.as_str()) {
                    Pairing::Linked {
                        local: state,
                        remote: &fresh,
                    }
                } else {
                    Pairing::Matched {
                        local: state,
                        remote: &fresh,
                        by: MatchBy::HardwareId,
                    }
                };
                let plan = plan_pairing(
                    &self.opts,
                    self.now,
                    &pairing,
                    Listing::Complete,
                    &it.remote_pending,
                );
                it.plan = plan;
                it.remote = Some(fresh);
            }
        }
        self.finish_interrupted_creates(items).await;
        Ok(())
    }

    /// Write ahead of the batch's Golioth creates, in its own transaction committed before the
    /// first one is sent: a run that dies between a create and the slice's commit leaves the
    /// marker, and the next run merges the device it finds against it (issue 21).
    async fn mark_creates(&self, items: &[Item]) -> Result<(), EngineError> {
        let rows: Vec<Value> = items
            .iter()
            .filter_map(|it| match (&it.plan.remote, it.plan.device_id) {
                (Some(RemoteWrite::Create { desired }), Some(id)) => Some(json!({
                    "device_id": id,
                    "base": pending_create_base(desired, &self.opts.fields).to_json(),
                })),
                _ => None,
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let (org, service) = (self.org, self.service);
        store::in_org(self.ctx.db, org, |tx| {
            Box::pin(async move { store::sync::mark_creates(tx, org, service, rows).await })
        })
        .await?;
        Ok(())
    }

    /// A PSK credential for a device this service created in Golioth, its identity the local
    /// device id (the Golioth id when there is none): whether one was made, and a note for the
    /// run's details. One that already exists (a repeated attempt) is left alone.
    async fn psk_credential(&self, it: &Item, golioth: &GoliothDeviceId) -> (bool, String) {
        let identity = it
            .device_id()
            .map_or_else(|| golioth.as_str().to_owned(), |u| u.to_string());
        match self
            .client
            .create_psk_credential(golioth, &identity, &generate_psk())
            .await
        {
            Ok(_) => (
                true,
                format!("PSK credential created for identity {identity}"),
            ),
            Err(e) if e.is_duplicate() => (
                false,
                format!("PSK credential for identity {identity} already exists"),
            ),
            Err(e) => (false, format!("PSK credential not created: {}", reason(&e))),
        }
    }

    /// Devices linked by finishing a create an earlier run began (a hardware-id match of a
    /// device with a `pending_create` marker) get the credential that create would have made.
    async fn finish_interrupted_creates(&mut self, items: &[Item]) {
        if !self.create_credentials {
            return;
        }
        let todo: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, it)| it.finishes_a_create())
            .map(|(i, _)| i)
            .collect();
        let this = &*self;
        let done = bounded(todo, REMOTE_CONCURRENCY, |i| async move {
            let it = &items[i];
            let golioth = it
                .external_id()
                .and_then(|e| GoliothDeviceId::parse(&e).ok());
            let made = match &golioth {
                Some(g) => Some(this.psk_credential(it, g).await),
                None => None,
            };
            (i, made)
        })
        .await;
        for (i, made) in done {
            if let Some((created, note)) = made {
                self.stats.remote_writes += u64::from(created);
                self.stats.detail(json!({
                    "device_id": items[i].plan.device_id,
                    "external_id": items[i].external_id(),
                    "status": "credential",
                    "detail": note,
                }));
            }
        }
    }

    /// Whether a device found after a lost create answer is linked to a local device other than
    /// `mine` (then it is not the one this run created).
    async fn linked_elsewhere(&self, d: &Device, mine: Option<Uuid>) -> Result<bool, EngineError> {
        let (org, service, ext) = (self.org, self.service, d.id.as_str().to_owned());
        let ext = &ext;
        let owner = store::in_org(self.ctx.db, org, |tx| {
            Box::pin(async move { store::sync::linked_to(tx, org, service, ext).await })
        })
        .await?;
        Ok(owner.is_some_and(|o| Some(o) != mine))
    }

    /// One device's Golioth write.
    async fn write_remote(&self, it: &Item) -> WriteResult {
        let ext = || {
            it.plan
                .external_id
                .as_deref()
                .and_then(|e| GoliothDeviceId::parse(e).ok())
        };
        match &it.plan.remote {
            None => WriteResult::Failed("nothing to write".into()),
            Some(RemoteWrite::Create { desired }) => {
                let new = match new_device(desired, &self.tags) {
                    Ok(n) => n,
                    Err(e) => return WriteResult::Failed(e),
                };
                let (mut created, adopted) = match self.client.create_device_once(&new).await {
                    Ok(c) => (c.device, c.adopted),
                    Err(e) if e.outcome_unknown() => return WriteResult::Unsettled(reason(&e)),
                    Err(e) => return WriteResult::Failed(reason(&e)),
                };
                // Golioth creates devices enabled; a disabled local device stays disabled.
                if !desired.enabled {
                    let u = crate::domain::golioth::DeviceUpdate {
                        enabled: Some(false),
                        ..Default::default()
                    };
                    if let Ok(d) = self.client.update_device(&created.id, &u).await {
                        created = d;
                    }
                }
                let note = match self.create_credentials {
                    true => Some(self.psk_credential(it, &created.id).await.1),
                    false => None,
                };
                WriteResult::Created(Box::new(created), note, adopted)
            }
            Some(RemoteWrite::Update {
                expected_updated_at,
                changes,
            }) => {
                let Some(id) = ext() else {
                    return WriteResult::Failed("not a Golioth device id".into());
                };
                // Golioth has no ETag: re-read and compare just before patching.
                let fresh = match self.client.get_device(&id).await {
                    Ok(d) => d,
                    Err(e) if e.is_not_found() => return WriteResult::Gone,
                    Err(e) => return WriteResult::Failed(reason(&e)),
                };
                let listed = it.remote.as_ref();
                let (now_desired, _) = remote_device(&fresh, &self.tags, None);
                if fresh.updated_at != *expected_updated_at
                    || listed.is_some_and(|l| l.desired != now_desired.desired)
                {
                    return WriteResult::Stale(Box::new(fresh));
                }
                let update = match device_update(changes, &self.tags) {
                    Ok(u) => u,
                    Err(e) => return WriteResult::Failed(e),
                };
                match self.client.update_device(&id, &update).await {
                    Ok(d) => WriteResult::Updated(Box::new(d)),
                    Err(e) if e.is_not_found() => WriteResult::Gone,
                    Err(e) => WriteResult::Failed(reason(&e)),
                }
            }
            Some(RemoteWrite::Delete) => {
                let Some(id) = ext() else {
                    return WriteResult::Failed("not a Golioth device id".into());
                };
                match self.client.delete_device(&id).await {
                    Ok(()) => WriteResult::Deleted,
                    Err(e) if e.is_not_found() => WriteResult::Deleted,
                    Err(e) => WriteResult::Failed(reason(&e)),
                }
            }
        }
    }

    /// Save cursor and stats alone (no device writes), fenced.
    pub async fn commit_progress(&mut self) -> Result<(), EngineError> {
        self.run_items(Vec::new()).await.map(|_| ())
    }

    /// Commit an empty batch: the slice's cursor and stats.
    async fn run_items(&mut self, items: Vec<Item>) -> Result<SliceCounts, EngineError> {
        let mut counts = SliceCounts::default();
        self.run_batch(items, &mut counts).await?;
        Ok(counts)
    }

    /// The slice's transaction: fence, local writes, links, conflicts, log, cursor and stats.
    async fn commit(&mut self, items: &[Item]) -> Result<Committed, EngineError> {
        let dry = self.dry_run;
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        if !dry {
            for it in items {
                if matches!(it.outcome, Outcome::Failed(_) | Outcome::Skipped(_)) {
                    continue;
                }
                match &it.plan.local {
                    Some(LocalWrite::Create { desired, reported }) => {
                        if let Some(id) = it.new_local_id {
                            creates.push(device_row(id, desired, reported));
                        }
                    }
                    Some(LocalWrite::Update {
                        expected_version,
                        changes,
                    }) => {
                        if let Some(id) = it.plan.device_id {
                            updates.push(
                                json!({"id": id, "v": expected_version, "c": update_columns(changes)}),
                            );
                        }
                    }
                    Some(LocalWrite::SoftDelete { expected_version }) => {
                        if let Some(id) = it.plan.device_id {
                            updates.push(
                                json!({"id": id, "v": expected_version, "c": {"soft_delete": true}}),
                            );
                        }
                    }
                    None => {}
                }
            }
        }
        self.cursor.dry_paired.sort();
        self.cursor.dry_paired.dedup();
        let org = self.org;
        let service = self.service;
        let run = self.run;
        let owner = self.owner.clone();
        let lease_until = self.lease_until;
        let opts = self.opts.clone();
        let prior = self.stats.clone();
        let progress = self.cursor.progress();
        let cursor_json =
            serde_json::to_value(&self.cursor).map_err(|e| EngineError::Config(e.to_string()))?;
        let phase = self.cursor.phase.as_str();
        let seen = std::mem::take(&mut self.pending_seen);

        let (stats, rows) = store::in_org(self.ctx.db, org, |tx| {
            Box::pin(async move {
                let lease = Lease {
                    org,
                    run,
                    owner: &owner,
                };
                if !store::runs::fence(tx, &lease).await? {
                    return Err(EngineError::LeaseLost);
                }
                store::sync::record_seen(tx, org, run, &seen).await?;
                let mut local_writes = store::sync::insert_devices(tx, org, creates).await?;
                let applied: HashSet<Uuid> = store::sync::update_devices(tx, org, updates)
                    .await?
                    .into_iter()
                    .collect();
                local_writes += applied.len() as u64;
                let mut rows = finalize(items, &applied, &opts, dry);
                if !dry {
                    // The row lists go to the statements whole (only `batch` and `leftover`
                    // are read afterwards).
                    let take = std::mem::take::<Vec<Value>>;
                    let (links, bases, statuses) = (
                        take(&mut rows.links),
                        take(&mut rows.bases),
                        take(&mut rows.statuses),
                    );
                    let (open, refresh, auto) = (
                        take(&mut rows.open),
                        take(&mut rows.refresh),
                        take(&mut rows.auto),
                    );
                    let s = store::sync::upsert_links(tx, org, service, run, links).await?
                        + store::sync::set_bases(tx, org, service, run, bases).await?
                        + store::sync::detach(tx, org, service, run, &rows.detach).await?
                        + store::sync::unassign(tx, org, service, &rows.unassign).await?
                        + store::sync::set_statuses(tx, org, service, statuses).await?;
                    let c = store::sync::open_conflicts(tx, org, service, run, open).await?
                        + store::sync::refresh_conflicts(tx, org, service, run, refresh).await?
                        + store::sync::supersede_conflicts(tx, org, service, &rows.supersede)
                            .await?
                        + store::sync::auto_resolve_conflicts(tx, org, service, run, auto).await?;
                    store::sync_log::insert(tx, org, service, Some(run), &rows.logs).await?;
                    local_writes += s + c;
                }
                let mut stats = prior;
                let mut batch = rows.batch.clone();
                batch.local_writes = local_writes;
                stats.add(&batch);
                stats.dry_run = dry;
                stats.progress = progress;
                if !store::runs::save_progress(
                    tx,
                    &lease,
                    phase,
                    &cursor_json,
                    &stats.to_json(),
                    lease_until,
                )
                .await?
                {
                    return Err(EngineError::LeaseLost);
                }
                Ok::<_, EngineError>((stats, rows))
            })
        })
        .await?;
        self.stats = stats;
        if let Some(t) = self.cursor.tracker.as_mut() {
            t.forget_seen();
        }
        Ok(Committed {
            processed: rows.batch.processed,
            leftover: rows.leftover,
        })
    }
}

fn remote_op(w: &RemoteWrite) -> &'static str {
    match w {
        RemoteWrite::Create { .. } => "remote_created",
        RemoteWrite::Update { .. } => "remote_updated",
        RemoteWrite::Delete => "remote_deleted",
    }
}

fn log_row(
    device_id: Option<Uuid>,
    external_id: Option<&str>,
    e: &crate::domain::sync::LogEntry,
) -> LogRow {
    let mut details = serde_json::to_value(e).unwrap_or_else(|_| json!({}));
    if let Some(obj) = details.as_object_mut() {
        obj.remove("operation");
        obj.insert("external_id".into(), json!(external_id));
    }
    LogRow {
        device_id,
        operation: e.operation.as_str().to_owned(),
        status: "success".into(),
        details,
    }
}

/// Count what a plan does (for a dry run's preview, or what was applied).
fn count_local(batch: &mut Stats, w: &Option<LocalWrite>) {
    match w {
        Some(LocalWrite::Create { .. }) => batch.created_local += 1,
        Some(LocalWrite::Update { .. }) => batch.updated_local += 1,
        Some(LocalWrite::SoftDelete { .. }) => batch.deleted_local += 1,
        None => {}
    }
}

fn count_links(batch: &mut Stats, plan: &DevicePlan) {
    match &plan.assignment {
        Some(AssignmentWrite::Link { .. }) => batch.linked += 1,
        Some(AssignmentWrite::Detach | AssignmentWrite::Delete) => batch.unlinked += 1,
        _ => {}
    }
    batch.conflicts += plan
        .conflicts
        .iter()
        .filter(|c| {
            matches!(
                c,
                ConflictChange::Open { .. } | ConflictChange::AutoResolved { .. }
            )
        })
        .count() as u64;
}

/// Turn executed items into the transaction's rows and the batch's counts. `applied` holds the
/// devices whose version-conditional update went through.
fn finalize(items: &[Item], applied: &HashSet<Uuid>, opts: &SyncOptions, dry: bool) -> Rows {
    let mut rows = Rows::default();
    for (idx, it) in items.iter().enumerate() {
        let plan = &it.plan;
        if !it.retry {
            rows.batch.processed += 1;
            if plan.is_empty() {
                rows.batch.unchanged += 1;
            }
        }
        if dry {
            count_local(&mut rows.batch, &plan.local);
            match &plan.remote {
                Some(RemoteWrite::Create { .. }) => rows.batch.created_remote += 1,
                Some(RemoteWrite::Update { .. }) => rows.batch.updated_remote += 1,
                Some(RemoteWrite::Delete) => rows.batch.deleted_remote += 1,
                None => {}
            }
            count_links(&mut rows.batch, plan);
            if !plan.is_empty() {
                let mut preview = serde_json::to_value(plan).unwrap_or_else(|_| json!({}));
                if let Some(obj) = preview.as_object_mut() {
                    obj.insert("status".into(), json!("planned"));
                }
                rows.batch.detail(preview);
            }
            continue;
        }
        let device_id = it.device_id();
        let external = it.external_id();
        match &it.outcome {
            Outcome::Failed(why) => {
                rows.batch.failed += 1;
                let op = plan.remote.as_ref().map_or("remote_write", remote_op);
                rows.batch.detail(json!({
                    "device_id": device_id, "external_id": external, "status": "error",
                    "operation": op, "error": why,
                }));
                rows.logs.push(LogRow {
                    device_id,
                    operation: op.to_owned(),
                    status: "error".into(),
                    details: json!({"external_id": external, "error": why}),
                });
                let assigned = it
                    .local
                    .as_ref()
                    .is_some_and(|l| l.state.assignment.is_some());
                if let (true, Some(id)) = (assigned, device_id) {
                    // A create Golioth refused made nothing: its write-ahead marker goes.
                    let settled =
                        matches!(plan.remote, Some(RemoteWrite::Create { .. })) && !it.unsettled;
                    rows.statuses.push(
                        json!({"device_id": id, "status": "error", "error": why, "settled": settled}),
                    );
                }
                continue;
            }
            Outcome::Skipped(why) => {
                rows.batch.skipped += 1;
                rows.batch.detail(json!({
                    "device_id": device_id, "external_id": external, "status": "skipped",
                    "reason": why,
                }));
                rows.logs.push(LogRow {
                    device_id,
                    operation: "skipped".into(),
                    status: "skipped".into(),
                    details: json!({"external_id": external, "reason": why}),
                });
                continue;
            }
            Outcome::Created(_) => rows.batch.created_remote += 1,
            Outcome::Updated(_) => rows.batch.updated_remote += 1,
            Outcome::Deleted => rows.batch.deleted_remote += 1,
            Outcome::NotNeeded => {}
        }
        let local_skipped = matches!(
            plan.local,
            Some(LocalWrite::Update { .. } | LocalWrite::SoftDelete { .. })
        ) && plan.device_id.is_some_and(|id| !applied.contains(&id));
        if local_skipped {
            // Planned again from a fresh read; only the Golioth writes that happened are logged.
            rows.leftover.push(idx);
            for e in plan.log.iter().filter(|e| {
                matches!(
                    e.operation,
                    crate::domain::sync::LogOperation::RemoteCreated
                        | crate::domain::sync::LogOperation::RemoteUpdated
                        | crate::domain::sync::LogOperation::RemoteDeleted
                )
            }) {
                rows.logs.push(log_row(device_id, external.as_deref(), e));
            }
            continue;
        }
        count_local(&mut rows.batch, &plan.local);
        count_links(&mut rows.batch, plan);

        // Conflicts, and whether any stays pending for the device.
        let mut pending: HashSet<Uuid> = it
            .local
            .as_ref()
            .map(|l| {
                l.state
                    .pending
                    .iter()
                    .filter(|p| p.device_id.is_some() && p.device_id == device_id)
                    .map(|p| p.id)
                    .collect()
            })
            .unwrap_or_default();
        let mut opened = 0;
        for c in &plan.conflicts {
            match c {
                ConflictChange::Open { conflict } => {
                    if conflict.device_id.is_some() && conflict.device_id == device_id {
                        opened += 1;
                    }
                    rows.batch.detail(json!({
                        "device_id": conflict.device_id, "external_id": conflict.external_id,
                        "status": "conflict", "field": conflict.field.as_str(),
                        "conflict_type": conflict.kind.as_str(),
                    }));
                    rows.open.push(store::sync::conflict_row(conflict));
                }
                ConflictChange::Refresh { id, conflict } => {
                    let mut row = store::sync::conflict_row(conflict);
                    row["id"] = json!(id);
                    rows.refresh.push(row);
                }
                ConflictChange::Supersede { id, .. } => {
                    pending.remove(id);
                    rows.supersede.push(*id);
                }
                ConflictChange::AutoResolved {
                    replaces,
                    conflict,
                    strategy,
                    resolved_value,
                    ..
                } => {
                    if let Some(id) = replaces {
                        pending.remove(id);
                    }
                    let mut row = store::sync::conflict_row(conflict);
                    row["replaces"] = json!(replaces);
                    row["strategy"] = json!(strategy.as_str());
                    row["resolved_value"] =
                        resolved_value.as_ref().map_or(Value::Null, |v| json!([v]));
                    rows.auto.push(row);
                }
            }
        }
        let status = if pending.len() + opened > 0 {
            "conflict"
        } else {
            "synced"
        };
        let remote_at = it.remote_now().and_then(|r| r.updated_at);
        match (&plan.assignment, device_id) {
            (Some(AssignmentWrite::Link { external_id, base }), Some(id)) => {
                let base = match &it.outcome {
                    Outcome::Created(r) => created_base(base, r, opts.fields.desired()),
                    _ => base.clone(),
                };
                rows.links.push(json!({
                    "device_id": id,
                    "external_id": external_id.clone().or_else(|| external.clone()),
                    "base": base.to_json(),
                    "status": status,
                    "remote_updated_at": remote_at,
                }));
            }
            (Some(AssignmentWrite::SetBase { base }), Some(id)) => rows.bases.push(json!({
                "device_id": id, "base": base.to_json(), "status": status,
                "remote_updated_at": remote_at,
            })),
            (Some(AssignmentWrite::Detach), Some(id)) => rows.detach.push(id),
            (Some(AssignmentWrite::Delete), Some(id)) => rows.unassign.push(id),
            (None, Some(id)) => {
                // Keep the assignment's status true without writing when nothing changed.
                if let Some(l) = &it.local
                    && l.state
                        .assignment
                        .as_ref()
                        .is_some_and(|a| a.base.is_some())
                    && (l.sync_status.as_deref() != Some(status) || l.last_error.is_some())
                {
                    rows.statuses
                        .push(json!({"device_id": id, "status": status, "error": null}));
                }
            }
            _ => {}
        }
        for e in &plan.log {
            rows.logs.push(log_row(device_id, external.as_deref(), e));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Page `n` of a listing of `total` devices, 100 per page, holding `len` devices.
    fn page(n: u32, len: u32, total: u64) -> DevicePage {
        DevicePage {
            page: n,
            requested_per_page: 100,
            devices: (0..len)
                .map(|i| {
                    let id = format!("{:024x}", u64::from(n) * 1000 + u64::from(i));
                    Device::from_json(&json!({ "id": id })).unwrap()
                })
                .collect(),
            per_page: Some(100),
            total: Some(total),
            invalid_entries: 0,
        }
    }

    #[test]
    fn an_unknown_listing_asks_for_the_hinted_pages_within_the_width() {
        let t = ListingTracker::new();
        assert_eq!(window_of(&t, 8, 1), Some(0..1));
        assert_eq!(window_of(&t, 8, 3), Some(0..3));
        assert_eq!(window_of(&t, 8, 8), Some(0..8));
        assert_eq!(window_of(&t, 8, 20), Some(0..8));
        assert_eq!(window_of(&t, 8, 0), Some(0..1));
        // A one-page budget asks for one page whatever the hint.
        assert_eq!(window_of(&t, 1, 20), Some(0..1));
    }

    #[test]
    fn a_known_total_decides_the_window_not_the_hint() {
        let mut t = ListingTracker::new();
        t.record(page(0, 100, 250));
        assert_eq!(window_of(&t, 8, 8), Some(1..3));
        assert_eq!(window_of(&t, 8, 1), Some(1..3));
        assert_eq!(window_of(&t, 1, 8), Some(1..2));
        t.record(page(1, 100, 250));
        t.record(page(2, 50, 250));
        assert_eq!(window_of(&t, 8, 8), None);
    }

    #[test]
    fn pages_past_a_shrunken_listing_end_it_and_the_window_stays_below_the_ceiling() {
        // The hint said 8 pages; the project now holds 150 devices: pages 2.. come back empty.
        let pages: Vec<DevicePage> = (0..8)
            .map(|n| page(n, [100, 50].get(n as usize).copied().unwrap_or(0), 150))
            .collect();
        let after = ListingTracker::new().after(&pages);
        assert_eq!(window_of(&after, 8, 8), None);
        let mut t = ListingTracker::new();
        for p in pages {
            t.record(p);
        }
        assert!(t.summary().complete, "{:?}", t.summary());
        // Full pages without `total`, up to two below the page ceiling: the hint stops there.
        let mut near_ceiling = ListingTracker::new();
        for n in 0..DEFAULT_MAX_PAGES - 2 {
            near_ceiling.record(DevicePage {
                page: n,
                requested_per_page: 100,
                devices: Vec::new(),
                per_page: Some(100),
                total: None,
                invalid_entries: 100,
            });
        }
        let ceiling = DEFAULT_MAX_PAGES;
        assert_eq!(window_of(&near_ceiling, 8, 8), Some(ceiling - 2..ceiling));
    }
}
