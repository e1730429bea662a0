//! Testkit: small workflows the engine's tests and benchmarks drive, one behaviour each.
//!
//! | workflow | input | result |
//! | --- | --- | --- |
//! | `Echo` | any JSON | the input |
//! | `Parallel` | ignored | `12`: sum of `double(1)`, `double(2)`, `double(3)` run with `join3` |
//! | `Race` | `{activity_ms, timer_ms}` | `"activity"` or `"timer"`: activity `slow` (busy-waits `activity_ms` of real time) vs `sleep(timer_ms)` |
//! | `Retry` | `{fail_times, max_attempts, non_retryable}` | `{"attempts": n}`, or `{"failed_kind": k, "attempts": n}` when `flaky` finally fails |
//! | `Timeout` | `{ms}` (default 5000) | `{"timed_out": bool, "attempts": n}`: activity `hang` busy-waits `ms` with a 200 ms start-to-close timeout, 2 attempts |
//! | `Sleep` | `{ms}` | `{"before": ms, "after": ms}`: logical time around a durable sleep |
//! | `Steps` | `{n}` | `n`: calls `step` (`x → x + 1`) `n` times in sequence |
//! | `Panic` | ignored | never: panics with `"boom"` (a trap) |
//! | `Spin` | ignored | never: loops until the host's fuel limit stops it |
//! | `Hog` | ignored | never: allocates 1 MiB chunks until the host's memory limit stops it |
//! | `Typed` | `{count: u32, name: string}` | `"name:count"`; anything else fails with `InvalidInput` |
//! | `Approval` | `{order: string}` | `"<order> approved by <who>"` after signal `approve` (a string); query `state`; on cancel runs `release` and ends cancelled |
//! | `Collect` | `{count: n}` | the sum of `n` signals `add` (numbers); query `total` (sum so far) and `seen` (signals read) |
//! | `Family` | `{children: n, alias?, approval?}` | sum of `n` child `Steps` runs (`n = 1..`) on the parent's module or `alias`'s; with `approval`, the result of one child `Approval` |
//! | `Rounds` | `{rounds: n, total?}` | the sum of `n` signals `add`, reading one per run and continuing as new after each |
//! | `HttpSteps` | `{n, url}` | `n`: calls `get` (an HTTP GET of `url`, granted by the operator) `n` times in sequence |
//! | `Busy` | `{ms}` | never on its own: activity `slow` for `ms` of real time, with a one-hour timer beside it; on cancel runs `release` and ends cancelled |
//! | `Relay` | `{sleep_ms, nap_ms}` | `signal + 2`: activity `step`, a durable `sleep_ms` timer, signal `go` (a number), then activity `nap` (sleeps `nap_ms` of real time without using the CPU; retried after 100 ms when lost). The many-servers test's workload |
//!
//! Build: `cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml`
//! (produces `testkit.wasm`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use std::cell::RefCell;
use std::rc::Rc;

