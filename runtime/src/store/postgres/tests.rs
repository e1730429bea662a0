//! The store's internals against the suite's PostgreSQL (`$PINION_TEST_PG`, started by
//! scripts/test.sh; without it these tests fail, they never skip): error mapping, the
//! retry of aborted transactions, and the listing queries reading an index in order.

use std::sync::{Arc, Barrier};

use super::*;
use crate::store::{InstanceFilter, Store};

/// A new database on the test server, dropped on drop.
struct TestDb {
    admin: String,
    name: String,
    url: String,
}

impl TestDb {
    fn new() -> TestDb {
        let admin = std::env::var("PINION_TEST_PG").expect(
            "PINION_TEST_PG is not set: run the tests with scripts/test.sh, which starts a PostgreSQL server",
        );
        let name = format!(
            "pinion_unit_{}_{:x}",
            std::process::id(),
            crate::clock::random_u64()
        );
        let mut c = Client::connect(&admin, NoTls).expect("reach the test PostgreSQL");
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let (scheme, rest) = admin.split_once("://").unwrap();
        let server = rest.split_once('/').map_or(rest, |(s, _)| s);
        let url = format!("{scheme}://{server}/{name}");
        TestDb { admin, name, url }
    }

    fn client(&self) -> Client {
        Client::connect(&self.url, NoTls).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&self.admin, NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

#[test]
fn a_deadlock_is_reported_as_locked_which_says_retrying_helps() {
    let db = TestDb::new();
    db.client()
        .batch_execute("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
        .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let errors: Vec<StoreError> = [(1, 2), (2, 1)]
        .into_iter()
        .map(|(first, second)| {
            let (url, barrier) = (db.url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(&url, NoTls).unwrap();
                let mut t = c.transaction().unwrap();
                t.execute("SELECT 1 FROM t WHERE id = $1 FOR UPDATE", &[&first])
                    .unwrap();
                barrier.wait();
                let r = t.execute("SELECT 1 FROM t WHERE id = $1 FOR UPDATE", &[&second]);
                // The survivor gets its lock once the victim's transaction is gone.
                drop(t);
                r.err().map(map_err)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(errors.len(), 1, "one of the two is the deadlock's victim");
    assert!(
        matches!(&errors[0], StoreError::Locked(m) if m.contains("40P01")),
        "{:?}",
        errors[0]
    );
    assert!(errors[0].is_retryable());
}

#[test]
fn duplicate_keys_and_other_broken_rules_map_to_their_own_variants() {
    let db = TestDb::new();
    let mut c = db.client();
    c.batch_execute(
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT NOT NULL); INSERT INTO t VALUES (1, 'a');",
    )
    .unwrap();
    let dup = c
        .execute("INSERT INTO t VALUES (1, 'b')", &[])
        .map_err(map_err)
        .unwrap_err();
    assert!(matches!(dup, StoreError::AlreadyExists(_)), "{dup:?}");
    let null = c
        .execute("INSERT INTO t VALUES (2, NULL)", &[])
        .map_err(map_err)
        .unwrap_err();
    assert!(matches!(null, StoreError::Constraint(_)), "{null:?}");
    assert!(!dup.is_retryable() && !null.is_retryable());
}

#[test]
fn an_aborted_transaction_runs_again_and_gives_up_after_five_tries() {
    let db = TestDb::new();
    let mut conn = Conn {
        client: db.client(),
        stmts: HashMap::new(),
    };
    let mut runs = 0;
    let r = run_tx(&mut conn, None, &mut |tx| {
        runs += 1;
        tx.exec("SELECT 1", &[])?;
        if runs < 3 {
            Err(StoreError::Locked("simulated serialization failure".into()))
        } else {
            Ok(runs)
        }
    });
    assert_eq!(r.unwrap(), 3);
    let mut runs = 0;
    let r: Result<(), _> = run_tx(&mut conn, None, &mut |_| {
        runs += 1;
        Err(StoreError::Locked("always".into()))
    });
    assert!(matches!(r, Err(StoreError::Locked(_))));
    assert_eq!(runs, 5);
    // Any other error is the answer at once.
    let mut runs = 0;
    let r: Result<(), _> = run_tx(&mut conn, None, &mut |_| {
        runs += 1;
        Err(StoreError::Conflict("history moved".into()))
    });
    assert!(matches!(r, Err(StoreError::Conflict(_))));
    assert_eq!(runs, 1);
}

/// Every way `pinion list` filters reads a page from an index in the list's order, as on
/// SQLite (its migration 8): no sort of the instances table.
#[test]
fn listing_reads_an_index_in_order_and_never_sorts() {
    let db = TestDb::new();
    let store = PgStore::open(&db.url, PgOptions::default()).unwrap();
    db.client()
        .batch_execute(
            "INSERT INTO instances(id, workflow_type, module_hash, status, created_at_ms, updated_at_ms, event_count, runnable)
             SELECT 'i-' || i, 'T' || (i % 7), 'm' || (i % 3),
                    (ARRAY['running', 'completed', 'failed', 'blocked'])[i % 4 + 1],
                    i, i, 1, FALSE FROM generate_series(1, 20000) AS i;
             ANALYZE instances;",
        )
        .unwrap();
    let status = Some(crate::history::InstanceStatus::Completed);
    let filters = [
        InstanceFilter::default(),
        InstanceFilter {
            status,
            ..Default::default()
        },
        InstanceFilter {
            workflow_type: Some("T3".into()),
            ..Default::default()
        },
        InstanceFilter {
            module_hash: Some(crate::history::ModuleHash("m1".into())),
            ..Default::default()
        },
        InstanceFilter {
            status,
            after: Some((2500, InstanceId("i-2500".into()))),
            ..Default::default()
        },
    ];
    for f in filters {
        let f = InstanceFilter {
            limit: Some(20),
            ..f
        };
        let (sql, args) = store::list_sql_for_tests(&f);
        let params: Vec<&(dyn ToSql + Sync)> =
            args.iter().map(|a| &**a as &(dyn ToSql + Sync)).collect();
        let plan: Vec<String> = db
            .client()
            .query(&format!("EXPLAIN {sql}"), &params)
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("Index"), "{f:?}:\n{plan}");
        assert!(!plan.contains("Sort"), "{f:?} sorts:\n{plan}");
        assert_eq!(store.list_instances(&f).unwrap().len(), 20);
    }
}
