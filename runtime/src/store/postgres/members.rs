//! Many servers on one database: each server that runs workers *joins* (a row in
//! `workers`), and its peers find out when it is gone.
//!
//! # Liveness without clocks
//!
//! A member holds a session advisory lock on its row's `lock_key`, on a connection of its
//! own ([`PgMember`]). While the process lives, so does the connection and so the lock;
//! when the process dies (SIGKILL included) the kernel closes its socket, PostgreSQL ends
//! the session and the lock is free at once. A peer that can take the lock
//! (`pg_try_advisory_xact_lock`) therefore knows the member is gone, without comparing
//! the clocks of different hosts or writing a heartbeat row every second. A host that
//! vanishes without closing its sockets (power loss, a partition) is noticed through TCP
//! keepalive, which the member's connection sets to about 25 s.
//!
//! # What a member owns
//!
//! - *Instances* (`instances.owner`): the member whose workers activate the instance and
//!   keep its live run cached. It takes a free instance when it lists runnable ones or
//!   commits an activation of it; a commit by any other member is refused, so one member
//!   activates an instance at a time, and a member that finds an instance owned by
//!   another drops its cached copy.
//! - *Activity attempts* (`activity_tasks.leased_by`): the attempts its claims leased.
//!
//! [`reap`] (every second, from each member) frees the instances of members that are gone
//! and returns the attempts they leased, which the caller records as lost attempts (the
//! retry policy runs them again). Nothing of a live member is ever touched: a server
//! starting up no longer clears every lease, only a dead server's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;

use super::tasks::{task_of, TASK_COLUMNS};
use super::{connect, map_err, PgOptions, PgStore, Tx};
use crate::store::{ActivityTask, StoreError};

/// The id this process's workers use in `instances.owner` and `activity_tasks.leased_by`
/// (`None` until it joins): shared with the transactions that need it.
pub(super) type MemberId = Arc<RwLock<Option<Arc<str>>>>;

/// This process's membership: the connection that holds its liveness lock.
pub(super) struct Membership {
    client: Client,
    id: Arc<str>,
}

/// A joined member; leaves (deletes its row, frees its instances, ends its session) when
/// dropped.
pub struct PgMember {
    store: Arc<PgStore>,
    listener: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

/// The channel servers wake each other on (see [`notify`]).
const CHANNEL: &str = "pinion_work";

/// Wakes, when the transaction commits, the member that owns an instance whose input just
/// arrived (`owner`), or every member (`None`: a free instance, any may take it). A member
/// listening ([`PgMember::listen`]) looks for work at once instead of at its next poll.
/// Only cross-server wake-ups go this way: PostgreSQL serialises the commits of
/// transactions that notify, so a member never notifies itself.
pub(super) fn notify(tx: &mut Tx<'_>, owner: Option<&str>) -> Result<(), StoreError> {
    tx.exec(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &owner.unwrap_or("")],
    )?;
    Ok(())
}

impl PgMember {
    /// Listens for wake-ups meant for this member (see [`notify`]) on a connection of its
    /// own, calling `wake` for each, until the member leaves.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub fn listen(&mut self, wake: Box<dyn Fn() + Send + Sync>) -> Result<(), StoreError> {
        let url = self.store.url.clone();
        let mut client = connect(&url, &PgOptions::default())?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(map_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (store, stop2) = (Arc::downgrade(&self.store), stop.clone());
        let thread = std::thread::Builder::new()
            .name("pinion-pg-listen".into())
            .spawn(move || listen_loop(&url, client, &store, &stop2, &*wake))
            .map_err(|e| StoreError::Database(format!("cannot start the listener thread: {e}")))?;
        self.listener = Some((stop, thread));
        Ok(())
    }
}

