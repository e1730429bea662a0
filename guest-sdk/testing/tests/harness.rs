//! The harness on workflows defined here: time skipping, mocked activities and retries,
//! signals and queries at chosen points, the recorded history.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use pinion_sdk::{
    join_all, ActivityError, ActivityOptions, RetryPolicy, WorkflowContext, WorkflowError,
};
use pinion_testing::{ChildCall, Command, Failure, HarnessError, Outcome, TestEnv};

/// Sleeps an hour, then asks `hello`.
async fn sleepy(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    ctx.sleep(Duration::from_secs(3600)).await?;
    Ok(ctx.activity::<String>("hello", &()).await?)
}

fn hello() -> Result<String, ActivityError> {
    Ok("Approved".into())
}

/// Charges with a retry policy: 5 attempts, 100 ms doubling.
async fn charge(ctx: WorkflowContext, amount: u32) -> Result<String, WorkflowError> {
    let options = ActivityOptions::new().retry_policy(
        RetryPolicy::new()
            .maximum_attempts(5)
            .initial_interval(Duration::from_millis(100))
            .backoff_coefficient(2.0),
    );
    match ctx
        .activity_with::<String>("charge", &amount, options)
        .await
    {
        Ok(id) => Ok(id),
        Err(failed) => Ok(format!("gave up after {} attempts", failed.attempts)),
    }
}

/// Collects `count` signals named `add`, answering query `seen` with what it took so far.
async fn collect(ctx: WorkflowContext, count: u32) -> Result<Vec<String>, WorkflowError> {
    let seen = Rc::new(RefCell::new(Vec::<String>::new()));
    let s = seen.clone();
    ctx.register_query("seen", move |(): ()| s.borrow().clone());
    let mut adds = ctx.signals::<String>("add");
    for _ in 0..count {
        let x = adds.recv().await?;
        seen.borrow_mut().push(x);
    }
    let all = seen.borrow().clone();
    Ok(all)
}

/// Starts `n` children `Square` (inputs 1..=n) at once; the sum of those that completed
/// and the kinds of those that failed.
async fn fan(ctx: WorkflowContext, n: u32) -> Result<(u32, Vec<String>), WorkflowError> {
    let children: Vec<_> = (1..=n)
        .map(|i| ctx.child_workflow::<u32>("Square", &i))
        .collect();
    let (mut sum, mut failed) = (0, Vec::new());
    for r in join_all(children).await {
        match r {
            Ok(v) => sum += v,
            Err(e) => failed.push(e.kind),
        }
    }
    Ok((sum, failed))
}

/// Waits for one slow child; its error ends the workflow.
async fn parent(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    ctx.child_workflow::<String>("Slow", &()).await
}

pinion_sdk::export! {
    version: "test",
    workflows: {
        "Sleepy" => sleepy, "Charge" => charge, "Collect" => collect, "Fan" => fan,
        "Parent" => parent,
    },
    activities: { "hello" => hello },
}

#[test]
// Measured for the log only; the assertions are on logical time.
#[allow(clippy::disallowed_methods)]
fn a_one_hour_timer_is_skipped_and_recorded_as_one_hour() {
    let wall = std::time::Instant::now();
    let mut run = TestEnv::new(&__PINION_MODULE).start("Sleepy", &());
    let answer: String = run.run_to_end().unwrap();
    eprintln!("a one-hour workflow took {:?} of wall time", wall.elapsed());

    assert_eq!(answer, "Approved", "the real activity ran after the timer");
    let started = run.events_of("TimerStarted");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["duration_ms"], 3_600_000);
    assert_eq!(run.events_of("TimerFired").len(), 1);
    assert_eq!(
        run.elapsed_ms(),
        3_600_000,
        "logical time moved by the hour"
    );
    assert_eq!(
        run.commands()[0],
        Command::StartTimer {
            seq: 1,
            duration_ms: 3_600_000
        }
    );
    assert!(matches!(
        run.commands().last(),
        Some(Command::CompleteWorkflow { .. })
    ));
}

#[test]
fn run_for_stops_the_clock_before_a_timer_that_is_not_due() {
    let mut run = TestEnv::new(&__PINION_MODULE).start("Sleepy", &());
    run.run_for(Duration::from_secs(1800)).unwrap();
    assert_eq!(
        run.outcome(),
        None,
        "half an hour in, the timer has not fired"
    );
    assert_eq!(run.elapsed_ms(), 1_800_000);
    assert!(run.events_of("TimerFired").is_empty());
    run.run_for(Duration::from_secs(1800)).unwrap();
    assert_eq!(
        run.outcome(),
        Some(&Outcome::Completed(serde_json::json!("Approved")))
    );
}

