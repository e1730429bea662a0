//! `pinion new PATH`: a workflow crate that builds for wasm32-wasip1 and tests with the
//! harness out of the box. The files are the templates in `new/`, with three placeholders:
//! `{{crate}}` (the package name, PATH's last component), `{{lib}}` (its Rust name) and
//! `{{sdk}}` (the absolute path of the `pinion-sdk` directory).
//!
//! The SDK is a path dependency: the network may reach only crates.io and pinion's SDK is
//! not published there, and a path works from anywhere on this machine. By default it is
//! the SDK this binary was built from (`cargo install --path runtime` leaves the source
//! where it is); `--sdk-path` (or `$PINION_SDK_PATH`) picks another checkout.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{print::print_json, usage, Failure};

const CARGO_TOML: &str = include_str!("new/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("new/lib.rs.tmpl");
const WORKFLOW_TEST: &str = include_str!("new/workflow_test.rs.tmpl");
const GITIGNORE: &str = include_str!("new/gitignore.tmpl");

/// The SDK directory of the source tree this binary was built from.
const BUILT_FROM_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk");

/// Creates the crate; prints where and what to do next.
pub fn new_crate(path: &Path, sdk_path: Option<&Path>, json: bool) -> Result<i32, Failure> {
    let name = crate_name(path)?;
    let sdk = sdk_dir(sdk_path)?;
    if path.exists() {
        let non_empty = match std::fs::read_dir(path) {
            Ok(mut entries) => entries.next().is_some(),
            Err(_) => true, // a file, or unreadable: not ours to fill
        };
        if non_empty {
            return Err(usage(format!(
                "{} already exists and is not an empty directory; pinion new never overwrites: choose another path",
                path.display()
            )));
        }
    }
    let lib = name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("{{crate}}", &name)
            .replace("{{lib}}", &lib)
            .replace("{{sdk}}", &sdk.display().to_string())
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("tests/workflow.rs", fill(WORKFLOW_TEST)),
        (".gitignore", fill(GITIGNORE)),
    ];
    for (file, text) in &files {
        let target = path.join(file);
        let write = || -> std::io::Result<()> {
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&target, text)
        };
        write().map_err(|e| Failure {
            code: 1,
            error: anyhow::anyhow!("writing {}: {e}", target.display()),
        })?;
    }
    let wasm = format!("target/wasm32-wasip1/release/{lib}.wasm");
    if json {
        print_json(&json!({
            "path": path.display().to_string(),
            "crate": name,
            "sdk_path": sdk.display().to_string(),
            "files": files.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            "workflow_types": ["Greet"],
            "activities": ["greet"],
            "wasm": wasm,
        }));
    } else {
        println!(
            "created {name} in {} (workflow Greet, activity greet; pinion-sdk from {})",
            path.display(),
            sdk.display()
        );
        println!("next:");
        println!("  cd {}", path.display());
        println!("  cargo test                                     # the harness: timers skipped");
        println!(
            "  cargo build --release --target wasm32-wasip1   # rustup target add wasm32-wasip1"
        );
        println!("  pinion run {wasm} Greet --input '{{\"name\": \"Ada\"}}'");
        println!(
            "  pinion dev                                     # rebuild, deploy and replay on save"
        );
    }
    Ok(0)
}

/// The package name: PATH's last component, as cargo accepts it.
fn crate_name(path: &Path) -> Result<String, Failure> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        usage(format!(
            "{}: no directory name to call the crate",
            path.display()
        ))
    })?;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid || ["test", "core", "std", "alloc", "proc_macro", "self"].contains(&name) {
        return Err(usage(format!(
            "\"{name}\" cannot be a crate name: use a letter, then letters, digits, '-' or '_' (and not a name Rust reserves)"
        )));
    }
    Ok(name.to_owned())
}

/// The absolute `pinion-sdk` directory, checked.
fn sdk_dir(given: Option<&Path>) -> Result<PathBuf, Failure> {
    let (dir, from) = match given {
        Some(p) => (p.to_path_buf(), "--sdk-path"),
        None => (
            PathBuf::from(BUILT_FROM_SDK),
            "the source tree this pinion was built from",
        ),
    };
    let bad = |why: String| {
        Failure {
        code: 4,
        error: anyhow::anyhow!(
            "{} ({from}) is not a pinion-sdk directory: {why}; give --sdk-path DIR (the guest-sdk directory of a pinion checkout)",
            dir.display()
        ),
    }
    };
    let dir = dir.canonicalize().map_err(|e| bad(e.to_string()))?;
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))
        .map_err(|e| bad(format!("Cargo.toml: {e}")))?;
    if !manifest.contains("name = \"pinion-sdk\"") {
        return Err(bad("its Cargo.toml is not the pinion-sdk package".into()));
    }
    if !dir.join("testing").join("Cargo.toml").exists() {
        return Err(bad("it has no testing/ (pinion-testing) beside it".into()));
    }
    Ok(dir)
}
