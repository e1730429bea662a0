//! `get_version`, `patched` and `deprecate_patch` driven the way the host drives them: one
//! test per row of the truth tables in `src/versioning.rs` (live, replay with the marker
//! delivered, replay without it), plus the cache, the options, marker jobs ahead of `Start`
//! and the jobs that contradict the code.

use pinion_sdk::__rt::Instance;
use pinion_sdk::abi::{Activation, ActivityResult, Command, Completion, Job};
use pinion_sdk::{VersionOption, WorkflowContext, WorkflowError, DEFAULT_VERSION};
use serde::Deserialize;
use serde_json::{json, Value};

// ---- The module under test ----

/// How `Version` calls `get_version`: `with` → `ExecuteWithVersion`, `min_version` →
/// `ExecuteWithMinVersion`, neither → no option.
#[derive(Deserialize)]
struct VersionArgs {
    min: i32,
    max: i32,
    #[serde(default)]
    with: Option<i32>,
    #[serde(default)]
    min_version: bool,
}

/// Asks for change "c" twice (the second call must come from the cache) and returns both.
async fn version(ctx: WorkflowContext, args: VersionArgs) -> Result<Value, WorkflowError> {
    let ask = || match (args.with, args.min_version) {
        (Some(v), _) => ctx.get_version_with(
            "c",
            args.min,
            args.max,
            VersionOption::ExecuteWithVersion(v),
        ),
        (None, true) => ctx.get_version_with(
            "c",
            args.min,
            args.max,
            VersionOption::ExecuteWithMinVersion,
        ),
        (None, false) => ctx.get_version("c", args.min, args.max),
    };
    let first = ask();
    let second = ask();
    Ok(json!([first, second]))
}

/// Asks for change "c" only in its second activation, after activity "a".
async fn version_later(ctx: WorkflowContext, _: ()) -> Result<i32, WorkflowError> {
    let _: String = ctx.activity("a", &()).await?;
    let v = ctx.get_version("c", DEFAULT_VERSION, 1);
    assert_eq!(ctx.get_version("c", DEFAULT_VERSION, 1), v);
    Ok(v)
}

/// `patched("p")` twice, or `deprecate_patch("p")` twice when the input is `true`.
async fn patch(ctx: WorkflowContext, deprecate: bool) -> Result<Value, WorkflowError> {
    if deprecate {
        ctx.deprecate_patch("p");
        ctx.deprecate_patch("p");
        Ok(Value::Null)
    } else {
        Ok(json!([ctx.patched("p"), ctx.patched("p")]))
    }
}

async fn label(ctx: WorkflowContext, _: ()) -> Result<Option<String>, WorkflowError> {
    Ok(ctx.version_label().map(str::to_owned))
}

pinion_sdk::export! {
    version: "test-v3",
    workflows: {
        "Version" => version,
        "VersionLater" => version_later,
        "Patch" => patch,
        "Label" => label,
    },
}

// ---- Helpers ----

fn activate(instance: &mut Instance, replaying: bool, jobs: Vec<Job>) -> Completion {
    let activation = Activation {
        now_ms: 1_000,
        is_replaying: replaying,
        jobs,
    };
    instance.activate(&__PINION_MODULE, activation)
}

fn run(instance: &mut Instance, replaying: bool, jobs: Vec<Job>) -> Vec<Command> {
    match activate(instance, replaying, jobs) {
        Completion::Commands(commands) => commands,
        Completion::Error(e) => panic!("unexpected Completion::Error: {e}"),
    }
}

fn run_err(instance: &mut Instance, replaying: bool, jobs: Vec<Job>) -> String {
    match activate(instance, replaying, jobs) {
        Completion::Error(e) => e,
        other => panic!("expected Completion::Error, got {other:?}"),
    }
}

fn start(workflow_type: &str, input: Value) -> Job {
    Job::Start {
        workflow_type: workflow_type.into(),
        instance_id: "wf-1".into(),
        input: input.to_string().into_bytes(),
        random_seed: 7,
    }
}

fn marker_job(id: &str, data: Value) -> Job {
    Job::Marker {
        id: id.into(),
        data: data.to_string().into_bytes(),
    }
}

/// The command the SDK issues; its data must be exactly this JSON, byte for byte, because
/// the host decodes it.
fn marker(id: &str, data: &str) -> Command {
    Command::RecordMarker {
        id: id.into(),
        data: data.as_bytes().to_vec(),
    }
}

fn complete(result: Value) -> Command {
    Command::CompleteWorkflow {
        result: result.to_string().into_bytes(),
    }
}

/// Runs `Version` in one activation.
fn version_run(replaying: bool, markers: Vec<Job>, args: Value) -> Vec<Command> {
    let mut jobs = markers;
    jobs.push(start("Version", args));
    run(&mut Instance::new(), replaying, jobs)
}

