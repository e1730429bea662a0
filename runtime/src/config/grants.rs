//! Grants: parsing `pinion.toml`, matching an attempt to its grants, reloading on change.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::{ConfigError, UrlPattern};

/// The file as written. Unknown keys are errors: a misspelt `secret` must not silently
/// grant nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    secrets_file: Option<PathBuf>,
    #[serde(default)]
    grant: Vec<RawGrant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    modules: Vec<String>,
    activities: Option<Vec<String>>,
    #[serde(default)]
    http: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    dirs: Vec<RawDir>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDir {
    host: PathBuf,
    guest: String,
    #[serde(default)]
    mode: DirMode,
}

/// Read-only or read-write access to a granted directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DirMode {
    /// Read files and list directories only (the default).
    #[default]
    Ro,
    /// Also create, write, rename and remove.
    Rw,
}

/// A host directory an activity sees under a guest path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct DirGrant {
    /// The directory on the host (absolute, canonical).
    pub host: PathBuf,
    /// The path the activity opens it by.
    pub guest: String,
    /// Access.
    pub mode: DirMode,
}

/// How a grant names modules. A bare name matches an alias, a version label or a hash
/// prefix; `alias:`, `label:` and `module:` restrict it to one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSelector {
    /// Alias, version label or hash prefix.
    Any(String),
    /// Every module this alias points at, ramps to, or ever pointed at: instances pinned to
    /// an older version keep their capabilities after the alias moves on.
    Alias(String),
    /// Modules whose manifest declares this version label.
    Label(String),
    /// A module by full hash or hash prefix.
    Module(String),
}

impl ModuleSelector {
    fn parse(s: &str) -> Result<ModuleSelector, String> {
        let (kind, name) = match s.split_once(':') {
            Some((k, n)) => (Some(k), n),
            None => (None, s),
        };
        if name.is_empty() {
            return Err(format!("module selector {s:?} is empty"));
        }
        Ok(match kind {
            None => ModuleSelector::Any(name.into()),
            Some("alias") => ModuleSelector::Alias(name.into()),
            Some("label") => ModuleSelector::Label(name.into()),
            Some("module") => {
                if !name.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!(
                        "module selector {s:?}: a module is named by its SHA-256 hash or a prefix of it (hex digits)"
                    ));
                }
                ModuleSelector::Module(name.to_ascii_lowercase())
            }
            Some(k) => {
                return Err(format!(
                "module selector {s:?}: unknown kind `{k}:`; use alias:NAME, label:LABEL or module:HASH"
            ))
            }
        })
    }

    fn matches(&self, m: &ModuleFacts<'_>) -> bool {
        let hash = |p: &str| {
            p.len() >= 4 && p.chars().all(|c| c.is_ascii_hexdigit()) && m.hash.starts_with(p)
        };
        match self {
            ModuleSelector::Any(s) => {
                m.aliases.iter().any(|a| a == s) || m.label == Some(s.as_str()) || hash(s)
            }
            ModuleSelector::Alias(s) => m.aliases.iter().any(|a| a == s),
            ModuleSelector::Label(s) => m.label == Some(s.as_str()),
            ModuleSelector::Module(s) => hash(s),
        }
    }
}

/// What a grant is matched against: the module an attempt runs from.
#[derive(Debug, Clone, Copy)]
pub struct ModuleFacts<'a> {
    /// Full SHA-256 hex.
    pub hash: &'a str,
    /// The manifest's version label.
    pub label: Option<&'a str>,
    /// Aliases that point at, ramp to, or once pointed at the module.
    pub aliases: &'a [String],
}

/// A secret's value. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that needs it (the activity's environment).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Shortest secret accepted: values are redacted from results and logs by their text, and
/// a very short text would redact ordinary output.
const MIN_SECRET_LEN: usize = 4;

