//! Group commit for webhook deliveries: deliveries that arrive while earlier ones are being
//! stored are stored together, in one statement and one commit (`store::webhooks::ingest_batch`).
//!
//! Leader / follower, per thread (the handlers are `!Send`; the native host runs one
//! current-thread runtime per worker): [`LEADERS`] request(s) at a time store deliveries
//! (leaders); a request that arrives while all leader places are taken queues its plan and
//! waits, holding no database connection (one that holds a connection always leads, see
//! [`ingest`]). A leader stores its own delivery together with everything queued (up to
//! [`MAX_BATCH`]) on its own connection, answers each follower, then passes its place to the
//! first one still queued, which does the same; with nothing queued the place is freed. Under
//! light load every request leads and stores its delivery alone, exactly as before; under heavy
//! load batches grow by themselves and each commit serves many deliveries.
//!
//! A batch holds deliveries of one service, each device and each delivery key at most once (a
//! second delivery for a device waits for a later batch, so no statement updates a device row
//! twice; which of two deliveries commits first does not matter, the newer time wins as
//! always, see `store::webhooks`); the statement locks its device rows in id
//! order, so concurrent batches cannot deadlock each other.
//!
//! Guarantees: a delivery is answered only after the statement that stored it has committed
//! (a 200 still means durable). If a batch fails, nothing of it was stored (one statement), and
//! every request then stores its own delivery alone, so one bad delivery never fails the others.
//! A leader whose request is dropped mid-batch (the client went away) hands its place on and
//! sends its followers off to store alone (a delivery its batch did commit is then found as a
//! duplicate: stored once, answered as stored).
//!
//! Under Spin the queue is per component instance: Spin reuses a WASI P3 instance for up to
//! 16 requests at a time, which group as they do on one native worker thread.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use futures::channel::oneshot;
use uuid::Uuid;

use crate::base::ports::{Db, DbError};
use crate::domain::store::webhooks::{self, Ingested};
use crate::domain::webhook::Plan;

/// Requests per thread storing deliveries at once (besides those already holding a
/// connection). One: at 2,000 deliveries/s on the benchmark machine, two per thread made
/// smaller batches, more commits and a p99 of 23–31 ms against 13 ms with one.
pub const LEADERS: usize = 1;

/// Deliveries stored by one statement at most.
pub const MAX_BATCH: usize = 64;

enum Signal {
    /// Stored by a leader's batch.
    Done(Result<Ingested, DbError>),
    /// Your turn: store yours and what is queued.
    Lead(Box<Waiter>),
    /// Store yours alone.
    Alone(Box<Waiter>),
}

struct Waiter {
    org: Uuid,
    service: Uuid,
    /// The service version the delivery was judged under.
    version: Arc<str>,
    plan: Plan,
    tx: Option<oneshot::Sender<Signal>>,
}

#[derive(Default)]
struct Queue {
    leaders: usize,
    waiting: VecDeque<Waiter>,
}

thread_local! {
    static QUEUE: RefCell<Queue> = RefCell::new(Queue::default());
}

/// Store one accepted delivery of `org`'s `service` (see the module doc); the same answer as
/// `store::webhooks::ingest`. `holds_connection`: this request already used `db` (it read its
/// service), so it holds one of the pool's connections. Such a request never waits behind
/// another: it leads even when all places are taken. Otherwise followers holding connections
/// could leave a leader none to store their deliveries with, and all would wait forever.
pub async fn ingest(
    db: &dyn Db,
    org: Uuid,
    service: Uuid,
    version: Arc<str>,
    plan: Plan,
    holds_connection: bool,
) -> Result<Ingested, DbError> {
    if !webhooks::batchable(&plan) {
        return webhooks::ingest(db, org, service, &version, &plan).await;
    }
    let (tx, rx) = oneshot::channel();
    let me = Waiter {
        org,
        service,
        version: version.clone(),
        plan,
        tx: Some(tx),
    };
    // `Some(me)`: this request leads; `None`: it is queued and waits for a signal.
    let leading = QUEUE.with(move |q| {
        let mut q = q.borrow_mut();
        if q.leaders < LEADERS || holds_connection {
            q.leaders += 1;
            Some(me)
        } else {
            q.waiting.push_back(me);
            None
        }
    });
    let me = match leading {
        Some(w) => w,
        None => match rx.await {
            Ok(Signal::Done(r)) => return r,
            Ok(Signal::Lead(w)) => *w,
            Ok(Signal::Alone(w)) => {
                return webhooks::ingest(db, org, service, &version, &w.plan).await;
            }
            // Only when the thread's queue itself is gone (the worker is shutting down).
            Err(_) => return Err(DbError::Connect("webhook batch queue closed".into())),
        },
    };
    lead(db, me).await
}

/// Holds a leader's place and its followers; whatever happens to the leader's future, dropping
/// it answers every follower still unanswered and hands the place on.
struct Leading {
    followers: Vec<Waiter>,
}

impl Drop for Leading {
    fn drop(&mut self) {
        for mut w in self.followers.drain(..) {
            if let Some(tx) = w.tx.take() {
                let _ = tx.send(Signal::Alone(Box::new(w)));
            }
        }
        hand_on();
    }
}

