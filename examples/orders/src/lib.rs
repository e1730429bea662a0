//! Order processing: a realistic workflow with compensation, a deadline, retries with
//! backoff and parallel fan-out.
//!
//! Workflow `"ProcessOrder"`:
//!
//! 1. `reserve_inventory` for the order's items.
//! 2. `charge_payment`, raced against a durable timer of `payment_deadline_ms` with
//!    [`select`]. It POSTs the charge over HTTP to a payment service (`payment_service.py`
//!    beside this crate) at `$PAYMENT_URL`, authenticated with the secret `$PAY_API_KEY`:
//!    both come from the operator's grants, not from the code. The service is flaky on
//!    request: it answers 503 (retryable kind `"GatewayUnavailable"`) to the first
//!    `gateway_failures` requests of a charge, so the retry policy (100 ms initial
//!    interval, backoff 2.0) is exercised.
//!    - deadline first → `release_inventory` (compensation), fail `"PaymentDeadlineExceeded"`;
//!    - card `4000-0000-0000-0002` → non-retryable `"PaymentDeclined"` → `release_inventory`,
//!      fail `"PaymentDeclined"`;
//!    - any other final payment failure → `release_inventory`, fail `"PaymentFailed"`.
//! 3. Three notifications in parallel with [`join3`]: `send_confirmation_email`, `send_sms`,
//!    `notify_warehouse`. A failed notification is logged, not fatal: the money is taken.
//! 4. `write_receipt` writes the receipt as JSON to `/receipts/<order_id>.json`, a
//!    directory the operator grants read-write.
//! 5. Returns the receipt: `{order_id, total_cents, charge_id, reservation_id, notified,
//!    receipt_file}`.
//!
//! What the activities need granted (`pinion.toml`; the demo writes one):
//!
//! ```toml
//! secrets_file = "secrets.toml"            # PAY_API_KEY = "..."
//! [[grant]]
//! modules = ["label:orders-v1"]
//! activities = ["charge_payment"]
//! http = ["http://127.0.0.1:8080"]         # where the payment service listens
//! env = ["PAYMENT_URL"]
//! secrets = ["PAY_API_KEY"]
//! [[grant]]
//! modules = ["label:orders-v1"]
//! activities = ["write_receipt"]
//! dirs = [{ host = "receipts", guest = "/receipts", mode = "rw" }]
//! ```
//!
//! The charge carries an idempotency key drawn from the workflow's seeded PRNG
//! ([`WorkflowContext::uuid`]): it is the same on every retry and on replay, which is what a
//! real payment gateway needs to avoid charging twice.
//!
//! Example input:
//!
//! ```json
//! {"order_id": "o-1", "customer": "ada@example.com",
//!  "items": [{"sku": "BOOK", "qty": 2, "price_cents": 1250}],
//!  "card": "4242-4242-4242-4242", "payment_deadline_ms": 60000, "gateway_failures": 2}
//! ```
//!
//! Build: `cargo build --release --target wasm32-wasip1 --manifest-path examples/Cargo.toml`
//! (produces `orders.wasm`).

use std::time::Duration;

use pinion_sdk::http::Request;
use pinion_sdk::{
    join3, select, ActivityContext, ActivityError, ActivityFailed, ActivityOptions, Either,
    RetryPolicy, WorkflowContext, WorkflowError,
};
use serde::{Deserialize, Serialize};

/// One order line.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Item {
    sku: String,
    qty: u32,
    price_cents: u64,
}

/// Workflow input.
#[derive(Debug, Deserialize)]
struct Order {
    order_id: String,
    customer: String,
    items: Vec<Item>,
    card: String,
    /// How long the payment may take, retries included.
    #[serde(default = "default_deadline_ms")]
    payment_deadline_ms: u64,
    /// Test knob: the gateway fails this many attempts before it works.
    #[serde(default)]
    gateway_failures: u32,
}

fn default_deadline_ms() -> u64 {
    60_000
}

#[derive(Debug, Serialize, Deserialize)]
struct Reservation {
    order_id: String,
    items: Vec<Item>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ChargeRequest {
    order_id: String,
    card: String,
    amount_cents: u64,
    idempotency_key: String,
    gateway_failures: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    order_id: String,
    customer: String,
    total_cents: u64,
}

/// What the workflow returns, and what `write_receipt` stores.
#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    order_id: String,
    total_cents: u64,
    charge_id: String,
    reservation_id: String,
    /// Channels that were notified successfully, in a fixed order.
    notified: Vec<String>,
    /// Where the receipt was written (in the activity's view of the file system).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    receipt_file: String,
}

