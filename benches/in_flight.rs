//! Activities in flight and the cost of one activity attempt.
//!
//! 1. One attempt of testkit's `step` activity (fresh instance, wasmtime-wasi context,
//!    async call, teardown), 2,000 times in a row on one thread: microseconds per attempt.
//! 2. 2,000 `HttpSteps` workflows at once, each activity waiting 500 ms on an HTTP server
//!    on loopback that the benchmark starts, `synchronous=FULL`: completed activities per
//!    second, the peak number in flight and the peak RSS of the process.
//!
//! Run: `cargo bench -p pinion-runtime --bench in_flight` (prints figures with units;
//! asserts nothing). The second part is also `pinion bench --http-wait-ms 500
//! --concurrency 2000 --steps 5 --workflow-threads 8 --module testkit.wasm`.
#![allow(clippy::disallowed_methods)] // a benchmark measures real time

#[path = "guests.rs"]
mod guests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pinion_abi::ActivityInvocation;
use pinion_runtime::bench::{run_in_flight, InFlightConfig};
use pinion_runtime::config::Capabilities;
use pinion_runtime::sandbox::activity::AttemptControl;
use pinion_runtime::sandbox::{Sandbox, SandboxLimits};
use pinion_runtime::store::sqlite::Synchronous;

fn main() {
    let root = guests::root();
    let module = guests::testkit_wasm();
    let sandbox = Sandbox::new(SandboxLimits::default()).expect("sandbox");
    let loaded = sandbox
        .load(sandbox.compile(&std::fs::read(&module).unwrap()).unwrap())
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let caps = Arc::new(Capabilities::default());
    let attempts = 2_000;
    let start = Instant::now();
    rt.block_on(async {
        for i in 0..attempts {
            let invocation = ActivityInvocation {
                activity_type: "step".into(),
                input: i.to_string().into_bytes(),
                attempt: 1,
                instance_id: "bench".into(),
                seq: 1,
                heartbeat_details: None,
            };
            let run = sandbox
                .run_activity(
                    &loaded,
                    "bench",
                    &invocation,
                    Duration::from_secs(10),
                    caps.clone(),
                    Arc::new(AttemptControl::new(None, |_| {})),
                )
                .await;
            run.result.expect("attempt");
        }
    });
    let per = start.elapsed().as_secs_f64() * 1e6 / f64::from(attempts);
    println!(
        "activity attempt (instantiate, call, tear down), one thread: {per:.1} µs per attempt"
    );

    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let report = run_in_flight(&InFlightConfig {
        module,
        dir,
        workflows: 2_000,
        steps: 5,
        wait: Duration::from_millis(500),
        workflow_threads: 8,
        synchronous: Synchronous::Full,
    })
    .expect("in-flight run");
    println!("{report}");
}
