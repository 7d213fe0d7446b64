//! The per-field three-way merge of DESIGN §4: compare local and remote to the base, never to each
//! other alone, so a one-sided change propagates and only a real concurrent change conflicts.

use chrono::{DateTime, Utc};

use super::model::{ConflictKind, Field, Side, Value, normalize_set};
use super::options::{ConflictPolicy, Direction};

/// Element-wise merge of a set against its base: an element is kept when both sides have it or one
/// side added it, and dropped when one side removed it. With no base (a first sync) the base is
/// taken as empty, as Unison does, which makes the result the union. Never a conflict.
pub fn merge_sets(base: &[String], local: &[String], remote: &[String]) -> Vec<String> {
    let in_base = |e: &String| base.contains(e);
    let kept = local
        .iter()
        .filter(|e| remote.contains(e) || !in_base(e))
        .chain(remote.iter().filter(|e| !in_base(e)));
    normalize_set(kept.cloned())
}

/// The automatic winner of a conflict, or `None` when a person must decide (`manual`, or
/// `newest_wins` without a strictly newer side).
pub fn pick_winner(
    policy: ConflictPolicy,
    local_at: Option<DateTime<Utc>>,
    remote_at: Option<DateTime<Utc>>,
) -> Option<Side> {
    match policy {
        ConflictPolicy::Manual => None,
        ConflictPolicy::LocalWins => Some(Side::Local),
        ConflictPolicy::RemoteWins => Some(Side::Remote),
        ConflictPolicy::NewestWins => match (local_at, remote_at) {
            (Some(l), Some(r)) if l > r => Some(Side::Local),
            (Some(l), Some(r)) if r > l => Some(Side::Remote),
            _ => None,
        },
    }
}

/// The three values of one field and the times `newest_wins` compares.
#[derive(Clone, Copy, Debug)]
pub struct FieldInput<'a> {
    pub field: Field,
    /// `None`: the field was never agreed on (first sync, or a first-sync mismatch still open).
    pub base: Option<&'a Value>,
    pub local: &'a Value,
    pub remote: &'a Value,
    pub local_updated_at: Option<DateTime<Utc>>,
    pub remote_updated_at: Option<DateTime<Utc>>,
}

/// A conflict the merge detected on one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldConflict {
    pub kind: ConflictKind,
    /// The side the policy chose, or `None` when the conflict waits for a person.
    pub winner: Option<Side>,
}

/// What the merge decided for one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDecision {
    /// The value both sides and the base take; `None` freezes the field (a manual conflict): no
    /// write to either side and the base stays as it was.
    pub target: Option<Value>,
    pub conflict: Option<FieldConflict>,
    /// Set by one-way directions when they replace a value the losing side had edited (or that
    /// was never agreed on), so the engine logs what was overwritten.
    pub overwritten: Option<Side>,
}

/// Decide one desired field. Pure; the caller turns the decision into writes.
pub fn decide_field(
    direction: Direction,
    policy: ConflictPolicy,
    input: FieldInput<'_>,
) -> FieldDecision {
    let FieldInput {
        field,
        base,
        local,
        remote,
        ..
    } = input;
    match direction {
        Direction::Import => one_way(remote, local, base, Side::Local),
        Direction::Export => one_way(local, remote, base, Side::Remote),
        Direction::Bidirectional if field.is_set() => {
            let base_items = base.map(Value::as_set).unwrap_or(&[]);
            let merged = merge_sets(base_items, local.as_set(), remote.as_set());
            settled(Value::Set(merged))
        }
        Direction::Bidirectional => {
            if local == remote {
                settled(local.clone())
            } else if base == Some(local) {
                settled(remote.clone())
            } else if base == Some(remote) {
                settled(local.clone())
            } else {
                let kind = if base.is_some() {
                    ConflictKind::ConcurrentModification
                } else {
                    ConflictKind::FirstSyncMismatch
                };
                let winner = pick_winner(policy, input.local_updated_at, input.remote_updated_at);
                let target = winner.map(|side| match side {
                    Side::Local => local.clone(),
                    Side::Remote => remote.clone(),
                });
                FieldDecision {
                    target,
                    conflict: Some(FieldConflict { kind, winner }),
                    overwritten: None,
                }
            }
        }
    }
}

fn settled(value: Value) -> FieldDecision {
    FieldDecision {
        target: Some(value),
        conflict: None,
        overwritten: None,
    }
}

/// `source` is authoritative. The other side's value counts as overwritten when it differs and
/// was not simply the old agreed value (then it is an ordinary one-sided change of `source`).
fn one_way(source: &Value, other: &Value, base: Option<&Value>, other_side: Side) -> FieldDecision {
    let overwritten = (other != source && base != Some(other)).then_some(other_side);
    FieldDecision {
        target: Some(source.clone()),
        conflict: None,
        overwritten,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn set_merge_follows_the_element_table() {
        // base {a,b,c}; local removes b, adds d; remote removes c, adds e; both add f.
        let merged = merge_sets(
            &s(&["a", "b", "c"]),
            &s(&["a", "c", "d", "f"]),
            &s(&["a", "b", "e", "f"]),
        );
        assert_eq!(merged, s(&["a", "d", "e", "f"]));
    }

    #[test]
    fn newest_wins_tie_is_manual() {
        let t = DateTime::<Utc>::from_timestamp(1_000, 0);
        assert_eq!(pick_winner(ConflictPolicy::NewestWins, t, t), None);
        assert_eq!(pick_winner(ConflictPolicy::NewestWins, t, None), None);
    }
}