/// The payment service's answer to a charge.
#[derive(Debug, Deserialize)]
struct Charged {
    charge_id: String,
}

/// Retries quickly: these are in-process fakes, and the tests should not wait long.
fn quick_retries() -> ActivityOptions {
    ActivityOptions::new()
        .start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(
            RetryPolicy::new()
                .initial_interval(Duration::from_millis(100))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(2))
                .maximum_attempts(10),
        )
}

async fn process_order(ctx: WorkflowContext, order: Order) -> Result<Receipt, WorkflowError> {
    if order.items.is_empty() || order.items.iter().any(|i| i.qty == 0) {
        return Err(WorkflowError::new(
            "InvalidOrder",
            "an order needs items with a positive quantity",
        ));
    }
    let total_cents: u64 = order
        .items
        .iter()
        .map(|i| u64::from(i.qty) * i.price_cents)
        .sum();
    ctx.info(format!(
        "order {}: {} cents for {}",
        order.order_id, total_cents, order.customer
    ));

    let reservation = Reservation {
        order_id: order.order_id.clone(),
        items: order.items.clone(),
    };
    let reservation_id: String = ctx
        .activity_with("reserve_inventory", &reservation, quick_retries())
        .await?;

    let charge = ctx.activity_with::<String>(
        "charge_payment",
        &ChargeRequest {
            order_id: order.order_id.clone(),
            card: order.card.clone(),
            amount_cents: total_cents,
            idempotency_key: ctx.uuid(),
            gateway_failures: order.gateway_failures,
        },
        quick_retries(),
    );
    let deadline = ctx.sleep(Duration::from_millis(order.payment_deadline_ms));
    let charge_id = match select(charge, deadline).await {
        Either::Left(Ok(charge_id)) => charge_id,
        // A cancellation of the order while it waits for payment cancels the charge: release
        // the stock, then end cancelled.
        Either::Left(Err(failed)) if failed.is_cancelled() => {
            release(&ctx, &reservation_id).await?;
            return Err(failed.into());
        }
        Either::Left(Err(failed)) => {
            release(&ctx, &reservation_id).await?;
            return Err(payment_error(failed));
        }
        Either::Right(fired) => {
            fired?;
            release(&ctx, &reservation_id).await?;
            return Err(WorkflowError::new(
                "PaymentDeadlineExceeded",
                format!(
                    "payment not confirmed within {} ms",
                    order.payment_deadline_ms
                ),
            ));
        }
    };

    let notice = Notice {
        order_id: order.order_id.clone(),
        customer: order.customer.clone(),
        total_cents,
    };
    let (email, sms, warehouse) = join3(
        ctx.activity_with::<String>("send_confirmation_email", &notice, quick_retries()),
        ctx.activity_with::<String>("send_sms", &notice, quick_retries()),
        ctx.activity_with::<String>("notify_warehouse", &reservation, quick_retries()),
    )
    .await;
    let mut notified = Vec::new();
    for result in [email, sms, warehouse] {
        match result {
            Ok(channel) => notified.push(channel),
            Err(failed) => ctx.warn(format!("notification failed: {failed}")),
        }
    }

    let mut receipt = Receipt {
        order_id: order.order_id,
        total_cents,
        charge_id,
        reservation_id,
        notified,
        receipt_file: String::new(),
    };
    receipt.receipt_file = ctx
        .activity_with("write_receipt", &receipt, quick_retries())
        .await?;
    Ok(receipt)
}

/// Compensation: give the reserved stock back.
async fn release(ctx: &WorkflowContext, reservation_id: &str) -> Result<(), WorkflowError> {
    ctx.warn(format!("releasing reservation {reservation_id}"));
    ctx.activity_with::<()>("release_inventory", reservation_id, quick_retries())
        .await?;
    Ok(())
}

fn payment_error(failed: ActivityFailed) -> WorkflowError {
    let kind = if failed.kind == "PaymentDeclined" {
        "PaymentDeclined"
    } else {
        "PaymentFailed"
    };
    WorkflowError::new(kind, failed.to_string())
}