#[test]
fn a_mock_failing_twice_then_succeeding_is_retried_with_backoff() {
    let mut run = TestEnv::new(&__PINION_MODULE)
        .mock_activity_with("charge", |call, amount: u32| {
            if call.attempt <= 2 {
                Err(ActivityError::retryable("GatewayUnavailable", "try again"))
            } else {
                Ok(format!("ch-{amount}-{}", call.attempt))
            }
        })
        .start("Charge", &42);
    let id: String = run.run_to_end().unwrap();
    assert_eq!(id, "ch-42-3");

    let attempts: Vec<(u32, Option<&str>, Option<u64>)> = run
        .attempts()
        .iter()
        .map(|a| {
            (
                a.attempt,
                a.failure.as_ref().map(|f| f.kind.as_str()),
                a.retry_in_ms,
            )
        })
        .collect();
    assert_eq!(
        attempts,
        vec![
            (1, Some("GatewayUnavailable"), Some(100)),
            (2, Some("GatewayUnavailable"), Some(200)),
            (3, None, None),
        ]
    );
    let start = run.attempts()[0].at_ms;
    assert_eq!(
        run.attempts()[2].at_ms - start,
        300,
        "backoffs of 100 and 200 ms"
    );
    let completed = run.events_of("ActivityCompleted");
    assert_eq!(completed[0]["attempts"], 3);
    // Intermediate attempts are not history, as in the engine.
    assert!(run.events_of("ActivityFailed").is_empty());
}

#[test]
fn a_mock_that_always_fails_exhausts_the_policy() {
    let mut run = TestEnv::new(&__PINION_MODULE)
        .mock_activity("charge", |_: u32| -> Result<String, ActivityError> {
            Err(ActivityError::retryable("GatewayUnavailable", "down"))
        })
        .start("Charge", &1);
    let answer: String = run.run_to_end().unwrap();
    assert_eq!(answer, "gave up after 5 attempts");
    let delays: Vec<Option<u64>> = run.attempts().iter().map(|a| a.retry_in_ms).collect();
    assert_eq!(
        delays,
        vec![Some(100), Some(200), Some(400), Some(800), None]
    );
    let failed = run.events_of("ActivityFailed");
    assert_eq!(failed[0]["failure"]["attempts"], 5);
}

#[test]
fn a_non_retryable_error_is_not_retried() {
    let mut run = TestEnv::new(&__PINION_MODULE)
        .mock_activity("charge", |_: u32| -> Result<String, ActivityError> {
            Err(ActivityError::non_retryable("PaymentDeclined", "no"))
        })
        .start("Charge", &1);
    let answer: String = run.run_to_end().unwrap();
    assert_eq!(answer, "gave up after 1 attempts");
    assert_eq!(run.attempts().len(), 1);
}

