//! What one wasm instance costs: an activity attempt (instantiate a fresh instance with its
//! WASI context, call, tear down) one after another on one thread, and the memory a live
//! workflow instance holds while it waits in the run cache.
//!
//! Run: `cargo bench -p pinion-runtime --bench instances`. Prints figures with units; asserts
//! nothing. Issue 12's targets are under 20 µs per attempt and under 256 KiB per cached
//! instance.
#![allow(clippy::disallowed_methods)] // a benchmark measures real time

#[path = "guests.rs"]
mod guests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pinion_abi::{ActivityInvocation, ActivityOutcome};
use pinion_runtime::config::Capabilities;
use pinion_runtime::executor::{Checks, WorkflowRun};
use pinion_runtime::sandbox::activity::AttemptControl;
use pinion_runtime::sandbox::{Sandbox, SandboxLimits};

/// The process's resident set, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let wasm = std::fs::read(guests::testkit_wasm()).expect("testkit.wasm");
    let sandbox = Sandbox::new(SandboxLimits::default()).expect("sandbox");
    let module = sandbox.compile(&wasm).expect("compile");
    let loaded = sandbox.load(module).expect("load");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Activity attempts, one after another: testkit's `step` (x -> x + 1).
    let caps = Arc::new(Capabilities::default());
    let attempt = |i: u64| {
        let invocation = ActivityInvocation {
            activity_type: "step".into(),
            input: i.to_string().into_bytes(),
            attempt: 1,
            instance_id: "bench".into(),
            seq: 1,
            heartbeat_details: None,
        };
        let run = rt.block_on(sandbox.run_activity(
            &loaded,
            "bench",
            &invocation,
            Duration::from_secs(10),
            caps.clone(),
            Arc::new(AttemptControl::new(None, |_| {})),
        ));
        match run.result {
            Ok(ActivityOutcome::Completed(out)) => {
                assert_eq!(out, (i + 1).to_string().into_bytes())
            }
            other => panic!("attempt failed: {other:?}"),
        }
    };
    for i in 0..1_000 {
        attempt(i);
    }
    let n = 20_000;
    let start = Instant::now();
    for i in 0..n {
        attempt(i);
    }
    let per = start.elapsed() / n as u32;
    println!("activity attempt (instantiate, WASI context, call, tear down), one thread: {:.1} µs ({n} attempts)", per.as_secs_f64() * 1e6);

    // Live workflow runs, as the run cache keeps them: each rebuilt from a `Steps` history
    // stopped halfway (5 of 10 activities done), so its instance has run real activations.
    let hash = pinion_runtime::registry::hash_bytes(&wasm);
    let mut history = guests::steps_history("half", 10, &hash).events;
    history.truncate(1 + 5 * 3);
    let n = 1_000;
    let before = rss_kib();
    let start = Instant::now();
    let live: Vec<_> = (0..n)
        .map(|i| {
            let id = pinion_runtime::InstanceId(format!("half-{i}"));
            WorkflowRun::rebuild(&sandbox, &loaded, &id, &history, Checks::default())
                .expect("rebuild")
                .0
        })
        .collect();
    let per = start.elapsed() / n as u32;
    let after = rss_kib();
    println!(
        "cached workflow run (5 activations replayed): {:.1} µs to rebuild, {} KiB resident each ({n} live)",
        per.as_secs_f64() * 1e6,
        after.saturating_sub(before) / n
    );
    drop(live);
}