// ---- Activities: inventory and notifications are in-process stand-ins; the payment and
// the receipt reach the world through what the operator grants ----

fn reserve_inventory(reservation: Reservation) -> Result<String, ActivityError> {
    let units: u32 = reservation.items.iter().map(|i| i.qty).sum();
    eprintln!(
        "reserved {units} unit(s) for order {}",
        reservation.order_id
    );
    Ok(format!("res-{}", reservation.order_id))
}

fn release_inventory(reservation_id: String) -> Result<(), ActivityError> {
    eprintln!("released {reservation_id}");
    Ok(())
}

fn granted(name: &str) -> Result<String, ActivityError> {
    std::env::var(name).map_err(|_| {
        ActivityError::non_retryable(
            "NotGranted",
            format!("{name} is not set: grant it to charge_payment in pinion.toml"),
        )
    })
}

/// Charges the card through the payment service. The idempotency key makes a retried
/// request return the first charge instead of charging twice.
fn charge_payment(ctx: ActivityContext, req: ChargeRequest) -> Result<String, ActivityError> {
    let base = granted("PAYMENT_URL")?;
    let key = granted("PAY_API_KEY")?;
    let resp = Request::post(format!("{}/charges", base.trim_end_matches('/')))
        .bearer(&key)
        .json(&req)
        .timeout(Duration::from_secs(5))
        .send()?;
    match resp.status() {
        200 | 201 => {
            let charged: Charged = resp.json()?;
            eprintln!(
                "charged {} cents for order {} on attempt {}: {}",
                req.amount_cents,
                req.order_id,
                ctx.attempt(),
                charged.charge_id
            );
            Ok(charged.charge_id)
        }
        402 => Err(ActivityError::non_retryable(
            "PaymentDeclined",
            format!("card {} was declined", req.card),
        )),
        s if s >= 500 => Err(ActivityError::retryable(
            "GatewayUnavailable",
            format!(
                "payment service answered {s} (attempt {} of order {})",
                ctx.attempt(),
                req.order_id
            ),
        )),
        s => Err(ActivityError::non_retryable(
            "PaymentRejected",
            format!("payment service answered {s}: {}", resp.text()),
        )),
    }
}

/// Writes the receipt into the granted `/receipts` directory; returns the file's path.
fn write_receipt(receipt: Receipt) -> Result<String, ActivityError> {
    // The order id comes from the workflow's input and names the file: only plain names.
    let id = &receipt.order_id;
    if id.is_empty()
        || id.len() > 100
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ActivityError::non_retryable(
            "InvalidOrderId",
            format!("order id {id:?} cannot name a receipt file: use 1 to 100 letters, digits, '-' or '_'"),
        ));
    }
    let path = format!("/receipts/{id}.json");
    let json = serde_json::to_vec_pretty(&receipt)
        .map_err(|e| ActivityError::non_retryable("InvalidReceipt", e.to_string()))?;
    std::fs::write(&path, json).map_err(|e| {
        ActivityError::non_retryable(
            "ReceiptNotWritten",
            format!("{path}: {e}; grant /receipts read-write to write_receipt in pinion.toml"),
        )
    })?;
    eprintln!("receipt written to {path}");
    Ok(path)
}

fn send_confirmation_email(notice: Notice) -> Result<String, ActivityError> {
    eprintln!(
        "email to {}: order {} confirmed ({} cents)",
        notice.customer, notice.order_id, notice.total_cents
    );
    Ok("email".into())
}

fn send_sms(notice: Notice) -> Result<String, ActivityError> {
    eprintln!(
        "sms to {}: order {} confirmed",
        notice.customer, notice.order_id
    );
    Ok("sms".into())
}

fn notify_warehouse(reservation: Reservation) -> Result<String, ActivityError> {
    eprintln!(
        "warehouse: ship order {} ({} line(s))",
        reservation.order_id,
        reservation.items.len()
    );
    Ok("warehouse".into())
}

pinion_sdk::export! {
    version: "orders-v1",
    workflows: { "ProcessOrder" => process_order },
    activities: {
        "reserve_inventory" => reserve_inventory,
        "release_inventory" => release_inventory,
        "charge_payment" => charge_payment,
        "send_confirmation_email" => send_confirmation_email,
        "send_sms" => send_sms,
        "notify_warehouse" => notify_warehouse,
        "write_receipt" => write_receipt,
    },
}
