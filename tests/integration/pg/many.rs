//! Many `pinion server` processes on one PostgreSQL database: they share the work, and
//! when one is killed with SIGKILL (and not restarted) the others take over its instances
//! and its activity attempts, with nothing done twice.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pinion_runtime::store::EventFilter;
use pinion_runtime::{EventKind, InstanceStatus};

use super::common::*;

/// A `pinion server` process on `db`, killed (SIGKILL) on drop.
pub(super) struct Server(pub(super) Child);

impl Server {
    /// Starts one with `activity_threads` threads for activity code.
    pub(super) fn start(db: &Path, activity_threads: usize) -> Server {
        Server::start_with(db, activity_threads, &[])
    }

    /// Starts one with `activity_threads` threads for activity code and `more` arguments.
    pub(super) fn start_with(db: &Path, activity_threads: usize, more: &[&str]) -> Server {
        Server(
            Command::new(env!("CARGO_BIN_EXE_pinion"))
                .arg("--db")
                .arg(db)
                .args([
                    "server",
                    "--activity-threads",
                    &activity_threads.to_string(),
                    "--listen",
                    "127.0.0.1:0",
                    "--no-auth",
                ])
                .args(more)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start server"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query_i64(db: &Path, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> i64 {
    postgres::Client::connect(db.to_str().unwrap(), postgres::NoTls)
        .unwrap()
        .query_one(sql, params)
        .unwrap()
        .get(0)
}

/// The member id a server process registered under (see `store/postgres/members.rs`).
fn member_of(db: &Path, pid: u32) -> Option<String> {
    postgres::Client::connect(db.to_str().unwrap(), postgres::NoTls)
        .unwrap()
        .query_opt("SELECT id FROM workers WHERE pid = $1", &[&i64::from(pid)])
        .unwrap()
        .map(|r| r.get(0))
}

#[test]
fn three_servers_finish_a_thousand_workflows_when_one_is_killed_without_doing_anything_twice() {
    const N: usize = 1000;
    let dir = TempDir::new("pg-three");
    let db = dir.db();
    let p = open(&db);
    let kit = p.deploy(&wasm_bytes("testkit")).unwrap().hash.0;
    let mut servers: Vec<Server> = (0..3).map(|_| Server::start(&db, 2)).collect();
    let members: Vec<String> = servers
        .iter()
        .map(|s| {
            let mut id = None;
            wait_until("every server to join", Duration::from_secs(60), || {
                id = member_of(&db, s.pid());
                id.is_some()
            });
            id.unwrap()
        })
        .collect();
    // No worker in this process: each start only creates the instance, for any server.
    let ids: Vec<String> = (0..N).map(|i| format!("relay-{i}")).collect();
    for id in &ids {
        p.start(&start_req(
            "Relay",
            &kit,
            r#"{"sleep_ms": 200, "nap_ms": 500}"#,
            id,
        ))
        .unwrap();
    }
    // The victim must be killed while it runs `nap` attempts. Sending half the signals and
    // then looking for one gave a single window of one nap's length after the last signal:
    // a pause of this process longer than that (CI, under load) found none, and with no
    // signal left to send the victim never napped again. So: wait until every instance has
    // an owner, then signal the victim's instances one at a time until one naps.
    wait_until(
        "every instance to have an owner",
        Duration::from_secs(120),
        || {
            query_i64(
                &db,
                "SELECT count(*) FROM instances WHERE owner IS NULL AND status = 'running'",
                &[],
            ) == 0
        },
    );
    let victim = &members[0];
    let victims: HashSet<String> = postgres::Client::connect(db.to_str().unwrap(), postgres::NoTls)
        .unwrap()
        .query("SELECT id FROM instances WHERE owner = $1", &[victim])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        victims.len() >= 2,
        "the first server owns {} instances: too few to kill it mid-run",
        victims.len()
    );
    let leased_by_victim = || {
        query_i64(
            &db,
            "SELECT count(*) FROM activity_tasks WHERE leased_by = $1 AND activity_type = 'nap'",
            &[victim],
        ) >= 1
    };
    // Half the signals before the kill (many arrive before their workflow waits for them):
    // the other servers' instances at once, the victim's one at a time until it runs a
    // `nap` attempt (each takes 500 ms), keeping at least one of its instances for after.
    let mut signalled = vec![false; N];
    for (i, id) in ids.iter().enumerate().take(N / 2) {
        if !victims.contains(id) {
            p.signal(id, "go", &i.to_string()).unwrap();
            signalled[i] = true;
        }
    }
    let mut napping = false;
    let mut sent_to_victim = 0;
    for (i, id) in ids.iter().enumerate() {
        if napping || sent_to_victim + 1 >= victims.len() {
            break;
        }
        if victims.contains(id) {
            p.signal(id, "go", &i.to_string()).unwrap();
            signalled[i] = true;
            sent_to_victim += 1;
            let sent = std::time::Instant::now();
            while !napping && sent.elapsed() < Duration::from_millis(200) {
                napping = leased_by_victim();
            }
        }
    }
    if !napping {
        wait_until(
            "the first server to run `nap` attempts",
            Duration::from_secs(120),
            leased_by_victim,
        );
    }
    let owned_at_kill = query_i64(
        &db,
        "SELECT count(*) FROM instances WHERE owner = $1 AND status = 'running'",
        &[victim],
    );
    drop(servers.remove(0));
    let completed_at_kill = query_i64(
        &db,
        "SELECT count(*) FROM instances WHERE status = 'completed'",
        &[],
    );
    assert!(owned_at_kill > 0, "the victim owned no running instance");
    assert!(
        (completed_at_kill as usize) < N,
        "the kill came too late to test anything"
    );
    for (i, id) in ids.iter().enumerate() {
        if !signalled[i] {
            p.signal(id, "go", &i.to_string()).unwrap();
        }
    }
    wait_until(
        "every workflow to complete on the two servers left",
        Duration::from_secs(300),
        || {
            query_i64(
                &db,
                "SELECT count(*) FROM instances WHERE status = 'completed'",
                &[],
            ) == N as i64
        },
    );
    // The victim is gone from the members; nothing is owned by it or leased by it.
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM workers WHERE id = $1", &[victim]),
        0
    );
    assert_eq!(
        query_i64(
            &db,
            "SELECT count(*) FROM instances WHERE owner = $1",
            &[victim]
        ),
        0
    );
    // Both survivors did work.
    for m in &members[1..] {
        assert!(
            query_i64(&db, "SELECT count(*) FROM instances WHERE owner = $1", &[m]) > 0,
            "server {m} owns nothing"
        );
    }