fn listen_loop(
    url: &str,
    mut client: Client,
    store: &std::sync::Weak<PgStore>,
    stop: &AtomicBool,
    wake: &(dyn Fn() + Send + Sync),
) {
    while !stop.load(Ordering::SeqCst) {
        let mine = |payload: &str| {
            payload.is_empty()
                || store
                    .upgrade()
                    .and_then(|s| s.member_id())
                    .is_some_and(|me| *me == *payload)
        };
        let mut failed = false;
        {
            // Wakes at each notification as it comes: the iterator itself ends only once
            // 250 ms passed (to look at `stop` and the connection).
            let mut notes = client.notifications();
            let mut iter = notes.timeout_iter(Duration::from_millis(250));
            loop {
                match iter.next() {
                    Ok(Some(n)) if mine(n.payload()) => wake(),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
        }
        if failed || client.is_closed() {
            // Polling still finds the work meanwhile; listen again once the server answers.
            std::thread::sleep(Duration::from_millis(500));
            if let Ok(mut c) = connect(url, &PgOptions::default()) {
                if c.batch_execute(&format!("LISTEN {CHANNEL}")).is_ok() {
                    client = c;
                    wake();
                }
            }
        }
    }
}

impl std::fmt::Debug for PgMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMember")
            .field("id", &self.store.member_id())
            .finish()
    }
}

impl Drop for PgMember {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.listener.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        self.store.leave();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

fn random_u64() -> Result<u64, StoreError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b)
        .map_err(|e| StoreError::Database(format!("no random numbers for a member id: {e}")))?;
    Ok(u64::from_le_bytes(b))
}

/// Opens the liveness connection, takes its lock and inserts the member's row.
fn open_membership(url: &str) -> Result<Membership, StoreError> {
    let mut client = connect(url, &PgOptions::default())?;
    // The server notices a vanished host within ~25 s (no effect over a Unix socket).
    client
        .batch_execute(
            "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3;",
        )
        .map_err(map_err)?;
    let host = hostname();
    let pid = i64::from(std::process::id());
    // The key is random (63 bits), so two members never share a lock.
    let key = (random_u64()? >> 1) as i64;
    let id: Arc<str> = format!("{host}:{pid}:{:08x}", random_u64()? as u32).into();
    client
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .map_err(map_err)?;
    #[allow(clippy::disallowed_methods)] // when it joined, for operators; not workflow time
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    client
        .execute(
            "INSERT INTO workers(id, lock_key, host, pid, joined_at_ms) VALUES ($1, $2, $3, $4, $5)",
            &[&&*id, &key, &host, &pid, &now],
        )
        .map_err(map_err)?;
    Ok(Membership { client, id })
}

