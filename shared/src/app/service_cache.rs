//! A short-lived, process-wide cache of the service a webhook delivery is addressed to, so a
//! stream of deliveries costs one database statement each instead of two (DESIGN §9).
//!
//! Rules, so the cache never makes the endpoint accept what the database would refuse for
//! longer than [`TTL`], and never refuses what it would accept:
//! - an entry is used for at most [`TTL`] after it was read, then read again;
//! - a delivery that an entry would reject (inactive service, bad credentials, wrong project, or
//!   credentials that no longer open) is judged again on a fresh read, so a new secret, a
//!   re-activated service or a re-keyed ring works at once;
//! - updating or deleting a service through this process drops its entry at once; another
//!   process's change (a second instance, `golioth-sync rotate-keys`) is seen within [`TTL`];
//! - unknown services are never cached, and the map is bounded ([`CAPACITY`]; full means
//!   cleared).
//!
//! On Spin every request gets a fresh component instance, so the map is always empty there and
//! each delivery reads its service, exactly as without the cache.
//!
//! Uses `domain::store` (the row it caches) only.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::domain::store::webhooks::WebhookService;

/// How long a read of a service may stand in for the database.
pub const TTL: Duration = Duration::seconds(1);

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