use pinion_sdk::{
    join, join3, join_all, select, ActivityContext, ActivityError, ActivityOptions, ChildOptions,
    Either, RetryPolicy, WorkflowContext, WorkflowError,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

async fn echo(_ctx: WorkflowContext, input: Value) -> Result<Value, WorkflowError> {
    Ok(input)
}

async fn parallel(ctx: WorkflowContext, _input: Value) -> Result<i64, WorkflowError> {
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
    activity_ms: u64,
    timer_ms: u64,
}

async fn race(ctx: WorkflowContext, input: RaceInput) -> Result<String, WorkflowError> {
    // One attempt, with room to finish: the race is between the two, not against retries.
    let options = ActivityOptions::new()
        .start_to_close_timeout(Duration::from_millis(input.activity_ms) + Duration::from_secs(30))
        .retry_policy(RetryPolicy::no_retries());
    let slow = ctx.activity_with::<String>("slow", &input.activity_ms, options);
    match select(slow, ctx.sleep(Duration::from_millis(input.timer_ms))).await {
        Either::Left(result) => Ok(result?),
        Either::Right(fired) => {
            fired?;
            Ok("timer".into())
        }
    }
}

#[derive(Deserialize)]
struct RetryInput {
    fail_times: u32,
    max_attempts: u32,
    #[serde(default)]
    non_retryable: bool,
}

#[derive(Serialize, Deserialize)]
struct FlakyInput {
    fail_times: u32,
    non_retryable: bool,
}

async fn retry(ctx: WorkflowContext, input: RetryInput) -> Result<Value, WorkflowError> {
    let options = ActivityOptions::new().retry_policy(
        RetryPolicy::new()
            .initial_interval(Duration::from_millis(50))
            .backoff_coefficient(2.0)
            .maximum_attempts(input.max_attempts),
    );
    let flaky = FlakyInput {
        fail_times: input.fail_times,
        non_retryable: input.non_retryable,
    };
    match ctx.activity_with::<u32>("flaky", &flaky, options).await {
        Ok(attempts) => Ok(json!({ "attempts": attempts })),
        Err(failed) => Ok(json!({ "failed_kind": failed.kind, "attempts": failed.attempts })),
    }
}

#[derive(Deserialize)]
struct MsInput {
    ms: u64,
}

async fn timeout(ctx: WorkflowContext, input: Option<MsInput>) -> Result<Value, WorkflowError> {
    let ms = input.map_or(5_000, |i| i.ms);
    let options = ActivityOptions::new()
        .start_to_close_timeout(Duration::from_millis(200))
        .retry_policy(
            RetryPolicy::new()
                .maximum_attempts(2)
                .initial_interval(Duration::from_millis(50)),
        );
    match ctx.activity_with::<u32>("hang", &ms, options).await {
        Ok(attempt) => Ok(json!({ "timed_out": false, "attempts": attempt })),
        Err(failed) => Ok(json!({ "timed_out": failed.timed_out, "attempts": failed.attempts })),
    }
}

async fn sleep(ctx: WorkflowContext, input: MsInput) -> Result<Value, WorkflowError> {
    let before = ctx.now_ms();
    ctx.sleep(Duration::from_millis(input.ms)).await?;
    Ok(json!({ "before": before, "after": ctx.now_ms() }))
}

#[derive(Deserialize)]
struct StepsInput {
    n: u32,
}

async fn steps(ctx: WorkflowContext, input: StepsInput) -> Result<u64, WorkflowError> {
    let mut value = 0u64;
    for _ in 0..input.n {
        value = ctx.activity("step", &value).await?;
    }
    Ok(value)
}

#[derive(Deserialize)]
struct HttpStepsInput {
    n: u32,
    url: String,
}

/// `n` activities in sequence, each a GET of `url` (the in-flight benchmark's workload: the
/// activity spends its time waiting on the network).
async fn http_steps(ctx: WorkflowContext, input: HttpStepsInput) -> Result<u32, WorkflowError> {
    let options = ActivityOptions::new()
        .start_to_close_timeout(Duration::from_secs(60))
        .retry_policy(RetryPolicy::new().initial_interval(Duration::from_millis(100)));
    for _ in 0..input.n {
        let _: u16 = ctx
            .activity_with("get", &input.url, options.clone())
            .await?;
    }
    Ok(input.n)
}

fn get(url: String) -> Result<u16, ActivityError> {
    Ok(pinion_sdk::http::Request::get(url)
        .send()?
        .error_for_status()?
        .status())
}

async fn panic_workflow(_ctx: WorkflowContext, _input: Value) -> Result<(), WorkflowError> {
    panic!("boom");
}

async fn spin(_ctx: WorkflowContext, _input: Value) -> Result<(), WorkflowError> {
    let mut x = 0u64;
    loop {
        // black_box: the optimiser must not prove the loop pointless and remove the work.
        x = black_box(x.wrapping_add(1));
    }
}

async fn hog(_ctx: WorkflowContext, _input: Value) -> Result<(), WorkflowError> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // black_box keeps each allocation observable, so none can be elided.
        hoard.push(black_box(vec![1u8; 1 << 20]));
        black_box(&hoard);
    }
}

