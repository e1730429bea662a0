//! Signals, cancellation and queries, driven the way the host drives them: activations and
//! query requests built by hand, assertions on the exact commands and answers.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use pinion_sdk::__rt::Instance;
use pinion_sdk::abi::{
    Activation, ActivityResult, Command, Completion, Job, QueryRequest, QueryResponse,
};
use pinion_sdk::{select, Either, WorkflowContext, WorkflowError};
use serde_json::{json, Value};

/// Collects three "item" signals (the first two may arrive before it waits), then returns
/// them with the count of "extra" signals buffered meanwhile.
async fn collect(ctx: WorkflowContext, _: ()) -> Result<Value, WorkflowError> {
    let seen = Rc::new(RefCell::new(Vec::<String>::new()));
    let for_query = seen.clone();
    ctx.register_query("items", move |(): ()| for_query.borrow().clone());
    let mut items = ctx.signals::<String>("item");
    for _ in 0..3 {
        let item = items.recv().await?;
        seen.borrow_mut().push(item);
    }
    let mut extras = ctx.signals::<u32>("extra");
    let mut extra_sum = 0;
    while let Some(x) = extras.try_recv() {
        extra_sum += x?;
    }
    let items = seen.borrow().clone();
    Ok(json!({ "items": items, "extra_sum": extra_sum }))
}

/// Waits on an activity, a timer and a signal at once; on cancellation runs a cleanup
/// activity and ends cancelled.
async fn cancellable(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    let work = ctx.activity::<String>("work", &());
    let timer = ctx.sleep(Duration::from_secs(60));
    let approval = ctx.signal::<String>("approve");
    match select(work, select(timer, approval)).await {
        Either::Left(Err(e)) if e.is_cancelled() => {
            let _: () = ctx.activity("cleanup", &()).await?;
            Err(e.into())
        }
        Either::Left(r) => Ok(r?),
        Either::Right(_) => Ok("other".into()),
    }
}

/// Sleeps; `?` on the cancelled timer ends the workflow cancelled.
async fn sleeper(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    ctx.sleep(Duration::from_secs(60)).await?;
    Ok(())
}

/// Ignores a cancellation: returns normally after observing it.
async fn stubborn(ctx: WorkflowContext, _: ()) -> Result<String, WorkflowError> {
    let why = ctx.cancelled().await;
    Ok(format!("ignored: {}", why.reason))
}

/// Registers a handler that misbehaves (schedules an activity) and one that reads.
async fn naughty(ctx: WorkflowContext, _: ()) -> Result<u32, WorkflowError> {
    let c = ctx.clone();
    ctx.register_query("schedule", move |(): ()| {
        drop(c.activity::<()>("sneaky", &()));
        1
    });
    let r = ctx.clone();
    ctx.register_query("random", move |(): ()| r.random_u64());
    ctx.register_query("echo", |x: u32| x + 1);
    let n: u32 = ctx.activity("one", &()).await?;
    Ok(n)
}

pinion_sdk::export! {
    workflows: {
        "Collect" => collect,
        "Cancellable" => cancellable,
        "Sleeper" => sleeper,
        "Stubborn" => stubborn,
        "Naughty" => naughty,
    },
}

fn start(workflow_type: &str) -> Job {
    Job::Start {
        workflow_type: workflow_type.into(),
        instance_id: "wf-1".into(),
        input: b"null".to_vec(),
        random_seed: 7,
    }
}

fn signal(name: &str, input: &str) -> Job {
    Job::Signal {
        name: name.into(),
        input: input.as_bytes().to_vec(),
    }
}

fn cancel(reason: &str) -> Job {
    Job::Cancel {
        reason: reason.into(),
    }
}

fn run(instance: &mut Instance, jobs: Vec<Job>) -> Vec<Command> {
    let activation = Activation {
        now_ms: 1_000,
        is_replaying: false,
        jobs,
    };
    match instance.activate(&__PINION_MODULE, activation) {
        Completion::Commands(c) => c,
        Completion::Error(e) => panic!("unexpected Completion::Error: {e}"),
    }
}

fn query(instance: &mut Instance, name: &str, input: &str) -> QueryResponse {
    instance.query(QueryRequest {
        name: name.into(),
        input: input.as_bytes().to_vec(),
    })
}

