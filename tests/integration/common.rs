//! Helpers every integration test shares: building the example guests to wasm once, fresh
//! temporary databases, opening engines with a test clock, and bounded waits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pinion_runtime::clock::{Clock, SystemClock};
use pinion_runtime::store::sqlite::SqliteOptions;
use pinion_runtime::{Pinion, PinionConfig, StartRequest, WorkerConfig};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runtime/ has a parent")
        .to_path_buf()
}

/// Builds every example crate for wasm32-wasip1 (once per test process) and returns the
/// directory holding the `.wasm` files. Uses its own target dir so it never waits on the
/// lock of the cargo that is running the tests.
pub fn guests_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = root().join("target").join("wasm-guests");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "--quiet",
                "--target",
                "wasm32-wasip1",
                "--manifest-path",
            ])
            .arg(root().join("examples").join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("run cargo to build the example guests");
        assert!(
            status.success(),
            "building the example guests failed (is the wasm32-wasip1 target installed?)"
        );
        target.join("wasm32-wasip1").join("release")
    })
}

/// Path of an example guest's wasm, by crate name (`hello-v1` → `hello_v1.wasm`).
pub fn wasm(crate_name: &str) -> PathBuf {
    let p = guests_dir().join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// Bytes of an example guest.
pub fn wasm_bytes(crate_name: &str) -> Vec<u8> {
    std::fs::read(wasm(crate_name)).expect("read wasm")
}

/// A temporary directory removed on drop; for a PostgreSQL test, also a database of its
/// own, dropped with it.
pub struct TempDir(PathBuf, Option<PgDatabase>);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("pinion-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p, None)
    }

    /// A temporary directory whose [`TempDir::db`] is a new, empty PostgreSQL database on
    /// the server `$PINION_TEST_PG` names.
    pub fn postgres(tag: &str) -> TempDir {
        let mut dir = TempDir::new(tag);
        dir.1 = Some(PgDatabase::create());
        dir
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The database: `pinion.db` in the directory, or the PostgreSQL URL.
    pub fn db(&self) -> PathBuf {
        match &self.1 {
            Some(pg) => PathBuf::from(&pg.url),
            None => self.0.join("pinion.db"),
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server the PostgreSQL tests use, from `$PINION_TEST_PG`. Without it the test fails:
/// PostgreSQL tests never skip.
pub fn pg_admin_url() -> String {
    std::env::var("PINION_TEST_PG").unwrap_or_else(|_| {
        panic!(
            "PINION_TEST_PG is not set: run the tests with scripts/test.sh, which starts a \
             PostgreSQL server and sets it, or set it to postgres://USER@HOST:PORT/DB of a server you run"
        )
    })
}

/// A database of its own for one test, created on the test server and dropped on drop.
pub struct PgDatabase {
    admin: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn create() -> PgDatabase {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let admin = pg_admin_url();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "pinion_test_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let mut c = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at $PINION_TEST_PG: {e}"));
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the test database");
        let (base, query) = match admin.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin.as_str(), String::new()),
        };
        let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
        let server = rest.split_once('/').map_or(rest, |(s, _)| s);
        let url = format!("{scheme}://{server}/{name}{query}");
        PgDatabase { admin, name, url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// Rows in `table` of the database `db` (a SQLite file or a PostgreSQL URL).
pub fn row_count(db: &Path, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    match db.to_str().filter(|s| s.starts_with("postgres")) {
        Some(url) => postgres::Client::connect(url, postgres::NoTls)
            .unwrap()
            .query_one(&sql, &[])
            .unwrap()
            .get(0),
        None => rusqlite::Connection::open(db)
            .unwrap()
            .query_row(&sql, [], |r| r.get(0))
            .unwrap(),
    }
}

/// Runs one SQL statement on the database `db` (a SQLite file or a PostgreSQL URL) behind
/// the engine's back: for tests that simulate damage or tampering.
pub fn execute_sql(db: &Path, sql: &str) {
    match db.to_str().filter(|s| s.starts_with("postgres")) {
        Some(url) => {
            postgres::Client::connect(url, postgres::NoTls)
                .unwrap()
                .batch_execute(sql)
                .unwrap();
        }
        None => {
            rusqlite::Connection::open(db)
                .unwrap()
                .execute_batch(sql)
                .unwrap();
        }
    }
}

/// Marks tests that exercise SQLite itself (its file, its compile cache beside the file):
/// kept as they are here, left out where the engine tests run again on PostgreSQL
/// (`pg.rs`).
macro_rules! sqlite_only {
    ($($t:tt)*) => { $($t)* };
}
pub(crate) use sqlite_only;

/// Opens an engine on `db` with the given clock.
pub fn open_with_clock(db: &Path, clock: Arc<dyn Clock>) -> Pinion {
    let mut config = PinionConfig::new(db);
    config.clock = clock;
    config.sqlite = SqliteOptions::default();
    Pinion::open(config).expect("open engine")
}

/// Opens an engine on `db` with the real clock.
pub fn open(db: &Path) -> Pinion {
    open_with_clock(db, Arc::new(SystemClock))
}

/// A worker config that polls fast and keeps guest output quiet.
pub fn quiet_worker() -> WorkerConfig {
    WorkerConfig {
        poll_interval: Duration::from_millis(10),
        log: Arc::new(|_| {}),
        ..WorkerConfig::default()
    }
}

/// Start request helper.
pub fn start_req(workflow_type: &str, module: &str, input: &str, id: &str) -> StartRequest {
    StartRequest {
        alias: None,
        workflow_type: workflow_type.into(),
        module: module.into(),
        input_json: input.into(),
        id: Some(id.into()),
    }
}

/// Waits (bounded) until `cond` holds, checking every few milliseconds.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the real `pinion` binary on `db` with `args`.
pub fn pinion(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinion"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("run pinion")
}

/// The lifecycle events published for instance `id`, as `type` names, oldest first.
pub fn transitions(p: &Pinion, id: &str) -> Vec<&'static str> {
    use pinion_runtime::store::EventFilter;
    p.store()
        .lifecycle_events(&EventFilter {
            instance_id: Some(pinion_runtime::InstanceId(id.into())),
            limit: 1000,
            ..EventFilter::default()
        })
        .expect("read lifecycle events")
        .iter()
        .map(|e| e.transition.name())
        .collect()
}

/// The orders example's payment service (`examples/orders/payment_service.py`), a real
/// process on loopback; killed on drop.
pub struct PaymentService {
    child: std::process::Child,
    pub url: String,
    pub key: String,
}

impl PaymentService {
    pub fn start() -> PaymentService {
        use std::io::BufRead;
        let key = format!("sk_test_{}", std::process::id());
        let mut child = Command::new("python3")
            .arg(root().join("examples/orders/payment_service.py"))
            .args(["--port", "0"])
            .env("PAY_API_KEY", &key)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the payment service (python3)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("payment service listening on ")
            .unwrap_or_else(|| panic!("payment service said {line:?}"))
            .to_string();
        PaymentService { child, url, key }
    }

    /// A `pinion.toml` (and its secrets file) in `dir` granting the orders module this
    /// service, its key and `dir/receipts`, as the demo does. Also sets `PAYMENT_URL` in
    /// this process's environment, where the grant reads it from.
    pub fn grants(&self, dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir.join("receipts")).unwrap();
        let secrets = dir.join("secrets.toml");
        std::fs::write(&secrets, format!("PAY_API_KEY = \"{}\"\n", self.key)).unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
        // SAFETY: tests that use the payment service all set the same value for it.
        unsafe { std::env::set_var("PAYMENT_URL", &self.url) };
        let config = dir.join("pinion.toml");
        std::fs::write(
            &config,
            format!(
                "secrets_file = \"secrets.toml\"\n\
                 [[grant]]\nmodules = [\"label:orders-v1\"]\nactivities = [\"charge_payment\"]\n\
                 http = [\"{}\"]\nenv = [\"PAYMENT_URL\"]\nsecrets = [\"PAY_API_KEY\"]\n\
                 [[grant]]\nmodules = [\"label:orders-v1\"]\nactivities = [\"write_receipt\"]\n\
                 dirs = [{{ host = \"receipts\", guest = \"/receipts\", mode = \"rw\" }}]\n",
                self.url
            ),
        )
        .unwrap();
        config
    }

    /// An engine on `dir`'s database with [`PaymentService::grants`].
    pub fn open(&self, dir: &TempDir) -> Pinion {
        let config = self.grants(dir.path());
        let mut pc = PinionConfig::new(dir.db());
        pc.grants = Arc::new(
            pinion_runtime::config::GrantSource::watch(&config, Box::new(|e| panic!("{e}")))
                .unwrap(),
        );
        Pinion::open(pc).unwrap()
    }
}

impl Drop for PaymentService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a file only its owner can read (mode 0600), as token and secret files must be.
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