/// Give this leader's place to the first request still queued, or free it.
fn hand_on() {
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        while let Some(mut w) = q.waiting.pop_front() {
            // A request dropped while queued cannot take the place: try the next one.
            if let Some(tx) = w.tx.take()
                && tx.send(Signal::Lead(Box::new(w))).is_ok()
            {
                return;
            }
        }
        q.leaders = q.leaders.saturating_sub(1);
    });
}

async fn lead(db: &dyn Db, me: Waiter) -> Result<Ingested, DbError> {
    let followers = QUEUE.with(|q| take_compatible(&mut q.borrow_mut().waiting, &me));
    let mut guard = Leading { followers };
    if guard.followers.is_empty() {
        let r = webhooks::ingest(db, me.org, me.service, &me.version, &me.plan).await;
        drop(guard);
        return r;
    }
    let plans: Vec<&Plan> = std::iter::once(&me.plan)
        .chain(guard.followers.iter().map(|w| &w.plan))
        .collect();
    let stored = webhooks::ingest_batch(db, me.org, me.service, &me.version, &plans).await;
    drop(plans);
    match stored {
        Ok(results) => {
            let mut results = results.into_iter();
            let mine = results.next();
            for (w, r) in guard.followers.iter_mut().zip(results) {
                if let Some(tx) = w.tx.take() {
                    let _ = tx.send(Signal::Done(Ok(r)));
                }
            }
            drop(guard);
            mine.ok_or_else(|| DbError::Decode("ingest batch lost the leader's row".into()))
        }
        Err(e) => {
            crate::base::log::warn(
                "webhook batch failed; storing its deliveries one by one",
                serde_json::json!({"deliveries": guard.followers.len() + 1, "error": e.to_string()}),
            );
            // The guard sends every follower off alone and hands the place on.
            drop(guard);
            webhooks::ingest(db, me.org, me.service, &me.version, &me.plan).await
        }
    }
}

/// Take from `waiting`, in arrival order, the deliveries that can share `me`'s statement: same
/// organization, service and service version, and no device or delivery key already in the batch (what
/// `gs_webhook_ingest_batch` relies on). The others stay queued, in order, for a later batch.
fn take_compatible(waiting: &mut VecDeque<Waiter>, me: &Waiter) -> Vec<Waiter> {
    let mut devices = HashSet::from([me.plan.device_external_id.clone()]);
    let mut keys = HashSet::from([me.plan.delivery_key.clone()]);
    let mut taken = Vec::new();
    let mut kept = VecDeque::with_capacity(waiting.len());
    for w in waiting.drain(..) {
        let fits = taken.len() + 1 < MAX_BATCH
            && w.org == me.org
            && w.service == me.service
            && w.version == me.version
            && !devices.contains(&w.plan.device_external_id)
            && !keys.contains(&w.plan.delivery_key);
        if fits {
            devices.insert(w.plan.device_external_id.clone());
            keys.insert(w.plan.delivery_key.clone());
            taken.push(w);
        } else {
            kept.push_back(w);
        }
    }
    *waiting = kept;
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::webhook::{EventKind, MappedState};
    use chrono::Utc;

    fn waiter(org: Uuid, service: Uuid, device: &str, key: &str) -> Waiter {
        Waiter {
            org,
            service,
            version: Arc::from("1"),
            plan: Plan {
                delivery_key: key.into(),
                content_type: "application/json".into(),
                event_type: None,
                kind: EventKind::Data,
                device_external_id: device.into(),
                payload: serde_json::json!({}),
                data: serde_json::json!({}),
                path: String::new(),
                recorded_at: Utc::now(),
                received_at: Utc::now(),
                seen: true,
                offline: false,
                fresh: true,
                state: MappedState::default(),
                force_refresh: false,
            },
            tx: None,
        }
    }

    #[test]
    fn a_batch_holds_one_service_and_each_device_and_key_once() {
        let (org, svc, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let me = waiter(org, svc, "a", "k1");
        let mut waiting = VecDeque::from([
            waiter(org, svc, "b", "k2"),
            waiter(org, svc, "a", "k3"),   // same device as the leader
            waiter(org, other, "c", "k4"), // another service
            waiter(org, svc, "d", "k2"),   // same key as an earlier one
            waiter(org, svc, "e", "k5"),
        ]);
        let taken = take_compatible(&mut waiting, &me);
        let keys = |ws: &[Waiter]| {
            ws.iter()
                .map(|w| w.plan.delivery_key.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&taken), ["k2", "k5"]);
        assert_eq!(
            keys(waiting.make_contiguous()),
            ["k3", "k4", "k2"],
            "the rest stays queued, in order"
        );
    }

    #[test]
    fn a_batch_is_bounded() {
        let (org, svc) = (Uuid::new_v4(), Uuid::new_v4());
        let me = waiter(org, svc, "me", "me");
        let mut waiting: VecDeque<Waiter> = (0..MAX_BATCH + 5)
            .map(|i| waiter(org, svc, &format!("d{i}"), &format!("k{i}")))
            .collect();
        let taken = take_compatible(&mut waiting, &me);
        assert_eq!(taken.len(), MAX_BATCH - 1);
        assert_eq!(waiting.len(), 6);
    }
}
