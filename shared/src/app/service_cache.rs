//! A process-wide (under Spin: instance-wide) cache of the service a webhook delivery is
//! addressed to, so a stream of deliveries costs one database statement each instead of two
//! (DESIGN §9).
//!
//! Rules, so the cache never makes the endpoint accept what the database would refuse, and never
//! refuses what it would accept:
//! - each entry carries the service's row version; a delivery judged under it is stored only if
//!   the service still has that version, in the same statement (`store::webhooks::ingest`), and
//!   otherwise judged again on a fresh read — so a change made anywhere (the API in another
//!   component or replica, `golioth-sync rotate-keys`) applies to the next delivery;
//! - a delivery that an entry would reject (inactive service, bad credentials, wrong project, or
//!   credentials that no longer open) is judged again on a fresh read, so a new secret, a
//!   re-activated service or a re-keyed ring works at once;
//! - an entry is read again after [`TTL`] at the latest, and updating or deleting a service
//!   through this process drops its entry at once;
//! - unknown services are never cached, and the map is bounded ([`CAPACITY`]; full means
//!   cleared);
//! - a burst of deliveries for a service not yet kept reads it once, not once each: a request
//!   that misses takes the thread's (under Spin: the instance's) [`read_turn`] and looks again
//!   before it reads, so the requests behind the first find its copy (and hold no database
//!   connection while they wait).
//!
//! Uses `domain::store` (the row it caches) only.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::domain::store::webhooks::WebhookService;

/// How long a read of a service is kept (its version is checked on every use regardless).
pub const TTL: Duration = Duration::seconds(60);

/// Services kept at most; inserting into a full map clears it first.
pub const CAPACITY: usize = 4096;

type Entries = HashMap<Uuid, (DateTime<Utc>, Arc<WebhookService>)>;

static SERVICES: LazyLock<Mutex<Entries>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn with<T>(f: impl FnOnce(&mut Entries) -> T) -> T {
    // A poisoned lock only means another thread panicked while holding it; the map holds
    // plain copies of rows, so it is still consistent.
    let mut guard = SERVICES.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut guard)
}

thread_local! {
    static READ_TURN: Arc<futures::lock::Mutex<()>> = Arc::new(futures::lock::Mutex::new(()));
}

/// Wait for this thread's (instance's) turn to read a service that is not kept; hold the guard
/// until the read is [`put`].
pub async fn read_turn() -> futures::lock::OwnedMutexGuard<()> {
    READ_TURN.with(Arc::clone).lock_owned().await
}

/// The entry for `service` if it was read less than [`TTL`] before `now`.
pub fn get(service: Uuid, now: DateTime<Utc>) -> Option<Arc<WebhookService>> {
    with(|m| match m.get(&service) {
        Some((read_at, svc)) if *read_at <= now && now - *read_at < TTL => Some(svc.clone()),
        Some(_) => {
            m.remove(&service);
            None
        }
        None => None,
    })
}

/// Keep `svc`, read from the database at `read_at`.
pub fn put(service: Uuid, read_at: DateTime<Utc>, svc: Arc<WebhookService>) {
    with(|m| {
        if m.len() >= CAPACITY && !m.contains_key(&service) {
            m.clear();
        }
        m.insert(service, (read_at, svc));
    });
}

/// Drop `service`'s entry (it was changed or deleted).
pub fn forget(service: Uuid) {
    with(|m| {
        m.remove(&service);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> Arc<WebhookService> {
        Arc::new(WebhookService {
            org_id: Uuid::new_v4(),
            is_active: true,
            config: serde_json::json!({}),
            credentials: None,
            version: "1".into(),
        })
    }

    #[test]
    fn entries_last_one_ttl_and_go_when_forgotten() {
        let (id, t0) = (Uuid::new_v4(), Utc::now());
        assert!(get(id, t0).is_none());
        put(id, t0, svc());
        assert!(get(id, t0).is_some());
        assert!(get(id, t0 + TTL - Duration::milliseconds(1)).is_some());
        assert!(get(id, t0 + TTL).is_none(), "expired");
        assert!(get(id, t0).is_none(), "an expired entry is dropped");
        put(id, t0, svc());
        assert!(
            get(id, t0 - Duration::milliseconds(1)).is_none(),
            "a clock that went back does not extend an entry"
        );
        put(id, t0, svc());
        forget(id);
        assert!(get(id, t0).is_none());
    }

    #[test]
    fn a_full_map_is_cleared_not_grown() {
        let t0 = Utc::now();
        for _ in 0..CAPACITY + 10 {
            put(Uuid::new_v4(), t0, svc());
        }
        assert!(with(|m| m.len()) <= CAPACITY);
    }
}
