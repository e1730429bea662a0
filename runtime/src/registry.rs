//! Modules by content hash: validation at deploy, lookup by hash or prefix, and the
//! compiled-code cache.
//!
//! A module's identity is the SHA-256 of its bytes, so deploying the same bytes twice is a
//! no-op and an instance's pinned hash always means exactly one program. Validation happens
//! before anything is stored: the bytes compile, link against pinion's WASI, export the ABI,
//! and declare a well-formed manifest; a module that fails any check leaves no row behind.
//!
//! Compiled machine code is cached twice: in memory (an `Arc<LoadedModule>` per hash) and on
//! disk under `<cache dir>/<hash>.<engine fingerprint>.cwasm`, so a restarted server does not
//! recompile and a wasmtime upgrade (new fingerprint) never loads stale code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pinion_abi::Manifest;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::history::ModuleHash;
use crate::sandbox::{LoadedModule, Sandbox, SandboxError};
use crate::store::{ModuleRecord, Store, StoreError};

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The module failed validation; nothing was stored.
    #[error(transparent)]
    Invalid(#[from] SandboxError),
    /// The manifest is malformed.
    #[error("module manifest is invalid: {0}")]
    BadManifest(String),
    /// No module has this hash or hash prefix.
    #[error("no deployed module matches `{0}`; `pinion modules` lists them")]
    UnknownModule(String),
    /// A hash prefix shorter than [`MIN_PREFIX`]: a handful of characters matches by
    /// accident, and what it matches changes as modules are deployed.
    #[error("module prefix `{0}` is too short: give at least {MIN_PREFIX} characters of the hash (`pinion modules` lists them)")]
    PrefixTooShort(String),
    /// The prefix matches several modules.
    #[error("module prefix `{prefix}` is ambiguous: it matches {}; give more characters", matches.join(", "))]
    AmbiguousModule {
        /// The prefix given.
        prefix: String,
        /// The hashes it matches.
        matches: Vec<String>,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The fewest characters of a hash that [`Registry::resolve`] accepts as a prefix.
pub const MIN_PREFIX: usize = 4;

/// Where a new instance's module comes from: a hash (or unique prefix), or an alias, which
/// names (or ramps to) a module per instance id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleTarget<'a> {
    /// A module hash or unique prefix.
    Module(&'a str),
    /// An alias.
    Alias(&'a str),
}

/// Why a new instance cannot start on the module it asks for.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The alias does not exist.
    #[error("no alias named `{0}`; `pinion alias list` shows them")]
    UnknownAlias(String),
    /// The module does not export the workflow type.
    #[error("module {module} has no workflow type `{workflow_type}`; it exports: {}", available.join(", "))]
    UnknownWorkflowType {
        /// The module (short hash).
        module: String,
        /// What was asked for.
        workflow_type: String,
        /// What it exports.
        available: Vec<String>,
    },
    /// The module cannot be found, or storage failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The result of a deploy.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The module's hash.
    pub hash: ModuleHash,
    /// Its manifest.
    pub manifest: Manifest,
    /// Size in bytes.
    pub size: u64,
    /// False when the same bytes were already deployed.
    pub newly_stored: bool,
}

/// Modules by hash.
pub struct Registry {
    store: Arc<dyn Store>,
    sandbox: Arc<Sandbox>,
    clock: Arc<dyn Clock>,
    cache_dir: Option<PathBuf>,
    loaded: Mutex<HashMap<ModuleHash, Arc<LoadedModule>>>,
    facts: Mutex<HashMap<ModuleHash, (u64, Arc<ModuleFactsOwned>)>>,
}

/// How long the facts grants are matched against (label, aliases) are cached: an alias
/// set or ramped is seen by grants within this time.
const FACTS_TTL_MS: u64 = 1_000;

/// A module's identity as grants see it: hash, version label, and the aliases that point
/// at it now or ever did.
#[derive(Debug, Clone)]
pub struct ModuleFactsOwned {
    /// The hash.
    pub hash: ModuleHash,
    /// The manifest's version label.
    pub label: Option<String>,
    /// Aliases, sorted.
    pub aliases: Vec<String>,
}

impl ModuleFactsOwned {
    /// Borrowed, for [`crate::config::Grants::for_activity`].
    pub fn as_facts(&self) -> crate::config::ModuleFacts<'_> {
        crate::config::ModuleFacts {
            hash: &self.hash.0,
            label: self.label.as_deref(),
            aliases: &self.aliases,
        }
    }
}

/// SHA-256 of `bytes`, as lower-case hex.
pub fn hash_bytes(bytes: &[u8]) -> ModuleHash {
    ModuleHash(hex::encode(Sha256::digest(bytes)))
}

fn check_manifest(m: &Manifest) -> Result<(), RegistryError> {
    if m.workflows.is_empty() {
        return Err(RegistryError::BadManifest(
            "it declares no workflow types".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for name in m
        .workflows
        .iter()
        .map(|w| ("workflow", w))
        .chain(m.activities.iter().map(|a| ("activity", a)))
    {
        if name.1.trim().is_empty() {
            return Err(RegistryError::BadManifest(format!(
                "it declares a {} with an empty name",
                name.0
            )));
        }
        if !seen.insert(name) {
            return Err(RegistryError::BadManifest(format!(
                "it declares {} `{}` twice",
                name.0, name.1
            )));
        }
    }
    Ok(())
}

impl Registry {
    /// A registry over `store`, caching compiled code in `cache_dir` when given.
    pub fn new(
        store: Arc<dyn Store>,
        sandbox: Arc<Sandbox>,
        clock: Arc<dyn Clock>,
        cache_dir: Option<PathBuf>,
    ) -> Registry {
        if let Some(dir) = &cache_dir {
            remove_abandoned_cache_files(dir);
        }
        Registry {
            store,
            sandbox,
            clock,
            cache_dir,
            loaded: Mutex::new(HashMap::new()),
            facts: Mutex::new(HashMap::new()),
        }
    }

    /// What grants are matched against for module `hash` (cached for about a second).
    ///
    /// # Errors
    /// [`RegistryError::UnknownModule`], or a storage error.
    pub fn facts(&self, hash: &ModuleHash) -> Result<Arc<ModuleFactsOwned>, RegistryError> {
        let now = self.clock.now_ms();
        if let Some((at, f)) = self.facts.lock().expect("facts lock").get(hash) {
            if now.saturating_sub(*at) < FACTS_TTL_MS {
                return Ok(f.clone());
            }
        }
        let record = self
            .store
            .get_module(hash)?
            .ok_or_else(|| RegistryError::UnknownModule(hash.0.clone()))?;
        let facts = Arc::new(ModuleFactsOwned {
            hash: hash.clone(),
            label: record.manifest.version_label,
            aliases: self.store.aliases_of_module(hash)?,
        });
        self.facts
            .lock()
            .expect("facts lock")
            .insert(hash.clone(), (now, facts.clone()));
        Ok(facts)
    }

    /// Compiles, links and reads the manifest of `bytes`, without storing anything.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] or [`RegistryError::BadManifest`], naming the problem.
    pub fn validate(
        &self,
        bytes: &[u8],
    ) -> Result<(ModuleHash, Manifest, LoadedModule), RegistryError> {
        let hash = hash_bytes(bytes);
        // Bytes already compiled (deployed before, or a replay candidate seen before) are
        // not compiled again: the hash names the exact bytes.
        let in_memory = self
            .loaded
            .lock()
            .expect("registry lock")
            .get(&hash)
            .map(|m| LoadedModule::clone(m));
        // The disk cache is read, not written here: bytes that are only replayed against
        // (never stored) must not leave compiled files behind; `store_validated` writes it.
        let loaded = match in_memory
            .or_else(|| read_cache(&self.sandbox, self.cache_dir.as_deref(), &hash))
        {
            Some(l) => l,
            None => self.sandbox.load(self.sandbox.compile(bytes)?)?,
        };
        let manifest = self.sandbox.read_manifest(&loaded)?;
        check_manifest(&manifest)?;
        Ok((hash, manifest, loaded))
    }

    /// Validates and stores a module. Deploying the same bytes again returns the same hash.
    ///
    /// # Errors
    /// Validation errors (nothing stored) and storage errors.
    pub fn deploy(&self, bytes: &[u8]) -> Result<Deployed, RegistryError> {
        let validated = self.validate(bytes)?;
        self.store_validated(bytes, validated)
    }

    /// Stores a module [`Registry::validate`] accepted (so callers that check more before
    /// storing do not compile twice).
    ///
    /// # Errors
    /// Storage errors.
    pub fn store_validated(
        &self,
        bytes: &[u8],
        (hash, manifest, loaded): (ModuleHash, Manifest, LoadedModule),
    ) -> Result<Deployed, RegistryError> {
        let newly_stored = self
            .store
            .put_module(&hash, bytes, &manifest, self.clock.now_ms())?;
        write_cache(&self.sandbox, self.cache_dir.as_deref(), &hash, &loaded);
        self.loaded
            .lock()
            .expect("registry lock")
            .insert(hash.clone(), Arc::new(loaded));
        Ok(Deployed {
            hash,
            manifest,
            size: bytes.len() as u64,
            newly_stored,
        })
    }

    /// The module a new instance `id` of `workflow_type` starts on: `target` resolved (an
    /// alias per instance id, so a ramp sends a retried start to the same module), and
    /// checked to export the workflow type. `pinion start`, child workflows and
    /// continue-as-new all start instances through this.
    ///
    /// # Errors
    /// [`TargetError`].
    pub fn resolve_target(
        &self,
        target: ModuleTarget<'_>,
        id: &str,
        workflow_type: &str,
    ) -> Result<ModuleRecord, TargetError> {
        let module = match target {
            ModuleTarget::Module(spec) => self.resolve(spec)?,
            ModuleTarget::Alias(name) => {
                let alias = self
                    .store
                    .get_alias(name)
                    .map_err(RegistryError::from)?
                    .ok_or_else(|| TargetError::UnknownAlias(name.to_owned()))?;
                self.resolve(&alias.module_for(id).0)?
            }
        };
        if !module.manifest.workflows.iter().any(|w| w == workflow_type) {
            return Err(TargetError::UnknownWorkflowType {
                module: module.hash.short().to_owned(),
                workflow_type: workflow_type.to_owned(),
                available: module.manifest.workflows.clone(),
            });
        }
        Ok(module)
    }

    /// Finds a module by full hash or unique prefix of at least [`MIN_PREFIX`] characters.
    ///
    /// # Errors
    /// [`RegistryError::UnknownModule`], [`RegistryError::PrefixTooShort`] or
    /// [`RegistryError::AmbiguousModule`].
    pub fn resolve(&self, hash_or_prefix: &str) -> Result<ModuleRecord, RegistryError> {
        let wanted = hash_or_prefix.trim().to_ascii_lowercase();
        if wanted.is_empty() {
            return Err(RegistryError::UnknownModule(hash_or_prefix.into()));
        }
        if wanted.len() == 64 {
            if let Some(m) = self.store.get_module(&ModuleHash(wanted.clone()))? {
                return Ok(m);
            }
            return Err(RegistryError::UnknownModule(wanted));
        }
        if wanted.chars().count() < MIN_PREFIX {
            return Err(RegistryError::PrefixTooShort(wanted));
        }
        let mut matches: Vec<ModuleRecord> = self
            .store
            .list_modules()?
            .into_iter()
            .filter(|m| m.hash.0.starts_with(&wanted))
            .collect();
        match matches.len() {
            0 => Err(RegistryError::UnknownModule(wanted)),
            1 => Ok(matches.remove(0)),
            _ => Err(RegistryError::AmbiguousModule {
                prefix: wanted,
                matches: matches.into_iter().map(|m| m.hash.0).collect(),
            }),
        }
    }

    /// The compiled module for `hash`: from memory, else the disk cache, else compiled from
    /// the stored bytes (and cached).
    ///
    /// # Errors
    /// [`RegistryError::UnknownModule`] when no such module is stored.
    pub fn load(&self, hash: &ModuleHash) -> Result<Arc<LoadedModule>, RegistryError> {
        if let Some(m) = self.loaded.lock().expect("registry lock").get(hash) {
            return Ok(m.clone());
        }
        let loaded = load_cached(&self.sandbox, self.cache_dir.as_deref(), hash, || {
            self.store
                .module_bytes(hash)?
                .map(std::borrow::Cow::Owned)
                .ok_or_else(|| RegistryError::UnknownModule(hash.0.clone()))
        })?;
        let loaded = Arc::new(loaded);
        self.loaded
            .lock()
            .expect("registry lock")
            .insert(hash.clone(), loaded.clone());
        Ok(loaded)
    }

    /// Drops a (deleted) module from the memory and disk caches.
    pub fn forget(&self, hash: &ModuleHash) {
        self.loaded.lock().expect("registry lock").remove(hash);
        if let Some(path) = self.cache_path(hash) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Loads a module from bytes that are not (necessarily) stored, e.g. a replay candidate.
    ///
    /// # Errors
    /// Validation errors.
    pub fn load_unstored(
        &self,
        bytes: &[u8],
    ) -> Result<(ModuleHash, Manifest, Arc<LoadedModule>), RegistryError> {
        let (hash, manifest, loaded) = self.validate(bytes)?;
        Ok((hash, manifest, Arc::new(loaded)))
    }
    fn cache_path(&self, hash: &ModuleHash) -> Option<PathBuf> {
        cache_path(&self.sandbox, self.cache_dir.as_deref(), hash)
    }
}

fn cache_path(sandbox: &Sandbox, dir: Option<&Path>, hash: &ModuleHash) -> Option<PathBuf> {
    dir.map(|d| d.join(format!("{}.{}.cwasm", hash.0, sandbox.fingerprint())))
}

/// Loads module `hash` from the compile cache in `dir`, else compiles `bytes()` and writes
/// the cache. Shared by the registry and the runtime upgrade check
/// ([`crate::engine::preflight`]), so the check's compiles are not done twice.
///
/// # Errors
/// What `bytes` returns, or a module that no longer compiles or links.
pub(crate) fn load_cached<'b>(
    sandbox: &Sandbox,
    dir: Option<&Path>,
    hash: &ModuleHash,
    bytes: impl FnOnce() -> Result<std::borrow::Cow<'b, [u8]>, RegistryError>,
) -> Result<LoadedModule, RegistryError> {
    if let Some(l) = read_cache(sandbox, dir, hash) {
        return Ok(l);
    }
    let module = sandbox.compile(&bytes()?)?;
    let loaded = sandbox.load(module)?;
    write_cache(sandbox, dir, hash, &loaded);
    Ok(loaded)
}

/// Whether the compile cache in `dir` may be trusted: compiled code found there is run as
/// is, so it must be a directory of this user's that nobody else can write to. Created
/// (mode 0700) when missing. A directory that fails the check is not used (modules are
/// compiled every time) and the reason is reported once.
#[cfg(unix)]
fn cache_dir_trusted(dir: &Path) -> bool {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    use std::sync::OnceLock;
    static REPORTED: OnceLock<()> = OnceLock::new();
    if !dir.exists() {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
    }
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    // SAFETY: geteuid cannot fail and has no preconditions.
    let me = unsafe { libc::geteuid() };
    let problem = if !meta.is_dir() {
        Some("it is not a directory")
    } else if meta.uid() != me {
        Some("it belongs to another user")
    } else if meta.mode() & 0o022 != 0 {
        Some("others can write to it")
    } else {
        None
    };
    if let Some(problem) = problem {
        if REPORTED.set(()).is_ok() {
            tracing::warn!(
                "not using the compile cache {}: {problem} (compiled code there would be run as is); make it a directory of yours with mode 0700, or remove it",
                dir.display()
            );
        }
        return false;
    }
    true
}

#[cfg(not(unix))]
fn cache_dir_trusted(dir: &Path) -> bool {
    std::fs::create_dir_all(dir).is_ok()
}

/// Removes the temporary files of cache writes whose process is gone (a `pinion deploy`
/// killed while writing leaves `<hash>.<fingerprint>.tmp<pid>` behind).
fn remove_abandoned_cache_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.rsplit_once(".tmp"))
            .and_then(|(_, pid)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if pid > 0 && !process_alive(pid) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(unix)]
fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_alive(_pid: i32) -> bool {
    true
}

fn read_cache(sandbox: &Sandbox, dir: Option<&Path>, hash: &ModuleHash) -> Option<LoadedModule> {
    if !cache_dir_trusted(dir?) {
        return None;
    }
    let path = cache_path(sandbox, dir, hash)?;
    if !path.exists() {
        return None;
    }
    // SAFETY: the file was written by `Module::serialize` of an engine with the same
    // fingerprint, in a directory pinion owns; wasmtime re-checks compatibility and we
    // fall back to compiling on any error.
    let module = unsafe { wasmtime::Module::deserialize_file(sandbox.engine(), &path) }.ok()?;
    sandbox.load(module).ok()
}

fn write_cache(sandbox: &Sandbox, dir: Option<&Path>, hash: &ModuleHash, loaded: &LoadedModule) {
    // The cache is an optimisation: failing to write it must not fail a deploy.
    let Some(path) = cache_path(sandbox, dir, hash) else {
        return;
    };
    if path.exists() || !dir.is_some_and(cache_dir_trusted) {
        return;
    }
    let Ok(bytes) = loaded.module().serialize() else {
        return;
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes));
    if written.is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
}