/// Runs `Patch` in one activation.
fn patch_run(replaying: bool, markers: Vec<Job>, deprecate: bool) -> Vec<Command> {
    let mut jobs = markers;
    jobs.push(start("Patch", json!(deprecate)));
    run(&mut Instance::new(), replaying, jobs)
}

// ---- get_version, first execution (live) ----

#[test]
fn live_returns_max_records_it_once_and_caches_it() {
    assert_eq!(
        version_run(false, vec![], json!({ "min": DEFAULT_VERSION, "max": 1 })),
        [
            marker("version:c", r#"{"version":1,"min":-1,"max":1}"#),
            complete(json!([1, 1])),
        ]
    );
}

#[test]
fn live_execute_with_default_version_records_nothing() {
    assert_eq!(
        version_run(
            false,
            vec![],
            json!({ "min": DEFAULT_VERSION, "max": 1, "with": DEFAULT_VERSION })
        ),
        [complete(json!([-1, -1]))]
    );
}

#[test]
fn live_execute_with_version_records_the_chosen_version() {
    assert_eq!(
        version_run(false, vec![], json!({ "min": 1, "max": 10, "with": 2 })),
        [
            marker("version:c", r#"{"version":2,"min":1,"max":10}"#),
            complete(json!([2, 2])),
        ]
    );
}

#[test]
fn live_execute_with_min_version_records_min_unless_it_is_the_default() {
    assert_eq!(
        version_run(
            false,
            vec![],
            json!({ "min": 1, "max": 10, "min_version": true })
        ),
        [
            marker("version:c", r#"{"version":1,"min":1,"max":10}"#),
            complete(json!([1, 1])),
        ]
    );
    assert_eq!(
        version_run(
            false,
            vec![],
            json!({ "min": DEFAULT_VERSION, "max": 1, "min_version": true })
        ),
        [complete(json!([-1, -1]))]
    );
}

#[test]
#[should_panic(expected = "version 5 is outside [1, 3]")]
fn live_execute_with_version_outside_the_range_panics() {
    version_run(false, vec![], json!({ "min": 1, "max": 3, "with": 5 }));
}

#[test]
#[should_panic(expected = "min is greater than max")]
fn min_above_max_panics() {
    version_run(false, vec![], json!({ "min": 2, "max": 1 }));
}

// ---- get_version, replay ----

#[test]
fn replay_with_the_marker_returns_the_recorded_version_whatever_the_option() {
    let recorded = marker_job(
        "version:c",
        json!({ "version": 1, "min": DEFAULT_VERSION, "max": 1 }),
    );
    // Markers precede Start in a replayed first activation.
    assert_eq!(
        version_run(
            true,
            vec![recorded],
            json!({ "min": DEFAULT_VERSION, "max": 1, "with": DEFAULT_VERSION })
        ),
        [
            marker("version:c", r#"{"version":1,"min":-1,"max":1}"#),
            complete(json!([1, 1])),
        ]
    );
}

#[test]
fn replay_with_a_marker_outside_the_range_still_returns_it_for_the_host_to_check() {
    let recorded = marker_job("version:c", json!({ "version": 1, "min": -1, "max": 1 }));
    assert_eq!(
        version_run(true, vec![recorded], json!({ "min": 2, "max": 3 })),
        [
            marker("version:c", r#"{"version":1,"min":2,"max":3}"#),
            complete(json!([1, 1])),
        ]
    );
}

#[test]
fn replay_without_the_marker_returns_the_default_and_records_nothing() {
    assert_eq!(
        version_run(true, vec![], json!({ "min": DEFAULT_VERSION, "max": 1 })),
        [complete(json!([-1, -1]))]
    );
}

#[test]
fn replay_without_the_marker_when_the_default_is_unsupported_issues_a_marker_history_lacks() {
    assert_eq!(
        version_run(true, vec![], json!({ "min": 1, "max": 1 })),
        [
            marker("version:c", r#"{"version":-1,"min":1,"max":1}"#),
            complete(json!([-1, -1])),
        ]
    );
}

#[test]
fn a_marker_delivered_with_a_later_activation_answers_the_call_made_there() {
    let mut wf = Instance::new();
    let scheduled = run(&mut wf, true, vec![start("VersionLater", Value::Null)]);
    assert!(
        matches!(
            scheduled.as_slice(),
            [Command::ScheduleActivity { seq: 1, .. }]
        ),
        "{scheduled:?}"
    );
    let resolve = Job::ResolveActivity {
        seq: 1,
        result: ActivityResult::Completed(b"\"a\"".to_vec()),
    };
    assert_eq!(
        run(
            &mut wf,
            true,
            vec![
                marker_job("version:c", json!({ "version": 0, "min": -1, "max": 1 })),
                resolve
            ]
        ),
        [
            marker("version:c", r#"{"version":0,"min":-1,"max":1}"#),
            complete(json!(0)),
        ]
    );
}

#[test]
fn an_activation_past_the_replayed_history_decides_live() {
    let mut wf = Instance::new();
    run(&mut wf, true, vec![start("VersionLater", Value::Null)]);
    let resolve = Job::ResolveActivity {
        seq: 1,
        result: ActivityResult::Completed(b"\"a\"".to_vec()),
    };
    assert_eq!(
        run(&mut wf, false, vec![resolve]),
        [
            marker("version:c", r#"{"version":1,"min":-1,"max":1}"#),
            complete(json!(1)),
        ]
    );
}

// ---- patched / deprecate_patch ----

#[test]
fn patched_live_is_true_records_the_marker_once() {
    assert_eq!(
        patch_run(false, vec![], false),
        [
            marker("patch:p", r#"{"deprecated":false}"#),
            complete(json!([true, true])),
        ]
    );
}

#[test]
fn patched_replay_with_the_marker_is_true_and_records_it_again() {
    for deprecated in [false, true] {
        let recorded = marker_job("patch:p", json!({ "deprecated": deprecated }));
        assert_eq!(
            patch_run(true, vec![recorded], false),
            [
                marker("patch:p", r#"{"deprecated":false}"#),
                complete(json!([true, true])),
            ],
            "recorded deprecated: {deprecated}"
        );
    }
}

#[test]
fn patched_replay_without_the_marker_is_false_and_records_nothing() {
    assert_eq!(
        patch_run(true, vec![], false),
        [complete(json!([false, false]))]
    );
}

#[test]
fn deprecate_patch_live_records_a_deprecated_marker_once() {
    assert_eq!(
        patch_run(false, vec![], true),
        [
            marker("patch:p", r#"{"deprecated":true}"#),
            complete(Value::Null),
        ]
    );
}

#[test]
fn deprecate_patch_replay_with_the_marker_records_a_deprecated_marker() {
    let recorded = marker_job("patch:p", json!({ "deprecated": false }));
    assert_eq!(
        patch_run(true, vec![recorded], true),
        [
            marker("patch:p", r#"{"deprecated":true}"#),
            complete(Value::Null),
        ]
    );
}

#[test]
fn deprecate_patch_replay_without_the_marker_records_nothing() {
    assert_eq!(patch_run(true, vec![], true), [complete(Value::Null)]);
}

#[test]
fn version_and_patch_markers_do_not_answer_each_other() {
    let version_marker = marker_job("version:p", json!({ "version": 1, "min": 1, "max": 1 }));
    assert_eq!(
        patch_run(true, vec![version_marker], false),
        [complete(json!([false, false]))]
    );
    let patch_marker = marker_job("patch:c", json!({ "deprecated": false }));
    assert_eq!(
        version_run(
            true,
            vec![patch_marker],
            json!({ "min": DEFAULT_VERSION, "max": 1 })
        ),
        [complete(json!([-1, -1]))]
    );
}

// ---- The rest ----

#[test]
fn version_label_is_export_s_version() {
    let commands = run(
        &mut Instance::new(),
        false,
        vec![start("Label", Value::Null)],
    );
    assert_eq!(commands, [complete(json!("test-v3"))]);
}

#[test]
fn unknown_marker_ids_are_accepted_and_ignored() {
    let other = marker_job("side-effect:1", json!(42));
    assert_eq!(
        version_run(
            true,
            vec![other],
            json!({ "min": DEFAULT_VERSION, "max": 1 })
        ),
        [complete(json!([-1, -1]))]
    );
}

#[test]
fn marker_jobs_that_contradict_the_code_are_errors() {
    let e = run_err(
        &mut Instance::new(),
        true,
        vec![
            marker_job("version:c", json!({ "min": 1 })),
            start("Version", json!({ "min": 1, "max": 1 })),
        ],
    );
    assert!(e.contains("\"version:c\" has malformed data"), "{e}");

    let e = run_err(
        &mut Instance::new(),
        true,
        vec![
            marker_job("patch:p", json!({ "deprecated": false })),
            marker_job("patch:p", json!({ "deprecated": false })),
            start("Patch", json!(false)),
        ],
    );
    assert!(e.contains("\"patch:p\" was delivered twice"), "{e}");

    let e = run_err(
        &mut Instance::new(),
        true,
        vec![marker_job("patch:p", json!({ "deprecated": false }))],
    );
    assert!(e.contains("markers but no Start"), "{e}");

    let e = run_err(
        &mut Instance::new(),
        true,
        vec![
            marker_job("patch:p", json!({ "deprecated": false })),
            Job::FireTimer { seq: 1 },
        ],
    );
    assert!(
        e.contains("must start the workflow, but its first job after the markers is FireTimer"),
        "{e}"
    );
}
