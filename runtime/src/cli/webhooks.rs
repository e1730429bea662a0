//! `pinion webhooks dead-letters [--redeliver ID]`: the events webhooks gave up on.
//!
//! Listing reads the database (read-only) or, with `--server`, asks the server. Redelivery
//! needs `--server`: only the server holds the webhooks' signing secret, so it sends the
//! event itself and says whether the endpoint acknowledged it.

use super::display::{time, Align, Table};
use super::print::print_json;
use super::{replay::open_read_only, usage, Cli, Client, Failure};
use crate::engine::Error;
use crate::store::DeadLetter;

/// Exit code when a redelivery was not acknowledged (the dead letter stays).
pub const EXIT_NOT_DELIVERED: i32 = 1;

pub(super) fn dead_letters(cli: &Cli, json: bool, redeliver: Option<u64>) -> Result<i32, Failure> {
    let client = match &cli.server {
        Some(url) => Some(Client::with_ca(
            url,
            super::client_token(cli)?,
            cli.ca_file.as_deref(),
        )?),
        None => None,
    };
    if let Some(id) = redeliver {
        let Some(client) = client else {
            return Err(usage(
                "`pinion webhooks dead-letters --redeliver` needs --server URL (or PINION_SERVER): the server holds the webhook secret and sends the event",
            ));
        };
        let r = client.redeliver(id)?;
        if json {
            print_json(&r);
        } else if r.delivered {
            println!(
                "redelivered dead letter {id} (event {}) to {}",
                r.event_id, r.webhook
            );
        } else {
            eprintln!(
                "dead letter {id} (event {}) was not delivered to {}: {}",
                r.event_id,
                r.webhook,
                r.error.as_deref().unwrap_or("no reason given")
            );
        }
        return Ok(if r.delivered { 0 } else { EXIT_NOT_DELIVERED });
    }
    let letters = match client {
        Some(c) => c.dead_letters()?,
        None => open_read_only(&cli.db)?
            .store()
            .dead_letters()
            .map_err(Error::from)?,
    };
    if json {
        print_json(&letters);
    } else {
        print(&letters);
    }
    Ok(0)
}

fn print(letters: &[DeadLetter]) {
    if letters.is_empty() {
        println!("no dead letters");
        return;
    }
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("EVENT", Align::Right),
        ("TYPE", Align::Left),
        ("INSTANCE", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("LAST TRY", Align::Left),
        ("WEBHOOK", Align::Left),
        ("LAST ERROR", Align::Left),
    ]);
    for d in letters {
        table.row(vec![
            d.id.to_string(),
            d.event.id.to_string(),
            d.event.transition.name().to_owned(),
            d.event.instance_id.0.clone(),
            d.attempts.to_string(),
            time(d.updated_at_ms),
            d.webhook.clone(),
            d.last_error.clone(),
        ]);
    }
    table.print();
}