    let mut lost_retried = 0;
    for (i, id) in ids.iter().enumerate() {
        let rec = p.status(id).unwrap();
        assert_eq!(rec.status, InstanceStatus::Completed, "{id}");
        assert_eq!(
            rec.result.as_ref().map(|r| r.json().to_owned()),
            Some((i + 2).to_string()),
            "{id}: the signal plus two activity steps"
        );
        let history = p.history(id).unwrap();
        let mut scheduled: HashMap<u32, usize> = HashMap::new();
        let mut resolved: HashMap<u32, usize> = HashMap::new();
        let (mut timers, mut signals, mut ends) = (0, 0, 0);
        for (k, e) in history.iter().enumerate() {
            assert_eq!(e.id, k as u64 + 1, "{id}: dense event ids");
            match &e.kind {
                EventKind::ActivityScheduled { seq, .. } => {
                    *scheduled.entry(*seq).or_default() += 1
                }
                EventKind::ActivityCompleted { seq, attempts, .. } => {
                    *resolved.entry(*seq).or_default() += 1;
                    if *attempts > 1 {
                        lost_retried += 1;
                    }
                }
                EventKind::ActivityFailed { seq, .. } | EventKind::ActivityTimedOut { seq, .. } => {
                    *resolved.entry(*seq).or_default() += 1
                }
                EventKind::TimerFired { .. } => timers += 1,
                EventKind::SignalReceived { .. } => signals += 1,
                EventKind::WorkflowCompleted { .. } => ends += 1,
                _ => {}
            }
        }
        assert_eq!(scheduled.len(), 2, "{id}: two activities");
        assert!(
            scheduled.values().all(|n| *n == 1),
            "{id}: an activity scheduled twice (an activation committed twice): {scheduled:?}"
        );
        assert!(
            resolved.values().all(|n| *n == 1) && resolved.len() == 2,
            "{id}: an activity result recorded twice: {resolved:?}"
        );
        assert_eq!((timers, signals, ends), (1, 1, 1), "{id}");
    }
    assert!(
        lost_retried > 0,
        "no attempt of the killed server was taken over and retried"
    );