fn completed(commands: &[Command]) -> Value {
    match commands.last() {
        Some(Command::CompleteWorkflow { result }) => serde_json::from_slice(result).unwrap(),
        other => panic!("expected CompleteWorkflow, got {other:?}"),
    }
}

#[test]
fn signals_sent_before_the_wait_are_buffered_and_read_in_arrival_order() {
    let mut i = Instance::new();
    // Two items and an extra arrive together with the start, before the workflow waits.
    let c = run(
        &mut i,
        vec![
            start("Collect"),
            signal("item", r#""a""#),
            signal("extra", "5"),
            signal("item", r#""b""#),
        ],
    );
    assert!(c.is_empty(), "still waiting for the third item: {c:?}");
    let c = run(&mut i, vec![signal("extra", "6"), signal("item", r#""c""#)]);
    assert_eq!(
        completed(&c),
        json!({ "items": ["a", "b", "c"], "extra_sum": 11 })
    );
}

#[test]
fn a_signal_that_does_not_fit_the_type_fails_the_wait_with_invalid_signal() {
    let mut i = Instance::new();
    let c = run(&mut i, vec![start("Collect"), signal("item", "42")]);
    match c.last() {
        Some(Command::FailWorkflow { failure }) => {
            assert_eq!(failure.kind, "InvalidSignal");
            assert!(failure.message.contains("\"item\""), "{}", failure.message);
        }
        other => panic!("expected FailWorkflow, got {other:?}"),
    }
}

#[test]
fn cancellation_cancels_pending_activity_and_timer_then_cleanup_runs_and_the_workflow_ends_cancelled(
) {
    let mut i = Instance::new();
    let c = run(&mut i, vec![start("Cancellable")]);
    assert!(matches!(c[0], Command::ScheduleActivity { seq: 1, .. }));
    assert!(matches!(c[1], Command::StartTimer { seq: 1, .. }));
    let c = run(&mut i, vec![cancel("customer asked")]);
    assert_eq!(c[0], Command::RequestCancelActivity { seq: 1 });
    assert_eq!(c[1], Command::CancelTimer { seq: 1 });
    match &c[2] {
        Command::ScheduleActivity {
            seq, activity_type, ..
        } => assert_eq!((*seq, activity_type.as_str()), (2, "cleanup")),
        other => panic!("expected the cleanup activity, got {other:?}"),
    }
    assert_eq!(c.len(), 3, "{c:?}");
    // The cancelled activity's result may still arrive (it raced the cancel): ignored.
    let c = run(
        &mut i,
        vec![
            Job::ResolveActivity {
                seq: 1,
                result: ActivityResult::Completed(br#""late""#.to_vec()),
            },
            Job::ResolveActivity {
                seq: 2,
                result: ActivityResult::Completed(b"null".to_vec()),
            },
        ],
    );
    match c.as_slice() {
        [Command::CancelWorkflow { reason }] => {
            assert!(reason.contains("customer asked"), "{reason}")
        }
        other => panic!("expected CancelWorkflow, got {other:?}"),
    }
}

#[test]
fn a_cancelled_sleep_propagated_with_question_mark_ends_the_workflow_cancelled() {
    let mut i = Instance::new();
    run(&mut i, vec![start("Sleeper")]);
    let c = run(&mut i, vec![cancel("stop")]);
    assert_eq!(
        c,
        vec![
            Command::CancelTimer { seq: 1 },
            Command::CancelWorkflow {
                reason: "stop".into()
            }
        ]
    );
}

#[test]
fn a_workflow_may_observe_a_cancellation_and_complete_anyway() {
    let mut i = Instance::new();
    assert!(run(&mut i, vec![start("Stubborn")]).is_empty());
    let c = run(&mut i, vec![cancel("please")]);
    assert_eq!(completed(&c), json!("ignored: please"));
}

#[test]
fn a_cancelled_signal_wait_ends_the_workflow_cancelled_and_later_jobs_change_nothing() {
    let mut i = Instance::new();
    run(&mut i, vec![start("Collect")]);
    assert_eq!(
        run(&mut i, vec![cancel("one")]),
        vec![Command::CancelWorkflow {
            reason: "one".into()
        }]
    );
    let a = Activation {
        now_ms: 1,
        is_replaying: false,
        jobs: vec![cancel("two")],
    };
    // The workflow already ended cancelled, so nothing more is applied.
    assert_eq!(
        i.activate(&__PINION_MODULE, a),
        Completion::Commands(vec![])
    );
}

#[test]
fn queries_read_state_and_report_unknown_names_and_bad_input() {
    let mut i = Instance::new();
    assert_eq!(
        query(&mut i, "items", "null"),
        match query(&mut Instance::new(), "items", "null") {
            r @ QueryResponse::Failed(_) => r,
            other => panic!("{other:?}"),
        }
    );
    run(&mut i, vec![start("Collect"), signal("item", r#""a""#)]);
    assert_eq!(
        query(&mut i, "items", "null"),
        QueryResponse::Answered(br#"["a"]"#.to_vec())
    );
    match query(&mut i, "nope", "null") {
        QueryResponse::Failed(f) => {
            assert_eq!(f.kind, "UnknownQuery");
            assert!(f.message.contains("items"), "{}", f.message);
        }
        other => panic!("{other:?}"),
    }
    let mut n = Instance::new();
    run(&mut n, vec![start("Naughty")]);
    assert_eq!(
        query(&mut n, "echo", "41"),
        QueryResponse::Answered(b"42".to_vec())
    );
    match query(&mut n, "echo", r#""x""#) {
        QueryResponse::Failed(f) => assert_eq!(f.kind, "InvalidInput"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_query_handler_that_issues_a_command_or_draws_randomness_is_refused() {
    let mut i = Instance::new();
    let c = run(&mut i, vec![start("Naughty")]);
    assert_eq!(c.len(), 1);
    for name in ["schedule", "random"] {
        match query(&mut i, name, "null") {
            QueryResponse::Violated(f) => assert_eq!(f.kind, "ReadOnlyViolation", "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    // The refused command never reaches the host.
    let c = run(
        &mut i,
        vec![Job::ResolveActivity {
            seq: 1,
            result: ActivityResult::Completed(b"7".to_vec()),
        }],
    );
    assert_eq!(completed(&c), json!(7));
}

#[test]
fn a_cancellation_delivered_with_the_start_stops_waits_the_code_has_not_seen_it_for() {
    // Sleep: the timer is never started; the workflow ends cancelled at once.
    let mut i = Instance::new();
    assert_eq!(
        run(&mut i, vec![start("Sleeper"), cancel("too late")]),
        vec![Command::CancelWorkflow {
            reason: "too late".into()
        }]
    );
    // A signal wait is cancelled too, and cleanup after seeing it runs normally.
    let mut i = Instance::new();
    let c = run(&mut i, vec![start("Cancellable"), cancel("early")]);
    // work and timer were never issued; the cleanup activity is (seq 2, after the
    // cancelled seq 1).
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(
        matches!(&c[0], Command::ScheduleActivity { seq: 2, activity_type, .. } if activity_type == "cleanup"),
        "{c:?}"
    );
}

/// Reads one `add` signal, then continues as new.
async fn once_then_continue(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    let _: i64 = ctx.signal("add").await?;
    Err(ctx.continue_as_new(&json!({ "next": true })))
}

mod carry {
    use super::*;

    pinion_sdk::export! { workflows: { "Once" => once_then_continue } }

    #[test]
    fn continue_as_new_carries_the_signals_the_run_never_read() {
        let mut i = Instance::new();
        let activation = Activation {
            now_ms: 1,
            is_replaying: false,
            jobs: vec![
                start("Once"),
                signal("add", "1"),
                signal("add", "2"),
                signal("other", r#""x""#),
            ],
        };
        match i.activate(&__PINION_MODULE, activation) {
            Completion::Commands(c) => match c.as_slice() {
                [Command::ContinueAsNew {
                    input,
                    unread_signals,
                    ..
                }] => {
                    assert_eq!(input, br#"{"next":true}"#);
                    assert_eq!(
                        unread_signals,
                        &vec![
                            ("add".to_owned(), b"2".to_vec()),
                            ("other".to_owned(), br#""x""#.to_vec())
                        ]
                    );
                }
                other => panic!("{other:?}"),
            },
            Completion::Error(e) => panic!("{e}"),
        }
    }
}
