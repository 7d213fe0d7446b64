//! Completeness bookkeeping for the paged device listing: which pages arrived, where the listing
//! ends, whether `total` stayed stable, and which devices were already seen (dedupe by id).
//!
//! Golioth pages by offset with no cursor, and its ordering is undocumented (UNCERTAIN,
//! GOLIOTH_API.md §3, §9), so
//! concurrent creates and deletes can shift devices between pages. The sync may only infer
//! deletions from a *complete* pass in which `total` stayed stable (§11.2); this type is the one
//! place that decides that. It is pure and accepts pages in any order, so the sync engine can
//! fetch pages in slices with bounded concurrency and still ask the same question.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use super::types::{Device, GoliothDeviceId};

/// One page of `GET /v1/projects/{projectId}/devices`: `{list, page, perPage, total}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePage {
    /// The page number that was requested (0-based).
    pub page: u32,
    /// The page size that was requested.
    pub requested_per_page: u32,
    pub devices: Vec<Device>,
    /// `perPage` as answered (absent if the server left it out).
    pub per_page: Option<u64>,
    /// "Total number of devices matching the request", as answered.
    pub total: Option<u64>,
    /// List entries dropped because their `id` was missing or not an ObjectID.
    pub invalid_entries: usize,
}

impl DevicePage {
    /// Entries the server put on this page, including unreadable ones.
    pub fn entries(&self) -> usize {
        self.devices.len() + self.invalid_entries
    }

    /// The page size in effect: the answered `perPage` when present. Whether Golioth clamps an
    /// out-of-range `perPage` or rejects it is UNCERTAIN (§3); trusting the answer covers both.
    pub fn effective_per_page(&self) -> u64 {
        self.per_page
            .filter(|p| *p > 0)
            .unwrap_or(u64::from(self.requested_per_page))
    }

    /// Whether this page is the last one: a short (or empty) page, or `(page+1)·perPage >= total`
    /// (GOLIOTH_API.md §11.2).
    pub fn is_last(&self) -> bool {
        let per_page = self.effective_per_page();
        let short = (self.entries() as u64) < per_page;
        let reached_total = self
            .total
            .is_some_and(|t| (u64::from(self.page) + 1).saturating_mul(per_page) >= t);
        short || reached_total
    }
}

/// The verdict on a listing pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingSummary {
    /// Every page up to the last one arrived, `total` was stable, and the number of distinct
    /// devices equals `total`. Only a complete listing may be used to infer deletions.
    pub complete: bool,
    /// Every page answered the same `total` (pages without `total` are ignored).
    pub total_stable: bool,
    /// The last `total` seen.
    pub total: Option<u64>,
    pub pages_fetched: u32,
    /// Distinct devices seen.
    pub unique_devices: u64,
    /// Devices seen again on a later page (offset paging shifted under a concurrent change).
    pub duplicates: u64,
    /// List entries without a usable id.
    pub invalid_entries: u64,
}

/// Tracks a listing pass page by page (see the module doc).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListingTracker {
    pages: BTreeSet<u32>,
    /// The first page known to be the last one.
    end_page: Option<u32>,
    first_total: Option<u64>,
    last_total: Option<u64>,
    total_stable: bool,
    per_page_stable: bool,
    first_per_page: Option<u64>,
    /// The ids seen, in memory only: a persisted tracker (a sync run's cursor) keeps them out of
    /// itself, in the store, and passes what it knows to [`ListingTracker::record_with`].
    #[serde(skip)]
    seen: HashSet<GoliothDeviceId>,
    /// Distinct devices seen in all.
    #[serde(default)]
    unique: u64,
    /// Ids a cursor written before the store kept them (`seen` in the JSON): handed to the store
    /// once by the engine ([`ListingTracker::take_legacy_seen`]), never written again.
    #[serde(default, rename = "seen", skip_serializing)]
    legacy_seen: Vec<GoliothDeviceId>,
    duplicates: u64,
    invalid_entries: u64,
}

impl ListingTracker {
    pub fn new() -> Self {
        ListingTracker {
            total_stable: true,
            per_page_stable: true,
            ..ListingTracker::default()
        }
    }

    /// Record a page and return its devices that were not seen on an earlier page.
    pub fn record(&mut self, page: DevicePage) -> Vec<Device> {
        self.record_with(page, &|_| false)
    }

    /// [`ListingTracker::record`] for a tracker whose earlier ids are kept elsewhere:
    /// `seen_before` says whether an id was seen on a page recorded before this tracker was
    /// loaded. Ids recorded since are remembered in memory until [`ListingTracker::forget_seen`].
    pub fn record_with(
        &mut self,
        page: DevicePage,
        seen_before: &dyn Fn(&GoliothDeviceId) -> bool,
    ) -> Vec<Device> {
        if !self.note(&page) {
            // The same page twice (a retried slice): its devices are counted once.
            return page
                .devices
                .into_iter()
                .filter(|d| !self.seen.contains(&d.id) && !seen_before(&d.id))
                .collect();
        }
        let mut fresh = Vec::with_capacity(page.devices.len());
        for d in page.devices {
            if !seen_before(&d.id) && self.seen.insert(d.id.clone()) {
                self.unique += 1;
                fresh.push(d);
            } else {
                self.duplicates += 1;
            }
        }
        fresh
    }