#[derive(Debug, Clone)]
struct Grant {
    modules: Vec<ModuleSelector>,
    activities: Option<Vec<String>>,
    http: Vec<UrlPattern>,
    /// Names and values, read from the server's environment when the file was loaded.
    env: Vec<(String, String)>,
    secrets: Vec<String>,
    dirs: Vec<DirGrant>,
}

/// The validated grants of one version of the configuration file.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    path: Option<PathBuf>,
    grants: Vec<Grant>,
    secrets: BTreeMap<String, Secret>,
}

/// What one activity attempt may reach: the union of every grant that matched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Capabilities {
    /// Allowed URL patterns.
    pub http: Vec<UrlPattern>,
    /// Environment variables (name, value) copied from the server's environment.
    pub env: Vec<(String, String)>,
    /// Secrets, also given to the activity as environment variables, and redacted by
    /// value from everything the attempt produces.
    pub secrets: Vec<(String, Secret)>,
    /// Preopened directories.
    pub dirs: Vec<DirGrant>,
    /// 1-based numbers of the grants that matched, for messages.
    pub grants: Vec<usize>,
}

impl Capabilities {
    /// Whether nothing at all is granted.
    pub fn is_empty(&self) -> bool {
        self.http.is_empty()
            && self.env.is_empty()
            && self.secrets.is_empty()
            && self.dirs.is_empty()
    }

    /// `text` with every secret value replaced by `[secret NAME]`: what an activity returns,
    /// logs or fails with goes through here before it is stored or printed.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (name, value) in &self.secrets {
            if out.contains(value.expose()) {
                out = out.replace(value.expose(), &format!("[secret {name}]"));
            }
        }
        out
    }

    /// [`Capabilities::redact`] for bytes; bytes that are not UTF-8 are redacted on their
    /// lossy decoding only when a secret occurs in them.
    pub fn redact_bytes(&self, bytes: Vec<u8>) -> Vec<u8> {
        let hit = self.secrets.iter().any(|(_, v)| {
            let v = v.expose().as_bytes();
            bytes.windows(v.len()).any(|w| w == v)
        });
        if !hit {
            return bytes;
        }
        self.redact(&String::from_utf8_lossy(&bytes)).into_bytes()
    }
}

