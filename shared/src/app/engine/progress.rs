//! What a run persists between slices: the cursor (where to resume: phase, the listing tracker,
//! the run's tag map, the local-only keyset position, targeted devices) and the stats (counters,
//! a bounded list of per-device details, and a small progress summary the API shows without
//! reading the cursor).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::domain::golioth::{ListingTracker, Tag, TagId, TagMap};

/// Details kept per run (failures first matter most; the sync log has everything).
pub const MAX_DETAILS: usize = 100;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Paging through Golioth's device listing.
    Listing,
    /// After a complete listing: the assigned devices the listing did not pair.
    LocalOnly,
    /// A run about named devices (`device_ids`, or a `device_refresh`).
    Targets,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Listing => "listing",
            Phase::LocalOnly => "local_only",
            Phase::Targets => "targets",
            Phase::Done => "done",
        }
    }
}

/// A device a targeted run is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Target {
    Remote(String),
    Local(Uuid),
}

/// The resume point of a run (`sync_runs.cursor`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cursor {
    pub phase: Phase,
    /// The listing pass: pages fetched, `total`, distinct and repeated devices. The ids seen
    /// (deduplication, and the local-only pass's "not seen" set) are in `sync_run_seen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracker: Option<ListingTracker>,
    /// The run's tag map (name → id), built once per run and extended by created tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_after: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    #[serde(default)]
    pub targets_done: usize,
    /// Dry runs only: local devices paired (or ambiguous) on a page, which a real run would have
    /// linked, so the local-only preview leaves them out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_paired: Vec<Uuid>,
}

impl Cursor {
    pub fn listing() -> Cursor {
        Cursor {
            phase: Phase::Listing,
            tracker: Some(ListingTracker::new()),
            tags: None,
            local_after: None,
            targets: Vec::new(),
            targets_done: 0,
            dry_paired: Vec::new(),
        }
    }

    pub fn targets(targets: Vec<Target>) -> Cursor {
        Cursor {
            phase: Phase::Targets,
            targets,
            tracker: None,
            ..Cursor::listing()
        }
    }

    pub fn tag_map(&self) -> Option<TagMap> {
        let pairs = self.tags.as_ref()?;
        Some(TagMap::from_tags(pairs.iter().filter_map(|(name, id)| {
            Some(Tag {
                id: TagId::parse(id).ok()?,
                name: Some(name.clone()),
                created_at: None,
                updated_at: None,
            })
        })))
    }

    /// The small summary stored in the stats for the API.
    pub fn progress(&self) -> Value {
        let mut p = json!({"phase": self.phase.as_str()});
        if let Some(t) = &self.tracker {
            let s = t.summary();
            p["pages_fetched"] = json!(s.pages_fetched);
            p["total"] = json!(s.total);
            p["devices_seen"] = json!(s.unique_devices);
            p["expected_pages"] = json!(t.expected_pages());
            p["next_page"] = json!(t.next_page());
            p["listing_finished"] = json!(t.is_finished());
        }
        if !self.targets.is_empty() {
            p["targets_total"] = json!(self.targets.len());
            p["targets_done"] = json!(self.targets_done);
        }
        if let Some(a) = self.local_after {
            p["local_after"] = json!(a);
        }
        p
    }
}

/// Counters of a run (`sync_runs.stats`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub processed: u64,
    pub successful: u64,
    pub failed: u64,
    /// Devices changed on a side while the run wrote them: left for the next run.
    pub skipped: u64,
    pub unchanged: u64,
    pub conflicts: u64,
    pub created_local: u64,
    pub updated_local: u64,
    pub deleted_local: u64,
    pub created_remote: u64,
    pub updated_remote: u64,
    pub deleted_remote: u64,
    pub linked: u64,
    pub unlinked: u64,
    pub pages: u64,
    pub slices: u64,
    pub local_writes: u64,
    pub remote_writes: u64,
    /// `Some(false)`: the listing ended incomplete, so nothing was deleted or created remotely.
    pub listing_complete: Option<bool>,
    pub dry_run: bool,
    pub details: Vec<Value>,
    pub progress: Value,
}

impl Stats {
    pub fn from_json(v: &Value) -> Stats {
        serde_json::from_value(v.clone()).unwrap_or_default()
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| json!({}))
    }

    /// Add a detail if there is room.
    pub fn detail(&mut self, v: Value) {
        if self.details.len() < MAX_DETAILS {
            self.details.push(v);
        }
    }

    pub fn add(&mut self, b: &Stats) {
        self.processed += b.processed;
        self.failed += b.failed;
        self.skipped += b.skipped;
        self.unchanged += b.unchanged;
        self.conflicts += b.conflicts;
        self.created_local += b.created_local;
        self.updated_local += b.updated_local;
        self.deleted_local += b.deleted_local;
        self.created_remote += b.created_remote;
        self.updated_remote += b.updated_remote;
        self.deleted_remote += b.deleted_remote;
        self.linked += b.linked;
        self.unlinked += b.unlinked;
        self.local_writes += b.local_writes;
        self.remote_writes += b.remote_writes;
        for d in &b.details {
            self.detail(d.clone());
        }
        self.successful = self.processed.saturating_sub(self.failed + self.skipped);
    }

    /// The API's `summary` (the original platform's contract plus a few extras).
    pub fn summary(&self) -> Value {
        json!({
            "processed": self.processed,
            "successful": self.processed.saturating_sub(self.failed + self.skipped),
            "failed": self.failed,
            "skipped": self.skipped,
            "unchanged": self.unchanged,
            "conflicts": self.conflicts,
            "created_local": self.created_local,
            "updated_local": self.updated_local,
            "deleted_local": self.deleted_local,
            "created_remote": self.created_remote,
            "updated_remote": self.updated_remote,
            "deleted_remote": self.deleted_remote,
        })
    }
}