#[test]
fn signals_arrive_in_order_and_queries_see_the_state_between_them() {
    let mut run = TestEnv::new(&__PINION_MODULE).start("Collect", &3);
    let err = run.query::<_, Vec<String>>("seen", &()).unwrap_err();
    assert!(
        matches!(&err, HarnessError::Query(f) if f.kind == "NotStarted"),
        "{err}"
    );

    // Sent before the first activation: delivered with the start, not lost.
    run.signal("add", "a").unwrap();
    run.run_until_idle().unwrap();
    assert_eq!(run.query::<_, Vec<String>>("seen", &()).unwrap(), ["a"]);
    assert!(matches!(
        run.result::<Vec<String>>(),
        Err(HarnessError::Waiting)
    ));

    // Two in one activation: in the order sent.
    run.signal("add", "b").unwrap();
    run.signal("add", "c").unwrap();
    assert_eq!(
        run.query::<_, Vec<String>>("seen", &()).unwrap(),
        ["a"],
        "a query sees only what an activation delivered"
    );
    let all: Vec<String> = run.run_to_end().unwrap();
    assert_eq!(all, ["a", "b", "c"]);
    let names: Vec<&str> = run
        .events_of("SignalReceived")
        .iter()
        .map(|e| e["input"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);

    let err = run.query::<_, u32>("nope", &()).unwrap_err();
    assert!(matches!(&err, HarnessError::Query(f) if f.kind == "UnknownQuery"));
}

#[test]
fn waiting_for_a_signal_that_never_comes_is_reported() {
    let mut run = TestEnv::new(&__PINION_MODULE).start("Collect", &1);
    assert!(matches!(
        run.run_to_end::<Vec<String>>(),
        Err(HarnessError::Waiting)
    ));
}

#[test]
fn a_cancellation_during_a_timer_ends_the_workflow_cancelled() {
    let mut run = TestEnv::new(&__PINION_MODULE).start("Sleepy", &());
    run.run_for(Duration::from_secs(60)).unwrap();
    run.cancel("no longer needed").unwrap();
    run.run_until_idle().unwrap();
    assert_eq!(
        run.outcome(),
        Some(&Outcome::Cancelled("no longer needed".into()))
    );
    assert_eq!(run.events_of("TimerCancelled").len(), 1);
    assert_eq!(run.history()["status"], "cancelled");
    assert!(matches!(
        run.signal("add", "late"),
        Err(HarnessError::Ended)
    ));
    assert!(matches!(run.cancel("again"), Err(HarnessError::Ended)));
}

#[test]
fn the_history_has_dense_ids_boundaries_and_the_export_header() {
    let mut run = TestEnv::new(&__PINION_MODULE)
        .instance_id("fixture-1")
        .start("Sleepy", &());
    run.run_until_idle().unwrap();
    let h = run.history();
    assert_eq!(h["format"], "pinion-history");
    assert_eq!(h["version"], 1);
    assert_eq!(h["instance_id"], "fixture-1");
    assert_eq!(h["status"], "completed");
    let types: Vec<&str> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            assert_eq!(e["id"], i as u64 + 1);
            e["type"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        types,
        [
            "WorkflowStarted",
            "WorkflowTaskCompleted",
            "TimerStarted",
            "TimerFired",
            "WorkflowTaskCompleted",
            "ActivityScheduled",
            "ActivityCompleted",
            "WorkflowTaskCompleted",
            "WorkflowCompleted",
        ]
    );
    assert_eq!(h["events"][0]["version_label"], "test");
}

#[test]
fn an_unknown_workflow_type_is_the_sdk_error_the_engine_would_block_on() {
    let mut run = TestEnv::new(&__PINION_MODULE).start("Nope", &());
    let err = run.run_until_idle().unwrap_err();
    assert!(err.to_string().contains("unknown workflow type"), "{err}");
}

#[test]
fn mocked_children_take_logical_time_and_their_results_and_failures_reach_the_parent() {
    let calls = Rc::new(RefCell::new(Vec::<ChildCall>::new()));
    let seen = calls.clone();
    let mut run = TestEnv::new(&__PINION_MODULE)
        .mock_child_after(
            "Square",
            Duration::from_secs(7200),
            move |call: &ChildCall, i: u32| {
                seen.borrow_mut().push(call.clone());
                if i == 2 {
                    Err(Failure {
                        kind: "Declined".into(),
                        message: "no".into(),
                        non_retryable: true,
                        attempts: 0,
                    })
                } else {
                    Ok(i * i)
                }
            },
        )
        .start("Fan", &3);
    let (sum, failed): (u32, Vec<String>) = run.run_to_end().unwrap();
    assert_eq!((sum, failed), (1 + 9, vec!["Declined".to_owned()]));
    assert_eq!(run.elapsed_ms(), 7_200_000, "the two hours are skipped");
    let ids: Vec<String> = calls.borrow().iter().map(|c| c.child_id.clone()).collect();
    assert_eq!(ids, ["test-1-child-1", "test-1-child-2", "test-1-child-3"]);
    assert!(calls.borrow().iter().all(|c| c.parent_id == "test-1"));
    let started = run.events_of("ChildWorkflowInitiated");
    assert_eq!(started.len(), 3);
    assert_eq!(started[1]["input"], 2);
    assert_eq!(started[1]["child_id"], "test-1-child-2");
    assert_eq!(started[1]["workflow_type"], "Square");
    let completed = run.events_of("ChildWorkflowCompleted");
    assert_eq!(
        completed
            .iter()
            .map(|e| e["result"].clone())
            .collect::<Vec<_>>(),
        [1, 9]
    );
    assert!(completed.iter().all(|e| e["time_ms"] == run.now_ms()));
    let failed = run.events_of("ChildWorkflowFailed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["failure"]["kind"], "Declined");
    assert_eq!(
        run.commands()
            .iter()
            .filter(|c| matches!(c, Command::StartChild { .. }))
            .count(),
        3
    );
}

#[test]
fn cancelling_the_parent_cancels_its_running_mocked_child_at_once() {
    let called = Rc::new(RefCell::new(false));
    let c = called.clone();
    let mut run = TestEnv::new(&__PINION_MODULE)
        .mock_child_after("Slow", Duration::from_secs(86_400), move |_, (): ()| {
            *c.borrow_mut() = true;
            Ok("finished".to_owned())
        })
        .start("Parent", &());
    run.run_for(Duration::from_secs(3600)).unwrap();
    assert!(run.outcome().is_none(), "the child takes a day");
    run.cancel("stop").unwrap();
    run.run_until_idle().unwrap();
    assert!(
        matches!(run.outcome(), Some(Outcome::Cancelled(_))),
        "{:?}",
        run.outcome()
    );
    assert_eq!(run.elapsed_ms(), 3_600_000, "not a day: the child stopped");
    assert_eq!(run.events_of("ChildCancelRequested")[0]["seq"], 1);
    let ended = run.events_of("ChildWorkflowFailed");
    assert_eq!(ended[0]["failure"]["kind"], "Cancelled");
    assert_eq!(
        ended[0]["failure"]["message"],
        "its parent test-1 was cancelled"
    );
    // The mock decides the child's end when it starts; the cancellation replaced it.
    assert!(*called.borrow());
}

#[test]
fn a_child_that_is_not_mocked_is_reported_with_the_way_to_mock_it() {
    let mut run = TestEnv::new(&__PINION_MODULE).start("Fan", &1);
    match run.run_until_idle() {
        Err(HarnessError::Unsupported(why)) => {
            assert!(
                why.contains("\"Square\"") && why.contains("TestEnv::mock_child"),
                "{why}"
            )
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}