#[derive(Deserialize)]
struct TypedInput {
    count: u32,
    name: String,
}

async fn typed(_ctx: WorkflowContext, input: TypedInput) -> Result<String, WorkflowError> {
    Ok(format!("{}:{}", input.name, input.count))
}

// ---- Activities ----

fn double(x: i64) -> Result<i64, ActivityError> {
    Ok(x * 2)
}

/// Spins for `ms` of real time. A busy wait rather than a sleep, so the host's CPU limits
/// and interruption (not a blocking host call) decide how it ends.
fn busy_wait(ms: u64) {
    #[allow(
        clippy::disallowed_methods,
        reason = "activities measure real time on purpose"
    )]
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(ms) {
        std::hint::spin_loop();
    }
}

fn slow(ms: u64) -> Result<String, ActivityError> {
    busy_wait(ms);
    Ok("activity".into())
}

/// Fails while the attempt number is at most `fail_times`; returns the attempt that worked.
fn flaky(ctx: ActivityContext, input: FlakyInput) -> Result<u32, ActivityError> {
    if ctx.attempt() <= input.fail_times {
        let message = format!("failing attempt {} of {}", ctx.attempt(), input.fail_times);
        return Err(if input.non_retryable {
            ActivityError::non_retryable("Flaky", message)
        } else {
            ActivityError::retryable("Flaky", message)
        });
    }
    Ok(ctx.attempt())
}

/// Busy-waits `ms`, then returns the attempt number.
fn hang(ctx: ActivityContext, ms: u64) -> Result<u32, ActivityError> {
    busy_wait(ms);
    Ok(ctx.attempt())
}

fn step(x: u64) -> Result<u64, ActivityError> {
    Ok(x + 1)
}

#[derive(Deserialize)]
struct ApprovalInput {
    order: String,
}

