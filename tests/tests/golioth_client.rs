//! The Golioth client (`shared::domain::golioth`) against the simulator on port 0: listings of 0, 1, 100,
//! 101 and 10,000 devices, every error class, retries that honour `Retry-After` (checked from
//! the simulator's request timestamps), no retry on final 4xx, timeouts, and the API key staying
//! out of every formatted error and Debug output.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use host::simulator::{
    Fault, FaultRates, FaultRule, ProjectSpec, RequestMatch, RequestRecord, SeedSpec, SimOptions,
    Simulator, SimulatorHandle,
};
use serde_json::json;
use shared::base::settings::Secret;
use shared::domain::golioth::{
    ClientConfig, DeviceUpdate, GoliothClient, GoliothDeviceId, GoliothError, ListDevicesOptions,
    ListingTracker, NewDevice, ProjectId, RetryPolicy, TagId, generate_psk,
};
use shared::runtime::native::{ReqwestHttp, SystemClock};

const PROJECT: &str = "acme-fleet";
const KEY: &str = "sim-key-0123456789-very-secret";

struct Env {
    sim: SimulatorHandle,
    http: ReqwestHttp,
    clock: SystemClock,
}

/// Fast retries for tests: small backoff, four attempts.
fn test_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(40),
        max_retry_after: Duration::from_secs(5),
    }
}

impl Env {
    async fn new(devices: usize) -> Env {
        let sim = Simulator::start(SimOptions::default()).await.unwrap();
        sim.create_project(ProjectSpec::new(PROJECT, KEY)).unwrap();
        if devices > 0 {
            sim.seed(
                PROJECT,
                &SeedSpec {
                    count: devices,
                    tags: vec!["red".into(), "blue".into()],
                    with_state: true,
                    ..SeedSpec::default()
                },
            )
            .unwrap();
        }
        Env {
            sim,
            http: ReqwestHttp::default(),
            clock: SystemClock,
        }
    }

    fn config(&self, key: &str) -> ClientConfig {
        ClientConfig::new(
            &self.sim.base_url(),
            ProjectId::parse(PROJECT).unwrap(),
            Secret::new(key),
        )
        .unwrap()
        .with_retry(test_policy())
        .with_timeout(Duration::from_secs(10))
    }

