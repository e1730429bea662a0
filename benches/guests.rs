//! Shared by the benchmarks: builds the example guests (their own target dir, so this never
//! waits on the cargo running the bench) and locates files in the workspace.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runtime/ has a parent")
        .to_path_buf()
}

/// Builds the example guests and returns the path of `testkit.wasm`.
pub fn testkit_wasm() -> PathBuf {
    let target = root().join("target/wasm-guests");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip1",
            "--manifest-path",
        ])
        .arg(root().join("examples/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the example guests failed");
    target.join("wasm32-wasip1/release/testkit.wasm")
}