/// Waits for a human: signal `approve` carries who approved. Query `state` answers
/// `"waiting"`, then `"approved"`. A cancellation while waiting releases the order first.
async fn approval(ctx: WorkflowContext, input: ApprovalInput) -> Result<String, WorkflowError> {
    let state = Rc::new(RefCell::new("waiting".to_owned()));
    let s = state.clone();
    ctx.register_query("state", move |(): ()| s.borrow().clone());
    match ctx.signal::<String>("approve").await {
        Ok(who) => {
            *state.borrow_mut() = "approved".into();
            Ok(format!("{} approved by {who}", input.order))
        }
        Err(e) if e.is_cancelled() => {
            *state.borrow_mut() = "releasing".into();
            let _: () = ctx.activity("release", &input.order).await?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
struct CollectInput {
    count: u32,
}

/// Sums `count` signals named `add`; signals may arrive before the workflow waits.
async fn collect(ctx: WorkflowContext, input: CollectInput) -> Result<i64, WorkflowError> {
    let total = Rc::new(RefCell::new((0i64, 0u32)));
    let t = total.clone();
    ctx.register_query("total", move |(): ()| t.borrow().0);
    let t = total.clone();
    ctx.register_query("seen", move |(): ()| t.borrow().1);
    let mut adds = ctx.signals::<i64>("add");
    for _ in 0..input.count {
        let x = adds.recv().await?;
        let mut t = total.borrow_mut();
        t.0 += x;
        t.1 += 1;
    }
    let sum = total.borrow().0;
    Ok(sum)
}

#[derive(Deserialize)]
struct BusyInput {
    ms: u64,
}

/// An activity and a long timer at once, so a cancellation has both to cancel.
async fn busy(ctx: WorkflowContext, input: BusyInput) -> Result<String, WorkflowError> {
    let options = ActivityOptions::new()
        .start_to_close_timeout(Duration::from_millis(input.ms) + Duration::from_secs(30))
        .retry_policy(RetryPolicy::no_retries());
    let work = ctx.activity_with::<String>("slow", &input.ms, options);
    let timer = ctx.sleep(Duration::from_secs(3600));
    let (work, timer) = join(work, timer).await;
    if let Some(reason) = ctx.cancel_requested() {
        let _: () = ctx.activity("release", &"busy").await?;
        return Err(WorkflowError::cancelled(reason));
    }
    timer?;
    Ok(work?)
}

#[derive(Deserialize)]
struct FamilyInput {
    #[serde(default)]
    children: u32,
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    approval: bool,
}

/// Runs child workflows and sums their results.
async fn family(ctx: WorkflowContext, input: FamilyInput) -> Result<Value, WorkflowError> {
    if input.approval {
        let r: String = ctx
            .child_workflow("Approval", &json!({ "order": "child-order" }))
            .await?;
        return Ok(json!(r));
    }
    let children = (0..input.children).map(|i| {
        let options = match &input.alias {
            Some(a) => ChildOptions::new().alias(a.clone()),
            None => ChildOptions::new(),
        };
        ctx.child_workflow_with::<u64>("Steps", &json!({ "n": i + 1 }), options)
    });
    let results: Vec<Result<u64, WorkflowError>> = join_all(children.collect::<Vec<_>>()).await;
    let mut sum = 0u64;
    for r in results {
        sum += r?;
    }
    Ok(json!(sum))
}

#[derive(Serialize, Deserialize)]
struct RoundsInput {
    rounds: u32,
    #[serde(default)]
    total: i64,
}

/// Reads one signal `add` per run, then continues as new with the running total.
async fn rounds(ctx: WorkflowContext, input: RoundsInput) -> Result<i64, WorkflowError> {
    let x: i64 = ctx.signal("add").await?;
    let total = input.total + x;
    if input.rounds <= 1 {
        return Ok(total);
    }
    Err(ctx.continue_as_new(&RoundsInput {
        rounds: input.rounds - 1,
        total,
    }))
}

#[derive(Deserialize)]
struct RelayInput {
    sleep_ms: u64,
    nap_ms: u64,
}

/// One of each kind of wait: an activity, a timer, a signal, and an activity that takes
/// real time (so a server killed mid-run leaves attempts in flight).
async fn relay(ctx: WorkflowContext, input: RelayInput) -> Result<u64, WorkflowError> {
    let first: u64 = ctx.activity("step", &0u64).await?;
    ctx.sleep(Duration::from_millis(input.sleep_ms)).await?;
    let go: u64 = ctx.signal("go").await?;
    let options = ActivityOptions::new()
        .start_to_close_timeout(Duration::from_secs(60))
        .retry_policy(RetryPolicy::new().initial_interval(Duration::from_millis(100)));
    let second: u64 = ctx
        .activity_with("nap", &(first, input.nap_ms), options)
        .await?;
    Ok(go + second)
}

/// `x + 1` after sleeping `ms` of real time (in `poll_oneoff`: no CPU used).
fn nap((x, ms): (u64, u64)) -> Result<u64, ActivityError> {
    std::thread::sleep(Duration::from_millis(ms));
    Ok(x + 1)
}

fn release(what: String) -> Result<(), ActivityError> {
    println!("released {what}");
    Ok(())
}

pinion_sdk::export! {
    version: "v1",
    workflows: {
        "Echo" => echo,
        "Parallel" => parallel,
        "Race" => race,
        "Retry" => retry,
        "Timeout" => timeout,
        "Sleep" => sleep,
        "Steps" => steps,
        "Panic" => panic_workflow,
        "Spin" => spin,
        "Hog" => hog,
        "Typed" => typed,
        "Approval" => approval,
        "Collect" => collect,
        "Busy" => busy,
        "Family" => family,
        "Rounds" => rounds,
        "HttpSteps" => http_steps,
        "Relay" => relay,
    },
    activities: {
        "double" => double,
        "slow" => slow,
        "flaky" => flaky,
        "hang" => hang,
        "step" => step,
        "release" => release,
        "get" => get,
        "nap" => nap,
    },
}
