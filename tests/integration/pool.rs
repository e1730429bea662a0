//! Pooled activity slots (`sandbox::pool`): a slot reused by the next attempt holds nothing
//! of the last one, and attempts beyond the slots still run.
//!
//! The modules are WAT (see `hostile::module`), run through the real sandbox.

use std::sync::Arc;
use std::time::Duration;

use pinion_abi::{ActivityInvocation, ActivityOutcome};
use pinion_runtime::config::Capabilities;
use pinion_runtime::sandbox::activity::{AttemptControl, AttemptRun};
use pinion_runtime::sandbox::{LoadedModule, Sandbox, SandboxLimits};

use crate::hostile::{module, pack};

fn sandbox(slots: u32) -> Sandbox {
    let sandbox = Sandbox::new(SandboxLimits {
        activity_pool_slots: slots,
        ..SandboxLimits::default()
    })
    .unwrap();
    assert!(sandbox.activity_pool_enabled(), "the pool was refused");
    sandbox
}

fn load(sandbox: &Sandbox, wasm: &[u8]) -> LoadedModule {
    sandbox.load(sandbox.compile(wasm).unwrap()).unwrap()
}

async fn attempt(sandbox: &Sandbox, loaded: &LoadedModule, n: u32) -> AttemptRun {
    let invocation = ActivityInvocation {
        activity_type: "A".into(),
        input: b"null".to_vec(),
        attempt: n,
        instance_id: format!("pool-{n}"),
        seq: 1,
        heartbeat_details: None,
    };
    sandbox
        .run_activity(
            loaded,
            "pool",
            &invocation,
            Duration::from_secs(30),
            Arc::new(Capabilities::default()),
            Arc::new(AttemptControl::new(None, |_| {})),
        )
        .await
}

fn outcome_len() -> usize {
    pinion_abi::encode(&ActivityOutcome::Completed(b"null".to_vec()))
        .unwrap()
        .len()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn an_activity_attempt_never_sees_memory_an_earlier_attempt_wrote() {
    // The activity traps if it finds anything an earlier attempt left: a word in bss, a
    // changed byte of a data segment (the manifest at 1024), or memory already grown past
    // the module's two initial pages. Then it leaves all three behind for the next one.
    let manifest_first = pinion_abi::encode(&pinion_abi::Manifest {
        abi_version: pinion_abi::ABI_VERSION,
        sdk_version: "hostile".into(),
        workflows: vec!["W".into()],
        activities: vec!["A".into()],
        version_label: None,
    })
    .unwrap()[0];
    let activity = format!(
        r#"i32.const 8192
    i32.load
    if unreachable end
    i32.const 1024
    i32.load8_u
    i32.const {manifest_first}
    i32.ne
    if unreachable end
    memory.size
    i32.const 2
    i32.ne
    if unreachable end
    i32.const 8192
    i32.const 0xdeadbeef
    i32.store
    i32.const 1024
    i32.const 0xff
    i32.store8
    i32.const 1
    memory.grow
    drop
    i32.const 131172
    i32.const 0x5eed
    i32.store
    i64.const {out}"#,
        out = pack(4096, outcome_len())
    );
    let wasm = module("", &activity, "", "");
    let sandbox = sandbox(1);
    let loaded = load(&sandbox, &wasm);
    let rt = runtime();
    for n in 1..=12 {
        let run = rt.block_on(attempt(&sandbox, &loaded, n));
        assert!(
            matches!(run.result, Ok(ActivityOutcome::Completed(_))),
            "attempt {n} saw an earlier attempt's memory: {:?}",
            run.result
        );
    }
}

#[test]
fn activity_attempts_beyond_the_pooled_slots_run_on_fresh_instances() {
    // Each attempt sleeps 200 ms in `poll_oneoff` (a monotonic clock subscription at
    // 16384), so four started together overlap and three find the only slot taken.
    let activity = format!(
        r#"i32.const 16392
    i32.const 0
    i32.store8
    i32.const 16400
    i32.const 1
    i32.store
    i32.const 16408
    i64.const 200000000
    i64.store
    i32.const 16384
    i32.const 16448
    i32.const 1
    i32.const 16512
    call $poll_oneoff
    if unreachable end
    i64.const {out}"#,
        out = pack(4096, outcome_len())
    );
    let imports = r#"(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))"#;
    let wasm = module(imports, &activity, "", "");
    let sandbox = sandbox(1);
    let loaded = load(&sandbox, &wasm);
    let runs = runtime().block_on(async {
        let (a, b, c, d) = tokio::join!(
            attempt(&sandbox, &loaded, 1),
            attempt(&sandbox, &loaded, 2),
            attempt(&sandbox, &loaded, 3),
            attempt(&sandbox, &loaded, 4),
        );
        [a, b, c, d]
    });
    for (i, run) in runs.iter().enumerate() {
        assert!(
            matches!(run.result, Ok(ActivityOutcome::Completed(_))),
            "attempt {} failed: {:?}",
            i + 1,
            run.result
        );
    }
}
