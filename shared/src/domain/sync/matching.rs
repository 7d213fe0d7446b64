//! Pairing Golioth devices with local devices: by the stored link, else (a first sync) by a unique
//! hardware-id overlap, else optionally by a unique exact name (DESIGN §4). Anything ambiguous is
//! left for a person as an `identity` conflict, so a sync never creates a duplicate device.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use uuid::Uuid;

use super::model::{LocalState, RemoteDevice};

/// How a remote device found its local twin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchBy {
    HardwareId,
    Name,
}

/// One unit of planning: what the core knows about a device on each side.
#[derive(Clone, Debug)]
pub enum Pairing<'a> {
    /// The local device's assignment already names this Golioth device.
    Linked {
        local: &'a LocalState,
        remote: &'a RemoteDevice,
    },
    /// A first sync found exactly one unlinked local twin; planning links them.
    Matched {
        local: &'a LocalState,
        remote: &'a RemoteDevice,
        by: MatchBy,
    },
    /// No local twin: a candidate for creation locally.
    RemoteOnly { remote: &'a RemoteDevice },
    /// A local device with no Golioth device in the listing: linked ones were deleted in Golioth
    /// (when the listing is complete), assigned unlinked ones are candidates for creation there.
    LocalOnly { local: &'a LocalState },
    /// Several local candidates, or a candidate claimed by several Golioth devices of the page:
    /// no link, an `identity` conflict.
    Ambiguous {
        remote: &'a RemoteDevice,
        candidates: Vec<&'a LocalState>,
    },
}

impl Pairing<'_> {
    pub fn remote(&self) -> Option<&RemoteDevice> {
        match self {
            Pairing::Linked { remote, .. }
            | Pairing::Matched { remote, .. }
            | Pairing::RemoteOnly { remote }
            | Pairing::Ambiguous { remote, .. } => Some(remote),
            Pairing::LocalOnly { .. } => None,
        }
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.iter().any(|x| b.contains(x))
}

/// Pair every remote device of a page with its local twin, if any. `locals` must contain the local
/// devices linked to these remotes plus every local device that could match them (same hardware id,
/// or same name when `match_by_name`), with their assignments; other locals are simply ignored.
///
/// Only live, unlinked local devices are candidates: a device linked to another Golioth device is
/// that device's twin (Golioth keeps hardware ids and names unique per project), and a deleted one
/// is gone. Deciding this from the page alone keeps a run final: whether another Golioth device
/// still exists is only known at the end of the listing.
pub fn match_page<'a>(
    remotes: &'a [RemoteDevice],
    locals: &'a [LocalState],
    match_by_name: bool,
) -> Vec<Pairing<'a>> {
    let mut linked: BTreeMap<&str, &LocalState> = BTreeMap::new();
    for l in locals {
        if let Some(ext) = l.external_id() {
            linked.entry(ext).or_insert(l);
        }
    }

    let mut seen = BTreeSet::new();
    let mut staged: Vec<(&RemoteDevice, Stage<'a>)> = Vec::new();
    for remote in remotes {
        if !seen.insert(remote.id.as_str()) {
            continue;
        }
        if let Some(local) = linked.get(remote.id.as_str()) {
            staged.push((remote, Stage::Linked(local)));
            continue;
        }
        let free = || locals.iter().filter(|l| !l.is_deleted() && !l.is_linked());
        let hw: Vec<&LocalState> = free()
            .filter(|l| overlaps(&l.device.desired.hardware_ids, &remote.desired.hardware_ids))
            .collect();
        let stage = if !hw.is_empty() {
            Stage::Candidates(hw, MatchBy::HardwareId)
        } else if match_by_name && !remote.desired.name.is_empty() {
            let named: Vec<&LocalState> = free()
                .filter(|l| l.device.desired.name == remote.desired.name)
                .collect();
            Stage::Candidates(named, MatchBy::Name)
        } else {
            Stage::Candidates(Vec::new(), MatchBy::HardwareId)
        };
        staged.push((remote, stage));
    }

    let mut claims: BTreeMap<Uuid, usize> = BTreeMap::new();
    for (_, stage) in &staged {
        if let Stage::Candidates(cands, _) = stage {
            for c in cands {
                *claims.entry(c.device.id).or_default() += 1;
            }
        }
    }

    staged
        .into_iter()
        .map(|(remote, stage)| match stage {
            Stage::Linked(local) => Pairing::Linked { local, remote },
            Stage::Candidates(cands, _) if cands.is_empty() => Pairing::RemoteOnly { remote },
            Stage::Candidates(cands, by)
                if cands.len() == 1 && claims.get(&cands[0].device.id) == Some(&1) =>
            {
                Pairing::Matched {
                    local: cands[0],
                    remote,
                    by,
                }
            }
            Stage::Candidates(candidates, _) => Pairing::Ambiguous { remote, candidates },
        })
        .collect()
}

enum Stage<'a> {
    Linked(&'a LocalState),
    Candidates(Vec<&'a LocalState>, MatchBy),
}