    fn client(&self) -> GoliothClient<'_> {
        GoliothClient::new(&self.http, &self.clock, self.config(KEY))
    }

    fn client_with(&self, config: ClientConfig) -> GoliothClient<'_> {
        GoliothClient::new(&self.http, &self.clock, config)
    }

    fn requests_of(&self, kind: &str) -> Vec<RequestRecord> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.kind == kind)
            .collect()
    }

    fn first_id(&self) -> GoliothDeviceId {
        GoliothDeviceId::parse(&self.sim.device_ids(PROJECT)[0]).unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------------------

async fn check_listing(devices: usize, expected_requests: usize) {
    let env = Env::new(devices).await;
    let listing = env
        .client()
        .list_devices(&ListDevicesOptions::default())
        .await
        .unwrap();
    let s = &listing.summary;
    assert!(s.complete, "{devices}: {s:?}");
    assert!(s.total_stable);
    assert_eq!(s.total, Some(devices as u64));
    assert_eq!(s.unique_devices, devices as u64);
    assert_eq!(s.duplicates, 0);
    assert_eq!(listing.devices.len(), devices);
    let got: HashSet<String> = listing.devices.iter().map(|d| d.id.to_string()).collect();
    let want: HashSet<String> = env.sim.device_ids(PROJECT).into_iter().collect();
    assert_eq!(got, want);
    let lists = env.requests_of("devices.list");
    assert_eq!(lists.len(), expected_requests, "{devices} devices");
    for r in &lists {
        assert!(r.query.contains("perPage=100"), "{}", r.query);
    }
    assert!(lists.iter().any(|r| r.query.starts_with("page=0&")));
}

#[tokio::test]
async fn lists_an_empty_project_in_one_request() {
    check_listing(0, 1).await;
}

#[tokio::test]
async fn lists_one_device() {
    check_listing(1, 1).await;
}

#[tokio::test]
async fn lists_exactly_one_full_page_without_asking_for_an_empty_one() {
    check_listing(100, 1).await;
}

#[tokio::test]
async fn lists_101_devices_in_two_pages() {
    check_listing(101, 2).await;
}

#[tokio::test]
async fn lists_10000_devices_in_100_pages_with_bounded_concurrency() {
    check_listing(10_000, 100).await;
    let env = Env::new(10_000).await;
    let opts = ListDevicesOptions {
        concurrency: 3,
        ..ListDevicesOptions::default()
    };
    env.sim.set_latency(Duration::from_millis(2));
    let listing = env.client().list_devices(&opts).await.unwrap();
    assert!(listing.summary.complete);
    assert!(env.sim.stats().max_in_flight <= 3, "{:?}", env.sim.stats());
}

#[tokio::test]
async fn listing_parses_devices_and_fills_state_path() {
    let env = Env::new(3).await;
    let opts = ListDevicesOptions {
        state_path: Some("battery".into()),
        ..ListDevicesOptions::default()
    };
    let listing = env.client().list_devices(&opts).await.unwrap();
    let d = &listing.devices[0];
    assert_eq!(d.name.as_deref(), Some("device-000000"));
    assert_eq!(d.hardware_ids, vec!["hw-device-000000"]);
    assert_eq!(d.enabled, Some(true));
    assert!(d.created_at.is_some() && d.updated_at.is_some());
    assert_eq!(d.tag_ids.len(), 2, "device 0 carries two tags");
    assert_eq!(d.data, Some(json!(100)));
    assert!(
        env.requests_of("devices.list")[0]
            .query
            .contains("statePath=battery")
    );
}

#[tokio::test]
async fn filters_find_devices_by_name_and_hardware_id() {
    let env = Env::new(250).await;
    let client = env.client();
    let by_name = client.find_devices_by_name("device-000123").await.unwrap();
    assert_eq!(by_name.len(), 1);
    assert_eq!(by_name[0].hardware_ids, vec!["hw-device-000123"]);
    let by_hw = client
        .find_devices_by_hardware_id("hw-device-000200")
        .await
        .unwrap();
    assert_eq!(by_hw[0].name.as_deref(), Some("device-000200"));
    assert!(
        client
            .find_devices_by_name("nope")
            .await
            .unwrap()
            .is_empty()
    );
    let red = TagId::parse(&env.sim.tag_id(PROJECT, "red").unwrap()).unwrap();
    let opts = ListDevicesOptions {
        tag_ids: vec![red.clone()],
        ..ListDevicesOptions::default()
    };
    let tagged = client.list_devices(&opts).await.unwrap();
    assert!(tagged.summary.complete);
    assert!(tagged.devices.iter().all(|d| d.tag_ids.contains(&red)));
    // Seeding gives device i tag i % 2, and every third device also the next tag.
    let expected = (0..250).filter(|i| i % 2 == 0 || i % 3 == 0).count();
    assert_eq!(tagged.devices.len(), expected);
}

#[tokio::test]
async fn single_pages_and_a_tracker_judge_a_sliced_listing() {
    let env = Env::new(250).await;
    let client = env.client();
    let opts = ListDevicesOptions::default();
    let mut tracker = ListingTracker::new();
    let first = client.list_devices_page(0, &opts).await.unwrap();
    assert_eq!((first.devices.len(), first.total), (100, Some(250)));
    tracker.record(first);
    assert_eq!(tracker.expected_pages(), Some(3));
    for (page, result) in client.list_devices_pages(1..4, &opts, 2).await {
        let p = result.unwrap();
        assert_eq!(p.page, page);
        tracker.record(p);
    }
    assert!(tracker.is_finished());
    assert!(tracker.summary().complete);
}

#[tokio::test]
async fn a_device_created_between_pages_makes_the_listing_incomplete() {
    let env = Env::new(150).await;
    let client = env.client();
    let opts = ListDevicesOptions::default();
    let mut tracker = ListingTracker::new();
    tracker.record(client.list_devices_page(0, &opts).await.unwrap());
    env.sim
        .console_create_device(PROJECT, &json!({"name": "late-arrival"}))
        .unwrap();
    tracker.record(client.list_devices_page(1, &opts).await.unwrap());
    let s = tracker.summary();
    assert!(tracker.is_finished());
    assert!(!s.total_stable && !s.complete, "{s:?}");
}

#[tokio::test]
async fn a_device_deleted_between_pages_shows_as_a_shift() {
    let env = Env::new(150).await;
    let client = env.client();
    let opts = ListDevicesOptions::default();
    let mut tracker = ListingTracker::new();
    tracker.record(client.list_devices_page(0, &opts).await.unwrap());
    let first = env.sim.device_ids(PROJECT)[0].clone();
    env.sim.console_delete_device(PROJECT, &first).unwrap();
    tracker.record(client.list_devices_page(1, &opts).await.unwrap());
    let s = tracker.summary();
    assert!(!s.complete);
    assert!(!s.total_stable);
    assert_eq!(
        s.unique_devices, 149,
        "device 100 moved onto page 0 and was missed"
    );
}

#[tokio::test]
async fn a_page_that_keeps_failing_fails_the_listing() {
    let env = Env::new(350).await;
    env.sim.add_fault(FaultRule::always(
        RequestMatch::devices_page(2),
        Fault::internal(),
    ));
    let err = env
        .client()
        .list_devices(&ListDevicesOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, GoliothError::Server { .. }), "{err:?}");
    let page2 = env
        .requests_of("devices.list")
        .into_iter()
        .filter(|r| r.query.starts_with("page=2&"))
        .count();
    assert_eq!(page2, 4, "max_attempts");
}

