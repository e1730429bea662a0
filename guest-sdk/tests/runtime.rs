//! Drives the SDK runtime the way the host does, without wasm: a module registered with
//! `export!` (as a user would write it), activations built by hand, and assertions on the
//! exact commands that come back. Each test owns its `Instance`, so tests are independent.

use std::time::Duration;

use pinion_sdk::__rt::{self, Instance};
use pinion_sdk::abi::{
    Activation, ActivityInvocation, ActivityOutcome, ActivityResult, Command, Completion, Failure,
    Job,
};
use pinion_sdk::{
    join3, select, ActivityContext, ActivityError, ActivityFailed, ActivityOptions, Either,
    RetryPolicy, WorkflowContext, WorkflowError,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

// ---- The module under test ----

async fn greet_workflow(ctx: WorkflowContext, name: String) -> Result<String, WorkflowError> {
    let greeting: String = ctx.activity("greet", &name).await?;
    Ok(greeting)
}

async fn parallel(ctx: WorkflowContext, _: ()) -> Result<i64, WorkflowError> {
    let (a, b, c) = join3(
        ctx.activity::<i64>("double", &1),
        ctx.activity::<i64>("double", &2),
        ctx.activity::<i64>("double", &3),
    )
    .await;
    Ok(a? + b? + c?)
}

#[derive(Deserialize)]
struct RaceInput {
    timer_ms: u64,
}

/// Races an activity against a timer, then schedules one more activity with the winner's
/// name, so the test can see what happens after the select.
async fn race(ctx: WorkflowContext, input: RaceInput) -> Result<String, WorkflowError> {
    let slow = ctx.activity::<String>("slow", &());
    let winner = match select(slow, ctx.sleep(Duration::from_millis(input.timer_ms))).await {
        Either::Left(result) => result?,
        Either::Right(fired) => {
            fired?;
            "timer".to_owned()
        }
    };
    Ok(ctx.activity::<String>("echo", &winner).await?)
}

#[derive(Deserialize)]
struct TypedInput {
    count: u32,
    name: String,
}

async fn typed(_ctx: WorkflowContext, input: TypedInput) -> Result<String, WorkflowError> {
    Ok(format!("{}:{}", input.name, input.count))
}

async fn random(ctx: WorkflowContext, _: ()) -> Result<Value, WorkflowError> {
    Ok(json!([
        ctx.random_u64(),
        ctx.random_range(10, 20),
        ctx.uuid()
    ]))
}

/// Returns what it observed about a failed activity instead of failing.
async fn observe(ctx: WorkflowContext, _: ()) -> Result<Value, WorkflowError> {
    let options = ActivityOptions::new()
        .start_to_close_timeout(Duration::from_millis(200))
        .retry_policy(
            RetryPolicy::new()
                .maximum_attempts(2)
                .initial_interval(Duration::from_millis(50)),
        );
    match ctx.activity_with::<i64>("flaky", &7, options).await {
        Ok(v) => Ok(json!({ "value": v })),
        Err(ActivityFailed {
            kind,
            attempts,
            timed_out,
            activity_type,
            ..
        }) => Ok(
            json!({ "kind": kind, "attempts": attempts, "timed_out": timed_out, "type": activity_type }),
        ),
    }
}

async fn clock(ctx: WorkflowContext, _: ()) -> Result<Value, WorkflowError> {
    let before = ctx.now_ms();
    let replaying_before = ctx.is_replaying();
    ctx.sleep(Duration::from_micros(1500)).await?;
    Ok(json!({
        "before": before,
        "after": ctx.now_ms(),
        "replaying_before": replaying_before,
        "replaying_after": ctx.is_replaying(),
        "id": ctx.instance_id(),
        "type": ctx.workflow_type(),
    }))
}

/// Starts a timer and drops it unawaited.
async fn drop_timer(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    drop(ctx.sleep(Duration::from_secs(5)));
    Ok(())
}

fn greet(name: String) -> Result<String, ActivityError> {
    Ok(format!("hello, {name}"))
}

fn double(x: i64) -> Result<i64, ActivityError> {
    Ok(x * 2)
}

fn fails_until_third(ctx: ActivityContext, x: i64) -> Result<Value, ActivityError> {
    if ctx.attempt() < 3 {
        return Err(ActivityError::retryable(
            "Flaky",
            format!("attempt {}", ctx.attempt()),
        ));
    }
    Ok(json!({ "x": x, "attempt": ctx.attempt(), "instance": ctx.instance_id(), "seq": ctx.seq() }))
}

/// Counts to `x`, resuming after the count an earlier attempt heartbeated.
fn resume(ctx: ActivityContext, x: u32) -> Result<Value, ActivityError> {
    let from: u32 = ctx.heartbeat_details()?.unwrap_or(0);
    for i in from + 1..=x {
        ctx.heartbeat(&i)?;
    }
    Ok(json!({ "from": from, "to": x }))
}

fn declined() -> Result<(), ActivityError> {
    Err(ActivityError::non_retryable("Declined", "no"))
}

#[derive(Serialize)]
struct Receipt {
    total: u32,
}

fn receipt() -> Result<Receipt, ActivityError> {
    Ok(Receipt { total: 42 })
}

pinion_sdk::export! {
    version: "test-1",
    workflows: {
        "Greet" => greet_workflow,
        "Parallel" => parallel,
        "Race" => race,
        "Typed" => typed,
        "Random" => random,
        "Observe" => observe,
        "Clock" => clock,
        "DropTimer" => drop_timer,
    },
    activities: {
        "greet" => greet,
        "double" => double,
        "flaky" => fails_until_third,
        "declined" => declined,
        "receipt" => receipt,
        "resume" => resume,
    },
}

// ---- Helpers ----

fn activation(now_ms: u64, jobs: Vec<Job>) -> Activation {
    Activation {
        now_ms,
        is_replaying: false,
        jobs,
    }
}

fn start_job(workflow_type: &str, input: &str, random_seed: u64) -> Job {
    Job::Start {
        workflow_type: workflow_type.into(),
        instance_id: "wf-1".into(),
        input: input.as_bytes().to_vec(),
        random_seed,
    }
}

fn resolve(seq: u32, json: &str) -> Job {
    Job::ResolveActivity {
        seq,
        result: ActivityResult::Completed(json.as_bytes().to_vec()),
    }
}

/// Applies jobs and returns the commands, failing the test on `Completion::Error`.
fn run(instance: &mut Instance, jobs: Vec<Job>) -> Vec<Command> {
    match instance.activate(&__PINION_MODULE, activation(1_000, jobs)) {
        Completion::Commands(commands) => commands,
        Completion::Error(e) => panic!("unexpected Completion::Error: {e}"),
    }
}

fn run_err(instance: &mut Instance, jobs: Vec<Job>) -> String {
    match instance.activate(&__PINION_MODULE, activation(1_000, jobs)) {
        Completion::Error(e) => e,
        other => panic!("expected Completion::Error, got {other:?}"),
    }
}

fn schedule(seq: u32, activity_type: &str, input: &str) -> Command {
    Command::ScheduleActivity {
        seq,
        activity_type: activity_type.into(),
        input: input.as_bytes().to_vec(),
        options: pinion_sdk::abi::ActivityOptions::default(),
    }
}

fn complete(json: &str) -> Command {
    Command::CompleteWorkflow {
        result: json.as_bytes().to_vec(),
    }
}

/// The JSON value of a `CompleteWorkflow`, for results whose exact bytes do not matter.
fn completed_value(commands: &[Command]) -> Value {
    match commands {
        [Command::CompleteWorkflow { result }] => serde_json::from_slice(result).unwrap(),
        other => panic!("expected a single CompleteWorkflow, got {other:?}"),
    }
}

// ---- Workflow activations ----

#[test]
fn start_schedules_then_resolution_completes_then_nothing() {
    let mut wf = Instance::new();
    assert_eq!(
        run(&mut wf, vec![start_job("Greet", "\"ada\"", 1)]),
        [schedule(1, "greet", "\"ada\"")]
    );
    assert_eq!(
        run(&mut wf, vec![resolve(1, "\"hello, ada\"")]),
        [complete("\"hello, ada\"")]
    );
    assert_eq!(run(&mut wf, vec![]), []);
}

#[test]
fn join3_schedules_in_program_order_and_waits_for_all() {
    let mut wf = Instance::new();
    assert_eq!(
        run(&mut wf, vec![start_job("Parallel", "null", 1)]),
        [
            schedule(1, "double", "1"),
            schedule(2, "double", "2"),
            schedule(3, "double", "3")
        ]
    );
    assert_eq!(run(&mut wf, vec![resolve(2, "4")]), []);
    assert_eq!(
        run(&mut wf, vec![resolve(3, "6"), resolve(1, "2")]),
        [complete("12")]
    );
}

#[test]
fn empty_input_reads_as_null() {
    let mut wf = Instance::new();
    assert_eq!(run(&mut wf, vec![start_job("Parallel", "", 1)]).len(), 3);
}

#[test]
fn select_timer_wins_no_cancel_and_late_activity_result_is_ignored() {
    let mut wf = Instance::new();
    assert_eq!(
        run(&mut wf, vec![start_job("Race", r#"{"timer_ms": 100}"#, 1)]),
        [
            schedule(1, "slow", "null"),
            Command::StartTimer {
                seq: 1,
                duration_ms: 100
            }
        ]
    );
    // The fired timer is not cancelled; the workflow moves on at once.
    assert_eq!(
        run(&mut wf, vec![Job::FireTimer { seq: 1 }]),
        [schedule(2, "echo", "\"timer\"")]
    );
    // The losing activity finishes later: accepted, and changes nothing.
    assert_eq!(run(&mut wf, vec![resolve(1, "\"activity\"")]), []);
    assert_eq!(
        run(&mut wf, vec![resolve(2, "\"timer\"")]),
        [complete("\"timer\"")]
    );
}

#[test]
fn select_activity_wins_and_the_timer_is_cancelled() {
    let mut wf = Instance::new();
    run(&mut wf, vec![start_job("Race", r#"{"timer_ms": 100}"#, 1)]);
    assert_eq!(
        run(&mut wf, vec![resolve(1, "\"activity\"")]),
        [
            Command::CancelTimer { seq: 1 },
            schedule(2, "echo", "\"activity\"")
        ]
    );
    // A fire that raced the cancel is ignored.
    assert_eq!(run(&mut wf, vec![Job::FireTimer { seq: 1 }]), []);
    assert_eq!(
        run(&mut wf, vec![resolve(2, "\"activity\"")]),
        [complete("\"activity\"")]
    );
}

#[test]
fn select_is_left_biased_when_both_are_ready() {
    let mut wf = Instance::new();
    run(&mut wf, vec![start_job("Race", r#"{"timer_ms": 100}"#, 1)]);
    // Both resolved in one activation: the activity (left) wins; the fired timer needs no cancel.
    assert_eq!(
        run(
            &mut wf,
            vec![Job::FireTimer { seq: 1 }, resolve(1, "\"activity\"")]
        ),
        [schedule(2, "echo", "\"activity\"")]
    );
}

#[test]
fn invalid_input_fails_the_workflow_with_invalid_input() {
    let mut wf = Instance::new();
    let commands = run(
        &mut wf,
        vec![start_job("Typed", r#"{"count": "many", "name": "x"}"#, 1)],
    );
    let [Command::FailWorkflow { failure }] = commands.as_slice() else {
        panic!("expected FailWorkflow, got {commands:?}");
    };
    assert_eq!(failure.kind, "InvalidInput");
    assert!(failure.non_retryable);
    assert_eq!(failure.attempts, 0);
    assert!(
        failure.message.contains("\"Typed\""),
        "message names the workflow: {}",
        failure.message
    );
    assert!(
        failure.message.contains("invalid type"),
        "message carries the serde error: {}",
        failure.message
    );
    assert_eq!(
        run(&mut wf, vec![resolve(1, "1")]),
        [],
        "a failed instance issues nothing more"
    );

    let mut ok = Instance::new();
    let commands = run(
        &mut ok,
        vec![start_job("Typed", r#"{"count": 3, "name": "x"}"#, 1)],
    );
    assert_eq!(commands, [complete("\"x:3\"")]);
}

#[test]
fn unknown_workflow_type_is_a_completion_error() {
    let e = run_err(&mut Instance::new(), vec![start_job("Nope", "null", 1)]);
    assert!(e.contains("unknown workflow type \"Nope\""), "{e}");
    assert!(e.contains("Greet"), "lists what the module exports: {e}");
}

#[test]
fn random_is_deterministic_per_seed() {
    let draw = |seed| {
        completed_value(&run(
            &mut Instance::new(),
            vec![start_job("Random", "null", seed)],
        ))
    };
    let a = draw(7);
    assert_eq!(a, draw(7), "same seed, same draws");
    assert_ne!(a, draw(8), "another seed, other draws");
    let range = a[1].as_u64().unwrap();
    assert!((10..20).contains(&range));
    assert_eq!(a[2].as_str().unwrap().len(), 36);
}

#[test]
fn activity_failure_is_observed_as_a_typed_error() {
    let mut wf = Instance::new();
    let commands = run(&mut wf, vec![start_job("Observe", "null", 1)]);
    let [Command::ScheduleActivity { options, .. }] = commands.as_slice() else {
        panic!("expected one ScheduleActivity, got {commands:?}");
    };
    assert_eq!(options.start_to_close_timeout_ms, Some(200));
    assert_eq!(options.retry.maximum_attempts, 2);
    assert_eq!(options.retry.initial_interval_ms, 50);

    let failure = Failure {
        kind: "StartToCloseTimeout".into(),
        message: "too slow".into(),
        non_retryable: false,
        attempts: 2,
    };
    let commands = run(
        &mut wf,
        vec![Job::ResolveActivity {
            seq: 1,
            result: ActivityResult::TimedOut(failure),
        }],
    );
    assert_eq!(
        completed_value(&commands),
        json!({ "kind": "StartToCloseTimeout", "attempts": 2, "timed_out": true, "type": "flaky" })
    );
}

#[test]
fn undecodable_activity_result_is_invalid_output() {
    let mut wf = Instance::new();
    run(&mut wf, vec![start_job("Observe", "null", 1)]);
    let commands = run(&mut wf, vec![resolve(1, "\"not a number\"")]);
    assert_eq!(completed_value(&commands)["kind"], "InvalidOutput");
}

#[test]
fn question_mark_fails_the_workflow_with_the_activity_kind() {
    let mut wf = Instance::new();
    run(&mut wf, vec![start_job("Greet", "\"bob\"", 1)]);
    let failure = Failure {
        kind: "Declined".into(),
        message: "no".into(),
        non_retryable: true,
        attempts: 1,
    };
    let commands = run(
        &mut wf,
        vec![Job::ResolveActivity {
            seq: 1,
            result: ActivityResult::Failed(failure),
        }],
    );
    let [Command::FailWorkflow { failure }] = commands.as_slice() else {
        panic!("expected FailWorkflow, got {commands:?}");
    };
    assert_eq!(failure.kind, "Declined");
    assert!(failure.message.contains("\"greet\""), "{}", failure.message);
}

#[test]
fn logical_time_and_replay_flag_come_from_the_activation() {
    let mut wf = Instance::new();
    let start = Activation {
        now_ms: 1_000,
        is_replaying: true,
        jobs: vec![start_job("Clock", "null", 1)],
    };
    assert_eq!(
        wf.activate(&__PINION_MODULE, start),
        Completion::Commands(vec![Command::StartTimer {
            seq: 1,
            duration_ms: 2
        }]),
        "1.5 ms rounds up to 2 ms"
    );
    let fire = Activation {
        now_ms: 2_500,
        is_replaying: false,
        jobs: vec![Job::FireTimer { seq: 1 }],
    };
    let Completion::Commands(commands) = wf.activate(&__PINION_MODULE, fire) else {
        panic!()
    };
    assert_eq!(
        completed_value(&commands),
        json!({
            "before": 1_000, "after": 2_500, "replaying_before": true, "replaying_after": false,
            "id": "wf-1", "type": "Clock",
        })
    );
}

#[test]
fn dropping_an_unfired_timer_cancels_it_before_completion() {
    let mut wf = Instance::new();
    assert_eq!(
        run(&mut wf, vec![start_job("DropTimer", "null", 1)]),
        [
            Command::StartTimer {
                seq: 1,
                duration_ms: 5_000
            },
            Command::CancelTimer { seq: 1 },
            complete("null")
        ]
    );
}

#[test]
fn jobs_that_contradict_the_code_are_errors() {
    let e = run_err(&mut Instance::new(), vec![resolve(1, "1")]);
    assert!(e.contains("must start the workflow"), "{e}");
    assert!(run_err(&mut Instance::new(), vec![]).contains("no jobs"));

    let mut wf = Instance::new();
    run(&mut wf, vec![start_job("Parallel", "null", 1)]);
    assert!(run_err(&mut wf, vec![resolve(9, "1")]).contains("never scheduled"));
    assert!(run_err(&mut wf, vec![Job::FireTimer { seq: 1 }]).contains("never started"));
    assert!(run_err(&mut wf, vec![start_job("Parallel", "null", 1)]).contains("already started"));

    let mut wf = Instance::new();
    run(&mut wf, vec![start_job("Parallel", "null", 1)]);
    run(&mut wf, vec![resolve(1, "2")]);
    assert!(run_err(&mut wf, vec![resolve(1, "2")]).contains("resolved twice"));
}

// ---- Activities ----

fn invocation(activity_type: &str, input: &str, attempt: u32) -> ActivityInvocation {
    ActivityInvocation {
        activity_type: activity_type.into(),
        input: input.as_bytes().to_vec(),
        attempt,
        instance_id: "wf-9".into(),
        seq: 4,
        heartbeat_details: None,
    }
}

fn failed(outcome: ActivityOutcome) -> Failure {
    match outcome {
        ActivityOutcome::Failed(f) => f,
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn activities_run_in_all_three_forms() {
    let out = __rt::run_activity(&__PINION_MODULE, invocation("double", "21", 1));
    assert_eq!(out, ActivityOutcome::Completed(b"42".to_vec()));
    let out = __rt::run_activity(&__PINION_MODULE, invocation("receipt", "", 1));
    assert_eq!(out, ActivityOutcome::Completed(br#"{"total":42}"#.to_vec()));
    let ActivityOutcome::Completed(bytes) =
        __rt::run_activity(&__PINION_MODULE, invocation("flaky", "5", 3))
    else {
        panic!("third attempt succeeds");
    };
    let value: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        value,
        json!({ "x": 5, "attempt": 3, "instance": "wf-9", "seq": 4 })
    );
}

#[test]
fn heartbeat_details_of_an_earlier_attempt_reach_the_context() {
    let first = __rt::run_activity(&__PINION_MODULE, invocation("resume", "5", 1));
    assert_eq!(
        first,
        ActivityOutcome::Completed(br#"{"from":0,"to":5}"#.to_vec())
    );
    let mut retry = invocation("resume", "5", 2);
    retry.heartbeat_details = Some(b"3".to_vec());
    let second = __rt::run_activity(&__PINION_MODULE, retry);
    assert_eq!(
        second,
        ActivityOutcome::Completed(br#"{"from":3,"to":5}"#.to_vec())
    );
    let mut bad = invocation("resume", "5", 2);
    bad.heartbeat_details = Some(br#""three""#.to_vec());
    let f = failed(__rt::run_activity(&__PINION_MODULE, bad));
    assert_eq!(
        (f.kind.as_str(), f.non_retryable),
        ("InvalidHeartbeatDetails", true)
    );
}

#[test]
fn activity_errors_carry_kind_flag_and_attempt() {
    let f = failed(__rt::run_activity(
        &__PINION_MODULE,
        invocation("flaky", "5", 2),
    ));
    assert_eq!(
        (f.kind.as_str(), f.non_retryable, f.attempts),
        ("Flaky", false, 2)
    );
    let f = failed(__rt::run_activity(
        &__PINION_MODULE,
        invocation("declined", "null", 1),
    ));
    assert_eq!(
        (f.kind.as_str(), f.non_retryable, f.attempts),
        ("Declined", true, 1)
    );
}

#[test]
fn unknown_activity_and_bad_input_are_non_retryable() {
    let f = failed(__rt::run_activity(
        &__PINION_MODULE,
        invocation("nope", "1", 1),
    ));
    assert_eq!(f.kind, "UnknownActivity");
    assert!(f.non_retryable);
    let f = failed(__rt::run_activity(
        &__PINION_MODULE,
        invocation("double", "\"x\"", 1),
    ));
    assert_eq!(f.kind, "InvalidInput");
    assert!(f.non_retryable);
    assert!(f.message.contains("\"double\""), "{}", f.message);
}

// ---- Manifest and byte-level entry points ----

#[test]
fn manifest_lists_everything_registered() {
    let m = __rt::manifest(&__PINION_MODULE);
    assert_eq!(m.abi_version, pinion_sdk::abi::ABI_VERSION);
    assert_eq!(m.sdk_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(m.version_label.as_deref(), Some("test-1"));
    assert_eq!(
        m.workflows,
        [
            "Greet",
            "Parallel",
            "Race",
            "Typed",
            "Random",
            "Observe",
            "Clock",
            "DropTimer"
        ]
    );
    assert_eq!(
        m.activities,
        ["greet", "double", "flaky", "declined", "receipt", "resume"]
    );
    let decoded: pinion_sdk::abi::Manifest =
        pinion_sdk::abi::decode(&__rt::manifest_bytes(&__PINION_MODULE)).unwrap();
    assert_eq!(decoded, m);
}

#[test]
fn byte_entry_points_round_trip_postcard() {
    // Uses this thread's global instance, exactly as the wasm export does.
    let request =
        pinion_sdk::abi::encode(&activation(5, vec![start_job("Greet", "\"eve\"", 3)])).unwrap();
    let reply: Completion =
        pinion_sdk::abi::decode(&__rt::activate_bytes(&__PINION_MODULE, &request)).unwrap();
    assert_eq!(
        reply,
        Completion::Commands(vec![schedule(1, "greet", "\"eve\"")])
    );

    let reply: Completion =
        pinion_sdk::abi::decode(&__rt::activate_bytes(&__PINION_MODULE, &[0xff; 3])).unwrap();
    assert!(matches!(reply, Completion::Error(e) if e.contains("malformed activation")));

    let request = pinion_sdk::abi::encode(&invocation("double", "4", 1)).unwrap();
    let outcome: ActivityOutcome =
        pinion_sdk::abi::decode(&__rt::run_activity_bytes(&__PINION_MODULE, &request)).unwrap();
    assert_eq!(outcome, ActivityOutcome::Completed(b"8".to_vec()));
}
