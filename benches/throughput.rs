//! Durable throughput of a 10-activity workflow with `synchronous=FULL`, at 1, 64 and 256
//! concurrent workflows, and the p50/p99 latency of one step.
//!
//! Run: `cargo bench -p pinion-runtime --bench throughput` (prints figures with units; it
//! asserts nothing). The same measurement is available as `pinion bench --module testkit.wasm`.

#[path = "guests.rs"]
mod guests;

use pinion_runtime::bench::{run, BenchConfig};
use pinion_runtime::store::sqlite::Synchronous;

fn main() {
    let root = guests::root();
    let module = guests::testkit_wasm();
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    println!("durable throughput, Steps workflow with 10 activities, synchronous=FULL");
    for (concurrency, workflows) in [(1, 50), (64, 1280), (256, 5120)] {
        let report = run(&BenchConfig {
            module: module.clone(),
            dir: dir.clone(),
            steps: 10,
            concurrency,
            workflows,
            synchronous: Synchronous::Full,
            workflow_threads: 2,
            eager_start: true,
            postgres: None,
            servers: 0,
        })
        .expect("benchmark run");
        println!("{report}");
    }
}