impl PgStore {
    /// Joins the servers that run workers on this database: from now on this process's
    /// claims and activations are its own, and its peers take over its work when it dies.
    /// Leaves when the returned value is dropped.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub fn join(self: &Arc<Self>) -> Result<PgMember, StoreError> {
        let m = open_membership(&self.url)?;
        *self.me.write().expect("member id lock") = Some(m.id.clone());
        *self.membership.lock().expect("membership lock") = Some(m);
        Ok(PgMember {
            store: self.clone(),
            listener: None,
        })
    }

    /// This process's member id, once it joined.
    pub fn member_id(&self) -> Option<Arc<str>> {
        self.me.read().expect("member id lock").clone()
    }

    /// Checks that this process's liveness session still stands, and joins again under a
    /// new id when it was lost (the database restarted, the network dropped): its peers may
    /// have taken over its work meanwhile, and commits under the old id are refused.
    fn keep_membership(&self) -> Result<(), StoreError> {
        let mut guard = self.membership.lock().expect("membership lock");
        let Some(m) = guard.as_mut() else {
            return Ok(());
        };
        if m.client.simple_query("SELECT 1").is_ok() {
            return Ok(());
        }
        let old = m.id.clone();
        let fresh = open_membership(&self.url)?;
        tracing::warn!(
            old = %old,
            new = %fresh.id,
            "the PostgreSQL session holding this server's membership was lost; joined again under a new id (peers take over the old id's work)"
        );
        *self.me.write().expect("member id lock") = Some(fresh.id.clone());
        *guard = Some(fresh);
        Ok(())
    }

    /// Leaves: deletes this member's row and frees its instances, then ends its session.
    /// The attempts it still leases (abandoned by a shutdown's grace period) are lost
    /// attempts for the members that remain.
    fn leave(&self) {
        let Some(mut m) = self.membership.lock().expect("membership lock").take() else {
            return;
        };
        *self.me.write().expect("member id lock") = None;
        let id = m.id.to_string();
        let left = m.client.transaction().and_then(|mut t| {
            t.execute("UPDATE instances SET owner = NULL WHERE owner = $1", &[&id])?;
            t.execute("DELETE FROM workers WHERE id = $1", &[&id])?;
            t.commit()
        });
        if let Err(e) = left {
            tracing::warn!(error = %e, "leaving the servers of this database (peers will notice it is gone)");
        }
    }

    /// Reaps the members that are gone (see the module's docs) and returns the activity
    /// attempts leased by processes that no longer run: by a member that is gone, or with
    /// no member recorded (a database migrated from SQLite). At start-up and then every
    /// second; the worker records each as a lost attempt.
    pub(super) fn reap(&self) -> Result<Vec<ActivityTask>, StoreError> {
        self.keep_membership()?;
        let me = self.member_id().map(|m| m.to_string()).unwrap_or_default();
        self.tx(move |tx| reap(tx, &me))
    }
}

/// The transaction of [`PgStore::reap`].
fn reap(tx: &mut Tx<'_>, me: &str) -> Result<Vec<ActivityTask>, StoreError> {
    let members: Vec<(String, i64)> = tx
        .query("SELECT id, lock_key FROM workers WHERE id <> $1", &[&me])?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (id, key) in members {
        // Free only while its session holds it: then the member is gone for good (the
        // lock is ours until this transaction ends, and its key is never reused).
        let gone: bool = tx
            .one("SELECT pg_try_advisory_xact_lock($1)", &[&key])?
            .get(0);
        if gone {
            let freed = tx.exec("UPDATE instances SET owner = NULL WHERE owner = $1", &[&id])?;
            tx.exec("DELETE FROM workers WHERE id = $1", &[&id])?;
            tracing::info!(member = %id, instances = freed, "a server on this database is gone; its instances are free for the others");
        }
    }
    tx.query(
        &format!(
            "SELECT {TASK_COLUMNS} FROM activity_tasks t
             WHERE lease_until_ms IS NOT NULL
               AND (leased_by IS NULL OR NOT EXISTS(SELECT 1 FROM workers w WHERE w.id = t.leased_by))
             ORDER BY instance_id, seq"
        ),
        &[],
    )?
    .iter()
    .map(task_of)
    .collect()
}

/// The lock a [`Membership`] is kept in by the store.
pub(super) type MembershipSlot = Mutex<Option<Membership>>;

/// A lead among the servers (see `EventStore::lead`): a session advisory lock, keyed by a
/// hash of what is led, held on a connection of its own (so it ends with the process).
struct PgLead {
    client: Client,
}

impl crate::store::events::Lead for PgLead {
    fn held(&mut self) -> bool {
        self.client.simple_query("SELECT 1").is_ok()
    }
}

impl PgStore {
    /// See `EventStore::lead`.
    pub(super) fn try_lead(
        &self,
        what: &str,
    ) -> Result<Option<Box<dyn crate::store::events::Lead>>, StoreError> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("pinion lead: {what}").as_bytes());
        let key = i64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        let mut client = connect(&self.url, &PgOptions::default())?;
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .map_err(map_err)?
            .get(0);
        Ok(got.then(|| Box::new(PgLead { client }) as Box<dyn crate::store::events::Lead>))
    }
}