    /// Record what a page says about the listing (its number, `total`, `perPage`, whether it is
    /// the last), not its devices. False when the page was recorded before.
    fn note(&mut self, page: &DevicePage) -> bool {
        if !self.pages.insert(page.page) {
            return false;
        }
        if let Some(total) = page.total {
            match self.first_total {
                None => self.first_total = Some(total),
                Some(first) if first != total => self.total_stable = false,
                Some(_) => {}
            }
            self.last_total = Some(total);
        }
        let per_page = page.effective_per_page();
        match self.first_per_page {
            None => self.first_per_page = Some(per_page),
            Some(p) if p != per_page => self.per_page_stable = false,
            Some(_) => {}
        }
        if page.is_last() {
            self.end_page = Some(self.end_page.map_or(page.page, |e| e.min(page.page)));
        }
        self.invalid_entries += page.invalid_entries as u64;
        true
    }

    /// This tracker as it will be once `pages` are recorded, without any ids: what
    /// [`ListingTracker::next_page`] and [`ListingTracker::expected_pages`] will say then, known
    /// before the pages' devices are processed (so the next pages can be fetched meanwhile).
    pub fn after<'p>(&self, pages: impl IntoIterator<Item = &'p DevicePage>) -> ListingTracker {
        let mut t = ListingTracker {
            pages: self.pages.clone(),
            seen: HashSet::new(),
            legacy_seen: Vec::new(),
            ..*self
        };
        for p in pages {
            t.note(p);
        }
        t
    }

    /// Drop the in-memory ids (once the caller stored them), so memory stays flat however long
    /// the listing is.
    pub fn forget_seen(&mut self) {
        self.seen.clear();
    }

    /// The ids of a cursor from before the store kept them, once (see `legacy_seen`).
    pub fn take_legacy_seen(&mut self) -> Vec<GoliothDeviceId> {
        let ids = std::mem::take(&mut self.legacy_seen);
        if self.unique == 0 {
            self.unique = ids.len() as u64;
        }
        ids
    }

    /// The lowest page still needed, or `None` once every page up to the end has arrived.
    pub fn next_page(&self) -> Option<u32> {
        let limit = self.end_page.unwrap_or(u32::MAX);
        (0..=limit).find(|p| !self.pages.contains(p))
    }

    /// How many pages the pass needs in all, as far as the last `total` tells (for planning
    /// concurrent fetches). `None` until a page with `total` arrived.
    pub fn expected_pages(&self) -> Option<u32> {
        let total = self.last_total?;
        let per_page = self.first_per_page.filter(|p| *p > 0)?;
        let pages = total.div_ceil(per_page).max(1);
        Some(u32::try_from(pages).unwrap_or(u32::MAX))
    }

    pub fn is_finished(&self) -> bool {
        self.next_page().is_none()
    }

    pub fn summary(&self) -> ListingSummary {
        let unique = self.unique;
        let total_stable = self.total_stable && self.per_page_stable;
        let counts_match = self.last_total.is_none_or(|t| t == unique);
        ListingSummary {
            complete: self.is_finished()
                && total_stable
                && counts_match
                && self.invalid_entries == 0,
            total_stable,
            total: self.last_total,
            pages_fetched: self.pages.len() as u32,
            unique_devices: unique,
            duplicates: self.duplicates,
            invalid_entries: self.invalid_entries,
        }
    }
}