#[tokio::test]
async fn random_faults_are_survived_by_retries() {
    let env = Env::new(1_000).await;
    env.sim.set_fault_rates(FaultRates {
        seed: 42,
        unavailable: 0.15,
        truncated: 0.05,
        ..FaultRates::default()
    });
    let config = env.config(KEY).with_retry(RetryPolicy {
        max_attempts: 10,
        ..test_policy()
    });
    let listing = env
        .client_with(config)
        .list_devices(&ListDevicesOptions::default())
        .await
        .unwrap();
    assert!(listing.summary.complete);
    assert_eq!(listing.devices.len(), 1_000);
    assert!(env.sim.stats().faults_injected > 0);
}

// ---------------------------------------------------------------------------------------------
// Devices, credentials, tags, blueprints, state
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn device_lifecycle_create_get_patch_delete() {
    let env = Env::new(0).await;
    let client = env.client();
    let mut tags = client.tag_map().await.unwrap();
    assert!(tags.is_empty());
    let ids = client
        .ensure_tags(&mut tags, &["red".into(), "blue".into()])
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(client.tag_map().await.unwrap().len(), 2);

    let created = client
        .create_device(&NewDevice {
            name: "sensor-1".into(),
            hardware_ids: vec!["hw-1".into()],
            tag_ids: vec![ids[0].clone()],
            cohort_id: Some(shared::domain::golioth::CohortId::parse("beta").unwrap()),
            ..NewDevice::default()
        })
        .await
        .unwrap();
    assert_eq!(created.name.as_deref(), Some("sensor-1"));
    assert_eq!(created.tag_ids, vec![ids[0].clone()]);
    assert_eq!(created.enabled, Some(true));

    let got = client.get_device(&created.id).await.unwrap();
    assert_eq!(got, created);

    let patched = client
        .update_device(
            &created.id,
            &DeviceUpdate {
                name: Some("sensor-one".into()),
                enabled: Some(false),
                add_tag_ids: vec![ids[1].clone()],
                remove_tag_ids: vec![ids[0].clone()],
                add_hardware_ids: vec!["hw-1b".into()],
                cohort_id: Some(None),
                ..DeviceUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.name.as_deref(), Some("sensor-one"));
    assert_eq!(patched.enabled, Some(false));
    assert_eq!(patched.tag_ids, vec![ids[1].clone()]);
    assert_eq!(patched.hardware_ids, vec!["hw-1", "hw-1b"]);
    assert_eq!(patched.cohort_id, None);
    assert!(
        patched.updated_at > created.updated_at,
        "updatedAt moves on writes"
    );

    let replaced = client
        .update_device(
            &created.id,
            &DeviceUpdate {
                tag_ids: Some(ids.clone()),
                ..DeviceUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(replaced.tag_ids, ids);

    client.delete_device(&created.id).await.unwrap();
    let err = client.get_device(&created.id).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");

    let stats = env.sim.stats();
    assert_eq!(stats.writes_by_kind.get("device.create"), Some(&1));
    assert_eq!(stats.writes_by_kind.get("device.update"), Some(&2));
    assert_eq!(stats.writes_by_kind.get("device.delete"), Some(&1));
    assert_eq!(stats.writes_by_kind.get("tag.create"), Some(&2));
}

#[tokio::test]
async fn a_new_device_gets_psk_credentials() {
    let env = Env::new(0).await;
    let client = env.client();
    let d = client
        .create_device(&NewDevice::named("psk-device"))
        .await
        .unwrap();
    assert_eq!(d.hardware_ids.len(), 1, "Golioth generates a hardware id");
    let psk = generate_psk();
    let cred = client
        .create_psk_credential(&d.id, "psk-device-id", &psk)
        .await
        .unwrap();
    assert_eq!(
        cred.identity.as_deref(),
        Some(format!("psk-device-id@{PROJECT}").as_str())
    );
    assert_eq!(cred.credential_type.as_deref(), Some("PRE_SHARED_KEY"));
    assert!(!format!("{cred:?}").contains(psk.expose()));
    let again = client
        .create_psk_credential(&d.id, "psk-device-id", &psk)
        .await
        .unwrap_err();
    assert!(again.is_duplicate(), "{again:?}");
    assert_eq!(env.sim.credentials(PROJECT).len(), 1);
}

#[tokio::test]
async fn tags_page_past_100_and_blueprints_list() {
    let env = Env::new(0).await;
    for i in 0..150 {
        env.sim.create_tag(PROJECT, &format!("tag-{i:03}")).unwrap();
    }
    env.sim.create_blueprint(PROJECT, "board-a").unwrap();
    let client = env.client();
    let tags = client.list_tags().await.unwrap();
    assert_eq!(tags.len(), 150);
    assert_eq!(env.requests_of("tags.list").len(), 2);
    let map = client.tag_map().await.unwrap();
    let id = map.id_of("tag-149").unwrap().clone();
    assert_eq!(map.name_of(&id), Some("tag-149"));
    let bps = client.list_blueprints().await.unwrap();
    assert_eq!(bps.len(), 1);
    assert_eq!(bps[0].name.as_deref(), Some("board-a"));
    assert_eq!(bps[0].platform.as_deref(), Some("zephyr"));
}

#[tokio::test]
async fn reads_lightdb_state() {
    let env = Env::new(20).await;
    let client = env.client();
    let ids: Vec<GoliothDeviceId> = env
        .sim
        .device_ids(PROJECT)
        .iter()
        .map(|i| GoliothDeviceId::parse(i).unwrap())
        .collect();
    assert_eq!(
        client.read_state(&ids[1], "battery").await.unwrap(),
        Some(json!(99))
    );
    let loc = client.read_state(&ids[1], "location/lat").await.unwrap();
    assert!(loc.is_some());
    assert_eq!(
        client.read_state(&ids[1], "nothing/here").await.unwrap(),
        None
    );
    let whole = client.read_state(&ids[1], "").await.unwrap().unwrap();
    assert_eq!(whole["signal"], json!(-51));
    let many = client.read_states(&ids, "battery", 4).await;
    assert_eq!(many.len(), 20);
    assert!(many.iter().all(|(_, r)| matches!(r, Ok(Some(_)))));
}

#[tokio::test]
async fn gets_the_project_and_its_organization() {
    let env = Env::new(0).await;
    let p = env.client().get_project().await.unwrap();
    assert_eq!(p.id.as_str(), PROJECT);
    assert_eq!(
        p.organization_id.map(|o| o.to_string()),
        Some(format!("org-{PROJECT}"))
    );
    let all = env.client().list_projects().await.unwrap();
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn bounded_fan_out_never_exceeds_its_limit() {
    let env = Env::new(40).await;
    env.sim.set_latency(Duration::from_millis(10));
    let ids: Vec<GoliothDeviceId> = env
        .sim
        .device_ids(PROJECT)
        .iter()
        .map(|i| GoliothDeviceId::parse(i).unwrap())
        .collect();
    env.sim.reset_stats();
    let results = env.client().get_devices(&ids, 3).await;
    assert_eq!(results.len(), 40);
    assert!(
        results
            .iter()
            .all(|(id, r)| r.as_ref().is_ok_and(|d| &d.id == id))
    );
    let stats = env.sim.stats();
    assert!(stats.max_in_flight <= 3, "{stats:?}");
    assert!(stats.max_in_flight >= 2, "requests did overlap: {stats:?}");
}

// ---------------------------------------------------------------------------------------------
// Error classes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn each_error_class_is_typed() {
    let env = Env::new(2).await;
    env.sim
        .create_project(ProjectSpec::new("other-project", "other-key"))
        .unwrap();
    let client = env.client();
    let id = env.first_id();

    // 400: a tag that does not exist.
    let err = client
        .create_device(&NewDevice {
            name: "x".into(),
            tag_ids: vec![TagId::parse("6500aaaaaaaaaaaaaaaaaaaa").unwrap()],
            ..NewDevice::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, GoliothError::BadRequest(_)), "{err:?}");
    assert!(!err.is_retryable());

    // 401: wrong key.
    let err = env
        .client_with(env.config("wrong-key"))
        .get_project()
        .await
        .unwrap_err();
    assert!(matches!(err, GoliothError::Unauthorized(_)), "{err:?}");
    assert_eq!(err.api_status().and_then(|s| s.code), Some(16));

    // 403: a key of another project.
    let err = env
        .client_with(env.config("other-key"))
        .get_device(&id)
        .await
        .unwrap_err();
    assert!(matches!(err, GoliothError::Forbidden(_)), "{err:?}");

    // 404.
    let missing = GoliothDeviceId::parse("6500ffffffffffffffffffff").unwrap();
    let err = client.get_device(&missing).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");

    // 409 "already being used" → Duplicate.
    let err = client
        .create_device(&NewDevice::named("device-000000"))
        .await
        .unwrap_err();
    assert!(err.is_duplicate(), "{err:?}");
    assert_eq!(err.http_status(), Some(409));
    let err = client
        .create_device(&NewDevice {
            name: "fresh".into(),
            hardware_ids: vec!["hw-device-000001".into()],
            ..NewDevice::default()
        })
        .await
        .unwrap_err();
    assert!(err.is_duplicate(), "hardware ids are unique too: {err:?}");

    // 429 and 5xx after the last attempt.
    env.sim.add_fault(FaultRule::always(
        RequestMatch::kind("project.get"),
        Fault::rate_limited(None),
    ));
    let err = client.get_project().await.unwrap_err();
    assert!(matches!(err, GoliothError::RateLimited { .. }), "{err:?}");
    assert!(err.is_retryable());
    env.sim.clear_faults();
    env.sim.add_fault(FaultRule::always(
        RequestMatch::kind("project.get"),
        Fault::internal(),
    ));
    let err = client.get_project().await.unwrap_err();
    assert!(matches!(err, GoliothError::Server { .. }), "{err:?}");
    env.sim.clear_faults();
    env.sim.add_fault(FaultRule::always(
        RequestMatch::kind("project.get"),
        Fault::unavailable(None),
    ));
    let err = client.get_project().await.unwrap_err();
    assert_eq!(err.http_status(), Some(503));
    assert!(err.is_retryable());

    // 501: not retryable.
    env.sim.clear_faults();
    env.sim.reset_stats();
    env.sim.add_fault(FaultRule::always(
        RequestMatch::kind("project.get"),
        Fault::status(501),
    ));
    let err = client.get_project().await.unwrap_err();
    assert!(matches!(err, GoliothError::NotImplemented(_)), "{err:?}");
    assert_eq!(env.requests_of("project.get").len(), 1);
}

#[tokio::test]
async fn final_4xx_are_not_retried() {
    let env = Env::new(1).await;
    let client = env.client();
    let missing = GoliothDeviceId::parse("6500ffffffffffffffffffff").unwrap();
    assert!(
        client
            .get_device(&missing)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(env.requests_of("device.get").len(), 1);

    assert!(
        client
            .create_device(&NewDevice::named("device-000000"))
            .await
            .unwrap_err()
            .is_duplicate()
    );
    assert_eq!(env.requests_of("device.create").len(), 1);

    let err = env
        .client_with(env.config("nope"))
        .get_project()
        .await
        .unwrap_err();
    assert!(matches!(err, GoliothError::Unauthorized(_)));
    assert_eq!(env.requests_of("project.get").len(), 1);

    let err = client
        .update_device(
            &env.first_id(),
            &DeviceUpdate {
                add_tag_ids: vec![TagId::parse("6500aaaaaaaaaaaaaaaaaaaa").unwrap()],
                ..DeviceUpdate::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GoliothError::BadRequest(_)), "{err:?}");
    assert_eq!(env.requests_of("device.update").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Retries and timeouts
// ---------------------------------------------------------------------------------------------

/// The gap between two consecutive requests of `kind`.
fn gap(records: &[RequestRecord], i: usize) -> Duration {
    records[i + 1].at.duration_since(records[i].at)
}

#[tokio::test]
async fn retries_429_after_retry_after_seconds() {
    let env = Env::new(1).await;
    env.sim.add_fault(FaultRule::times(
        2,
        RequestMatch::kind("device.get"),
        Fault::rate_limited(Some(1)),
    ));
    let d = env.client().get_device(&env.first_id()).await.unwrap();
    assert_eq!(d.id, env.first_id());
    let gets = env.requests_of("device.get");
    assert_eq!(gets.len(), 3);
    assert_eq!(gets[0].status, Some(429));
    assert_eq!(gets[2].status, Some(200));
    assert!(
        gap(&gets, 0) >= Duration::from_secs(1),
        "{:?}",
        gap(&gets, 0)
    );
    assert!(
        gap(&gets, 1) >= Duration::from_secs(1),
        "{:?}",
        gap(&gets, 1)
    );
}

#[tokio::test]
async fn retries_503_after_retry_after_seconds_and_http_date() {
    let env = Env::new(1).await;
    env.sim.add_fault(FaultRule::times(
        1,
        RequestMatch::kind("devices.list"),
        Fault::unavailable(Some(1)),
    ));
    let listing = env
        .client()
        .list_devices(&ListDevicesOptions::default())
        .await
        .unwrap();
    assert!(listing.summary.complete);
    let lists = env.requests_of("devices.list");
    assert_eq!(lists.len(), 2);
    assert_eq!(lists[0].status, Some(503));
    assert!(
        gap(&lists, 0) >= Duration::from_secs(1),
        "{:?}",
        gap(&lists, 0)
    );

    // An HTTP-date: the retry must not arrive before that instant.
    env.sim.reset_stats();
    let at = Utc::now() + chrono::Duration::seconds(2);
    let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let not_before = at.with_timezone(&Utc).timestamp();
    env.sim.add_fault(FaultRule::times(
        1,
        RequestMatch::kind("project.get"),
        Fault::Status {
            status: 503,
            retry_after: Some(date),
        },
    ));
    env.client().get_project().await.unwrap();
    let gets = env.requests_of("project.get");
    assert_eq!(gets.len(), 2);
    assert!(
        gets[1].time.timestamp() >= not_before,
        "{:?} vs {not_before}",
        gets[1].time
    );
}

#[tokio::test]
async fn a_hung_request_times_out_and_is_retried_up_to_the_limit() {
    let env = Env::new(1).await;
    env.sim.add_fault(FaultRule::always(
        RequestMatch::kind("device.get"),
        Fault::hang(Duration::from_secs(30)),
    ));
    let config = env
        .config(KEY)
        .with_timeout(Duration::from_millis(200))
        .with_retry(RetryPolicy {
            max_attempts: 2,
            ..test_policy()
        });
    let err = env
        .client_with(config)
        .get_device(&env.first_id())
        .await
        .unwrap_err();
    assert!(matches!(err, GoliothError::Timeout), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(env.requests_of("device.get").len(), 2);
}

#[tokio::test]
async fn one_hang_then_success() {
    let env = Env::new(1).await;
    env.sim.add_fault(FaultRule::times(
        1,
        RequestMatch::kind("device.get"),
        Fault::hang(Duration::from_secs(30)),
    ));
    let config = env.config(KEY).with_timeout(Duration::from_millis(200));
    env.client_with(config)
        .get_device(&env.first_id())
        .await
        .unwrap();
    assert_eq!(env.requests_of("device.get").len(), 2);
}

#[tokio::test]
async fn cut_bodies_are_retried() {
    let env = Env::new(1).await;
    env.sim.add_fault(FaultRule::times(
        1,
        RequestMatch::kind("device.get"),
        Fault::TruncatedBody,
    ));
    env.sim.add_fault(
        FaultRule::times(1, RequestMatch::kind("device.get"), Fault::AbortBody).after(1),
    );
    env.client().get_device(&env.first_id()).await.unwrap();
    let gets = env.requests_of("device.get");
    assert_eq!(gets.len(), 3);
    assert_eq!(gets[0].fault.as_deref(), Some("truncated_body"));
    assert_eq!(gets[1].fault.as_deref(), Some("abort_body"));

    // Without retries each one surfaces as its own class.
    let once = env.config(KEY).with_retry(RetryPolicy::none());
    env.sim.add_fault(FaultRule::times(
        1,
        RequestMatch::kind("device.get"),
        Fault::TruncatedBody,
    ));
    let err = env
        .client_with(once.clone())
        .get_device(&env.first_id())
        .await
        .unwrap_err();
    assert!(matches!(err, GoliothError::Decode(_)), "{err:?}");
    env.sim.add_fault(FaultRule::times(
        1,
        RequestMatch::kind("device.get"),
        Fault::AbortBody,
    ));
    let err = env
        .client_with(once)
        .get_device(&env.first_id())
        .await
        .unwrap_err();
    assert!(matches!(err, GoliothError::Transport(_)), "{err:?}");
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_returns_the_device_it_made() {
    let env = Env::new(0).await;
    env.sim.add_fault(FaultRule::times(
        1,
        RequestMatch::kind("device.create"),
        Fault::TruncatedBody,
    ));
    let new = NewDevice {
        name: "lost-answer".into(),
        hardware_ids: vec!["hw-lost".into()],
        ..NewDevice::default()
    };
    let d = env.client().create_device(&new).await.unwrap();
    assert_eq!(d.name.as_deref(), Some("lost-answer"));
    assert_eq!(env.sim.device_count(PROJECT), 1);
    assert_eq!(env.requests_of("device.create").len(), 2);
    assert_eq!(
        env.sim.stats().writes_by_kind.get("device.create"),
        Some(&1)
    );
}

#[tokio::test]
async fn a_delete_whose_answer_was_lost_still_succeeds() {
    let env = Env::new(1).await;
    env.sim.add_fault(FaultRule::times(
        1,
        RequestMatch::kind("device.delete"),
        Fault::hang(Duration::from_secs(30)),
    ));
    let config = env.config(KEY).with_timeout(Duration::from_millis(300));
    env.client_with(config)
        .delete_device(&env.first_id())
        .await
        .unwrap();
    assert_eq!(env.sim.device_count(PROJECT), 0);
    let deletes = env.requests_of("device.delete");
    assert_eq!(deletes.len(), 2);
    assert_eq!(deletes[1].status, Some(404));
}

// ---------------------------------------------------------------------------------------------
// The key never shows
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_api_key_never_appears_in_errors_or_debug_output() {
    let env = Env::new(1).await;
    let client = env.client();
    let mut printed = vec![format!("{client:?}"), format!("{:?}", client.config())];

    let wrong_key = "wrong-key-that-is-also-secret";
    let err = env
        .client_with(env.config(wrong_key))
        .get_project()
        .await
        .unwrap_err();
    printed.push(format!("{err}"));
    printed.push(format!("{err:?}"));

    env.sim.add_fault(FaultRule::always(
        RequestMatch::kind("device.get"),
        Fault::hang(Duration::from_secs(30)),
    ));
    let quick = env
        .config(KEY)
        .with_timeout(Duration::from_millis(100))
        .with_retry(RetryPolicy::none());
    let err = env
        .client_with(quick)
        .get_device(&env.first_id())
        .await
        .unwrap_err();
    printed.push(format!("{err} {err:?}"));

    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone_url = format!("http://127.0.0.1:{port}");
    let config = ClientConfig::new(
        &gone_url,
        ProjectId::parse(PROJECT).unwrap(),
        Secret::new(KEY),
    )
    .unwrap()
    .with_retry(RetryPolicy::none());
    let err = env.client_with(config).get_project().await.unwrap_err();
    printed.push(format!("{err} {err:?}"));

    for p in &printed {
        assert!(!p.contains(KEY), "{p}");
        assert!(!p.contains(wrong_key), "{p}");
    }
    assert!(printed[0].contains("Secret(***)"));
}