    // The lifecycle stream: ids dense from 1, each transition of each instance once.
    let mut events = Vec::new();
    loop {
        let page = p
            .store()
            .lifecycle_events(&EventFilter {
                after: events
                    .last()
                    .map_or(0, |e: &pinion_runtime::store::LifecycleEvent| e.id),
                limit: 1000,
                ..EventFilter::default()
            })
            .unwrap();
        if page.is_empty() {
            break;
        }
        events.extend(page);
    }
    for (k, e) in events.iter().enumerate() {
        assert_eq!(
            e.id,
            k as u64 + 1,
            "the event stream has a gap or is out of order"
        );
    }
    let mut seen: HashSet<(String, &'static str)> = HashSet::new();
    for e in &events {
        assert!(
            seen.insert((e.instance_id.0.clone(), e.transition.name())),
            "{} {} published twice",
            e.instance_id,
            e.transition.name()
        );
    }
    let ids: HashSet<&String> = ids.iter().collect();
    for kind in ["started", "completed"] {
        let n = events
            .iter()
            .filter(|e| e.transition.name() == kind && ids.contains(&e.instance_id.0))
            .count();
        assert_eq!(n, N, "{kind} events");
    }
}

#[test]
fn servers_sharing_a_database_deliver_each_webhook_once_and_one_takes_over_when_the_other_dies() {
    use super::events::{receiver, start, webhook_server};
    use pinion_runtime::api::Client;
    let dir = TempDir::new("pg-webhook-lead");
    let db = dir.db();
    let secret = dir.path().join("webhook-secret");
    write_private(&secret, "whsec-lead\n");
    let hash = open(&db).deploy(&wasm_bytes("testkit")).unwrap().hash.0;
    let (url, hooks) = receiver(0);
    let ids_of = |n: usize| -> Vec<u64> {
        (0..n)
            .map(|_| {
                let (headers, _, _) = hooks
                    .recv_timeout(Duration::from_secs(60))
                    .expect("a webhook request");
                headers["pinion-event-id"].parse().unwrap()
            })
            .collect()
    };
    // The first server leads: it delivers the first workflow's two events.
    let (first, address) = webhook_server(&db, &url, &secret);
    let mut first = Some(Server(first));
    start(
        &Client::new(&address, None).unwrap(),
        &hash,
        "Echo",
        serde_json::json!(1),
        "w1",
    );
    assert_eq!(ids_of(2), [1, 2]);
    // A second server with the same webhook: the events of three more workflows arrive
    // once each, not once per server.
    let (second, address) = webhook_server(&db, &url, &secret);
    let _second = Server(second);
    let client = Client::new(&address, None).unwrap();
    for i in 2..=4 {
        start(
            &client,
            &hash,
            "Echo",
            serde_json::json!(i),
            &format!("w{i}"),
        );
    }
    let mut got = ids_of(6);
    got.sort_unstable();
    assert_eq!(got, [3, 4, 5, 6, 7, 8]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(hooks.try_recv().is_err(), "an event was delivered twice");
    // The leader dies: the other server takes over and delivers what comes next.
    drop(first.take());
    start(&client, &hash, "Echo", serde_json::json!(5), "w5");
    let mut got = ids_of(2);
    got.sort_unstable();
    assert_eq!(got, [9, 10]);
}

/// Sessions holding the lead named `what` (`EventStore::lead`: a session advisory lock on
/// a hash of it).
fn leads(db: &Path, what: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("pinion lead: {what}").as_bytes());
    let key = i64::from_le_bytes(digest[..8].try_into().unwrap());
    query_i64(
        db,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND ((classid::bigint << 32) | objid::bigint) = $1",
        &[&key],
    )
}

#[test]
fn servers_sharing_a_database_apply_retention_from_one_at_a_time_and_another_takes_over() {
    let dir = TempDir::new("pg-retention-lead");
    let db = dir.db();
    let p = open(&db);
    let kit = p.deploy(&wasm_bytes("testkit")).unwrap().hash.0;
    let retention = ["--retention", "1s"];
    let instances = |prefix: &str| {
        query_i64(
            &db,
            "SELECT count(*) FROM instances WHERE id LIKE $1",
            &[&format!("{prefix}%")],
        )
    };
    // The first server takes the lead before the second starts.
    let mut first = Some(Server::start_with(&db, 1, &retention));
    wait_until(
        "the first server to lead retention",
        Duration::from_secs(60),
        || leads(&db, "retention") == 1,
    );
    let second = Server::start_with(&db, 1, &retention);
    wait_until("the second server to join", Duration::from_secs(60), || {
        member_of(&db, second.pid()).is_some()
    });
    for i in 0..5 {
        p.start(&start_req("Echo", &kit, &i.to_string(), &format!("a{i}")))
            .unwrap();
    }
    wait_until(
        "the ended instances to be purged",
        Duration::from_secs(60),
        || instances("a") == 0,
    );
    assert_eq!(leads(&db, "retention"), 1, "one server purges at a time");
    // The leader dies; the other takes the lead and goes on purging.
    drop(first.take());
    wait_until("the second server to lead", Duration::from_secs(60), || {
        leads(&db, "retention") == 1
    });
    for i in 0..5 {
        p.start(&start_req("Echo", &kit, &i.to_string(), &format!("b{i}")))
            .unwrap();
    }
    wait_until(
        "the survivor to purge the new ended instances",
        Duration::from_secs(60),
        || instances("b") == 0,
    );
}