/// A whole listing: the distinct devices, in the order first seen, and the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceListing {
    pub devices: Vec<Device>,
    pub summary: ListingSummary,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(n: u32) -> Device {
        let v = serde_json::json!({"id": format!("{n:024x}")});
        Device::from_json(&v).unwrap()
    }

    fn page(page: u32, ids: std::ops::Range<u32>, total: u64) -> DevicePage {
        DevicePage {
            page,
            requested_per_page: 10,
            devices: ids.map(dev).collect(),
            per_page: Some(10),
            total: Some(total),
            invalid_entries: 0,
        }
    }

    #[test]
    fn empty_project_is_one_page() {
        let mut t = ListingTracker::new();
        assert_eq!(t.next_page(), Some(0));
        t.record(page(0, 0..0, 0));
        let s = t.summary();
        assert!(s.complete && s.total_stable);
        assert_eq!((s.pages_fetched, s.unique_devices), (1, 0));
    }

    #[test]
    fn exact_multiple_stops_at_total_without_an_empty_page() {
        let mut t = ListingTracker::new();
        t.record(page(0, 0..10, 20));
        assert_eq!(t.next_page(), Some(1));
        assert_eq!(t.expected_pages(), Some(2));
        t.record(page(1, 10..20, 20));
        assert_eq!(t.next_page(), None);
        assert!(t.summary().complete);
    }

    #[test]
    fn pages_in_any_order_and_past_the_end() {
        let mut t = ListingTracker::new();
        t.record(page(2, 20..25, 25));
        t.record(page(3, 0..0, 25));
        assert_eq!(t.next_page(), Some(0));
        t.record(page(0, 0..10, 25));
        t.record(page(1, 10..20, 25));
        assert!(t.is_finished());
        assert!(t.summary().complete);
    }

    #[test]
    fn a_shift_shows_as_duplicate_and_incomplete() {
        // A device deleted between pages shifts device 10 onto page 0's range... and page 1
        // repeats device 9 while the total shrinks.
        let mut t = ListingTracker::new();
        t.record(page(0, 0..10, 21));
        let fresh = t.record(page(1, 9..19, 20));
        assert_eq!(fresh.len(), 9);
        t.record(page(2, 19..20, 20));
        let s = t.summary();
        assert!(!s.total_stable);
        assert!(!s.complete);
        assert_eq!(s.duplicates, 1);
    }

    #[test]
    fn count_mismatch_is_incomplete_even_with_a_stable_total() {
        let mut t = ListingTracker::new();
        t.record(page(0, 0..10, 12));
        t.record(page(1, 10..11, 12));
        let s = t.summary();
        assert!(s.total_stable && !s.complete);
    }

    #[test]
    fn missing_total_relies_on_the_short_page() {
        let mut t = ListingTracker::new();
        let mut p = page(0, 0..10, 0);
        p.total = None;
        t.record(p);
        assert_eq!(t.next_page(), Some(1));
        let mut p = page(1, 10..13, 0);
        p.total = None;
        t.record(p);
        assert!(t.summary().complete);
    }

    #[test]
    fn unreadable_entries_make_it_incomplete() {
        let mut t = ListingTracker::new();
        let mut p = page(0, 0..9, 10);
        p.invalid_entries = 1;
        t.record(p);
        assert!(t.is_finished());
        assert!(!t.summary().complete);
    }

    #[test]
    fn a_persisted_tracker_keeps_no_ids_and_dedupes_through_its_store() {
        let mut t = ListingTracker::new();
        let first = t.record(page(0, 0..10, 20));
        assert_eq!(first.len(), 10);
        t.forget_seen();
        let json = serde_json::to_value(&t).unwrap();
        assert!(json.get("seen").is_none(), "{json}");
        let mut back: ListingTracker = serde_json::from_value(json).unwrap();
        // Page 1 repeats device 9 (a shift); the store knows it was seen.
        let stored: HashSet<GoliothDeviceId> = first.iter().map(|d| d.id.clone()).collect();
        let fresh = back.record_with(page(1, 9..19, 20), &|id| stored.contains(id));
        assert_eq!(fresh.len(), 9);
        let s = back.summary();
        assert_eq!((s.unique_devices, s.duplicates), (19, 1));
        assert!(!s.complete, "19 distinct devices of 20");
    }

    #[test]
    fn a_cursor_from_before_keeps_its_seen_ids_until_taken() {
        let mut t = ListingTracker::new();
        t.record(page(0, 0..10, 10));
        let mut json = serde_json::to_value(&t).unwrap();
        let ids: Vec<String> = (0..10).map(|n| format!("{n:024x}")).collect();
        json["seen"] = serde_json::json!(ids);
        json.as_object_mut().unwrap().remove("unique");
        let mut old: ListingTracker = serde_json::from_value(json).unwrap();
        assert_eq!(old.take_legacy_seen().len(), 10);
        assert!(old.take_legacy_seen().is_empty());
        assert!(old.summary().complete);
    }

    #[test]
    fn after_pages_tells_the_next_page_before_they_are_recorded() {
        let mut t = ListingTracker::new();
        t.record(page(0, 0..10, 35));
        let (p1, p2) = (page(1, 10..20, 35), page(2, 20..30, 35));
        let ahead = t.after([&p1, &p2]);
        assert_eq!(ahead.next_page(), Some(3));
        assert_eq!(ahead.expected_pages(), Some(4));
        assert_eq!(t.next_page(), Some(1), "the tracker itself is unchanged");
        let last = page(3, 30..35, 35);
        assert!(t.after([&p1, &p2, &last]).is_finished());
        t.record(p1);
        t.record(p2);
        assert_eq!(t.next_page(), ahead.next_page());
        assert_eq!(t.summary().unique_devices, 30);
    }

    #[test]
    fn the_same_page_twice_counts_once() {
        let mut t = ListingTracker::new();
        t.record(page(0, 0..10, 15));
        assert!(t.record(page(0, 0..10, 15)).is_empty());
        t.record(page(1, 10..15, 15));
        let s = t.summary();
        assert!(s.complete);
        assert_eq!(s.duplicates, 0);
    }
}