fn io(path: &Path, e: impl fmt::Display) -> ConfigError {
    ConfigError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn valid_env_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(|c: char| c.is_ascii_digit())
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Grants {
    /// No grants: what runs when no configuration file is given.
    pub fn none() -> Grants {
        Grants::default()
    }

    /// Reads and validates `path` (and the secrets file it names).
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the grant and what to write instead.
    pub fn load(path: &Path) -> Result<Grants, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
        Grants::parse(path, &text)
    }

    /// Validates the text of a configuration file; relative paths in it are taken from
    /// `path`'s directory.
    ///
    /// # Errors
    /// As [`Grants::load`].
    pub fn parse(path: &Path, text: &str) -> Result<Grants, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.display().to_string(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let secrets = match &raw.secrets_file {
            Some(f) => read_secrets(&base.join(f))?,
            None => BTreeMap::new(),
        };
        let mut grants = Vec::new();
        let mut guest_dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (i, g) in raw.grant.into_iter().enumerate() {
            let n = i + 1;
            let at = |m: String| invalid(format!("grant {n}: {m}"));
            if g.modules.is_empty() {
                return Err(at(
                    "`modules` is empty; name the modules it is for (alias, version label or hash prefix)".into(),
                ));
            }
            let modules = g
                .modules
                .iter()
                .map(|s| ModuleSelector::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?;
            if let Some(a) = &g.activities {
                if a.is_empty() || a.iter().any(String::is_empty) {
                    return Err(at("`activities` lists no activity type; leave it out to grant every activity of the modules".into()));
                }
            }
            let http = g
                .http
                .iter()
                .map(|p| UrlPattern::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?;
            let mut env = Vec::new();
            for name in &g.env {
                if !valid_env_name(name) {
                    return Err(at(format!("{name:?} is not an environment variable name")));
                }
                let value = std::env::var(name).map_err(|_| {
                    at(format!(
                        "`env` passes {name} from the server's environment, but the server was started without it; set it, or remove it from the grant"
                    ))
                })?;
                env.push((name.clone(), value));
            }
            for name in &g.secrets {
                if !secrets.contains_key(name) {
                    return Err(at(match &raw.secrets_file {
                        Some(f) => format!("secret {name} is not in the secrets file {}", f.display()),
                        None => format!("secret {name} is granted, but no `secrets_file` is set; add secrets_file = \"FILE\" at the top"),
                    }));
                }
                if g.env.contains(name) {
                    return Err(at(format!(
                        "{name} is granted both as `env` and as a secret"
                    )));
                }
            }
            let mut dirs = Vec::new();
            for d in g.dirs {
                if !d.guest.starts_with('/') || d.guest.split('/').any(|s| s == "..") {
                    return Err(at(format!(
                        "guest path {:?} must be absolute without `..`, such as \"/receipts\"",
                        d.guest
                    )));
                }
                let host = base.join(&d.host);
                let host = host.canonicalize().map_err(|e| {
                    at(format!(
                        "directory {} cannot be granted: {e}; create it first",
                        host.display()
                    ))
                })?;
                if !host.is_dir() {
                    return Err(at(format!("{} is not a directory", host.display())));
                }
                let guest = d.guest.trim_end_matches('/').to_string();
                let guest = if guest.is_empty() { "/".into() } else { guest };
                if let Some(other) = guest_dirs.insert(guest.clone(), host.clone()) {
                    if other != host {
                        return Err(at(format!(
                            "guest path {guest} names {} here and {} in another grant; one guest path, one directory",
                            host.display(),
                            other.display()
                        )));
                    }
                }
                dirs.push(DirGrant {
                    host,
                    guest,
                    mode: d.mode,
                });
            }
            grants.push(Grant {
                modules,
                activities: g.activities,
                http,
                env,
                secrets: g.secrets,
                dirs,
            });
        }
        Ok(Grants {
            path: Some(path.to_path_buf()),
            grants,
            secrets,
        })
    }

    /// Whether no grant at all is configured.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The configuration file these grants came from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What an attempt of `activity_type` from module `m` may reach.
    pub fn for_activity(&self, m: &ModuleFacts<'_>, activity_type: &str) -> Capabilities {
        let mut caps = Capabilities::default();
        for (i, g) in self.grants.iter().enumerate() {
            let module_ok = g.modules.iter().any(|s| s.matches(m));
            let activity_ok = g
                .activities
                .as_ref()
                .is_none_or(|a| a.iter().any(|t| t == activity_type));
            if module_ok && activity_ok {
                caps.grants.push(i + 1);
                merge(&mut caps, g, &self.secrets);
            }
        }
        caps
    }

    /// What a module may reach, activity type by activity type, for `pinion modules`:
    /// `(activity type or "*" for grants without `activities`, capabilities)`.
    pub fn for_module(
        &self,
        m: &ModuleFacts<'_>,
        activities: &[String],
    ) -> Vec<(String, Capabilities)> {
        activities
            .iter()
            .map(|a| (a.clone(), self.for_activity(m, a)))
            .filter(|(_, c)| !c.grants.is_empty())
            .collect()
    }
}

fn merge(caps: &mut Capabilities, g: &Grant, secrets: &BTreeMap<String, Secret>) {
    for p in &g.http {
        if !caps.http.contains(p) {
            caps.http.push(p.clone());
        }
    }
    for (k, v) in &g.env {
        if !caps.env.iter().any(|(n, _)| n == k) {
            caps.env.push((k.clone(), v.clone()));
        }
    }
    for name in &g.secrets {
        if !caps.secrets.iter().any(|(n, _)| n == name) {
            caps.secrets.push((name.clone(), secrets[name].clone()));
        }
    }
    for d in &g.dirs {
        match caps.dirs.iter_mut().find(|x| x.guest == d.guest) {
            Some(x) if d.mode == DirMode::Rw => x.mode = DirMode::Rw,
            Some(_) => {}
            None => caps.dirs.push(d.clone()),
        }
    }
}

fn read_secrets(path: &Path) -> Result<BTreeMap<String, Secret>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    if let Some(mode) = super::shared_mode(path).map_err(|e| io(path, e))? {
        return Err(invalid(format!(
            "the secrets file has mode {mode:04o}; it must be readable by its owner only: chmod 600 {}",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    let table: BTreeMap<String, String> = toml::from_str(&text).map_err(|e| {
        // The parser quotes the offending line, which may hold a secret: say only where.
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
            .unwrap_or(0);
        invalid(format!(
            "not a table of NAME = \"value\" lines (near line {line})"
        ))
    })?;
    let mut out = BTreeMap::new();
    for (name, value) in table {
        if !valid_env_name(&name) {
            return Err(invalid(format!(
                "{name:?} is not an environment variable name"
            )));
        }
        if value.len() < MIN_SECRET_LEN {
            return Err(invalid(format!(
                "secret {name} is shorter than {MIN_SECRET_LEN} bytes; secrets are redacted from results and logs by their value, which that would make useless"
            )));
        }
        out.insert(name, Secret(value));
    }
    Ok(out)
}

/// Fingerprint of a file's identity and contents' last change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(u64, u64, i64, i64)>);

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp(
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec())),
    )
}

/// The grants in force, re-read when the configuration file or its secrets file changes.
///
/// A file that stops validating keeps the last good grants in force and is reported once
/// per change through the `report` callback.
pub struct GrantSource {
    path: Option<PathBuf>,
    state: Mutex<(Vec<Stamp>, Arc<Grants>)>,
    report: Box<dyn Fn(&ConfigError) + Send + Sync>,
}

impl GrantSource {
    /// Grants that never change (tests, or no configuration file).
    pub fn fixed(grants: Grants) -> GrantSource {
        GrantSource {
            path: None,
            state: Mutex::new((Vec::new(), Arc::new(grants))),
            report: Box::new(|_| {}),
        }
    }

    /// Loads `path` now (an invalid file is an error here) and watches it afterwards.
    ///
    /// # Errors
    /// As [`Grants::load`].
    pub fn watch(
        path: &Path,
        report: Box<dyn Fn(&ConfigError) + Send + Sync>,
    ) -> Result<GrantSource, ConfigError> {
        let grants = Grants::load(path)?;
        let stamps = stamps(path);
        Ok(GrantSource {
            path: Some(path.to_path_buf()),
            state: Mutex::new((stamps, Arc::new(grants))),
            report,
        })
    }

    /// The grants in force now, re-read first if a file changed.
    pub fn current(&self) -> Arc<Grants> {
        let mut state = self.state.lock().expect("grants lock");
        if let Some(path) = &self.path {
            let now = stamps(path);
            if now != state.0 {
                state.0 = now;
                match Grants::load(path) {
                    Ok(g) => {
                        state.0 = stamps(path);
                        state.1 = Arc::new(g);
                    }
                    Err(e) => (self.report)(&e),
                }
            }
        }
        state.1.clone()
    }
}

fn stamps(path: &Path) -> Vec<Stamp> {
    let mut v = vec![stamp(path)];
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(raw) = toml::from_str::<RawConfig>(&text) {
            if let Some(f) = raw.secrets_file {
                let base = path.parent().filter(|p| !p.as_os_str().is_empty());
                v.push(stamp(&base.unwrap_or(Path::new(".")).join(f)));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(hash: &'a str, label: Option<&'a str>, aliases: &'a [String]) -> ModuleFacts<'a> {
        ModuleFacts {
            hash,
            label,
            aliases,
        }
    }

    fn parse(text: &str) -> Result<Grants, ConfigError> {
        Grants::parse(Path::new("/nonexistent/pinion.toml"), text)
    }

    #[test]
    fn nothing_is_granted_by_default() {
        let g = parse("").unwrap();
        let caps = g.for_activity(&facts("abcdef", None, &[]), "pay");
        assert!(caps.is_empty() && caps.grants.is_empty());
    }

    #[test]
    fn grants_match_by_alias_label_or_hash_prefix_and_by_activity_type() {
        let g = parse(
            r#"
            [[grant]]
            modules = ["orders"]
            http = ["http://127.0.0.1:8080"]
            [[grant]]
            modules = ["label:v2", "module:abcd12"]
            activities = ["pay"]
            http = ["https://pay.example"]
            "#,
        )
        .unwrap();
        let aliases = vec!["orders".to_string()];
        let c = g.for_activity(&facts("ffff00", None, &aliases), "pay");
        assert_eq!(c.grants, vec![1]);
        let c = g.for_activity(&facts("abcd1234", Some("v2"), &[]), "pay");
        assert_eq!(c.grants, vec![2]);
        let c = g.for_activity(&facts("abcd1234", Some("v2"), &[]), "email");
        assert!(c.grants.is_empty(), "grant 2 is for `pay` only");
        let c = g.for_activity(&facts("9999", Some("v2"), &aliases), "pay");
        assert_eq!(c.grants, vec![1, 2]);
        assert_eq!(c.http.len(), 2);
        // A bare selector that is not an alias or label matches a hash prefix, but only
        // one of at least four hex digits.
        let g = parse("[[grant]]\nmodules = [\"abc\"]\n").unwrap();
        assert!(g
            .for_activity(&facts("abcdef", None, &[]), "x")
            .grants
            .is_empty());
    }

    #[test]
    fn mistakes_are_refused_with_the_grant_number() {
        for (text, says) in [
            ("[[grant]]\nmodules = []\n", "grant 1: `modules` is empty"),
            ("[[grant]]\nmodules = [\"x\"]\nsecret = [\"A\"]\n", "unknown field `secret`"),
            ("[[grant]]\nmodules = [\"x\"]\nhttp = [\"ftp://h\"]\n", "grant 1: HTTP grant"),
            ("[[grant]]\nmodules = [\"x\"]\nenv = [\"PINION_SURELY_UNSET_1\"]\n", "started without it"),
            ("[[grant]]\nmodules = [\"x\"]\nsecrets = [\"TOKEN\"]\n", "no `secrets_file` is set"),
            ("[[grant]]\nmodules = [\"wat:x\"]\n", "unknown kind `wat:`"),
            ("[[grant]]\nmodules = [\"x\"]\ndirs = [{ host = \"/\", guest = \"rel\" }]\n", "must be absolute"),
            ("[[grant]]\nmodules = [\"x\"]\ndirs = [{ host = \"/surely/not/here\", guest = \"/d\" }]\n", "create it first"),
            ("[[grant]]\nmodules = [\"x\"]\ndirs = [{ host = \"/\", guest = \"/d\", mode = \"rwx\" }]\n", "unknown variant `rwx`"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}\n=> {e}");
        }
    }

    #[test]
    fn secrets_need_mode_0600_and_are_redacted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pinion-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secrets.toml");
        std::fs::write(&file, "PAY_API_TOKEN = \"sk_live_abcdef\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let config = "secrets_file = \"secrets.toml\"\n[[grant]]\nmodules = [\"orders\"]\nsecrets = [\"PAY_API_TOKEN\"]\n";
        let path = dir.join("pinion.toml");
        let e = Grants::parse(&path, config).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let g = Grants::parse(&path, config).unwrap();
        let aliases = vec!["orders".to_string()];
        let c = g.for_activity(&facts("00", None, &aliases), "pay");
        assert_eq!(c.secrets.len(), 1);
        assert_eq!(c.secrets[0].1.expose(), "sk_live_abcdef");
        assert_eq!(
            c.redact("token sk_live_abcdef leaked"),
            "token [secret PAY_API_TOKEN] leaked"
        );
        assert!(
            !format!("{c:?}").contains("sk_live_abcdef"),
            "Debug must not show secrets"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
