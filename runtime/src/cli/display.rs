//! How the text output looks: times, tables and how much of a long reason to show.
//!
//! The engine records times as epoch milliseconds, and `--json` keeps them that way so
//! scripts get numbers. People get RFC 3339 instead (`2026-11-26T14:05:20.799+01:00`), in
//! the system's time zone or in UTC (`--time utc`), with milliseconds because steps of
//! one instance are often less than a second apart. jiff formats them: it reads the time
//! zone from `$TZ` or `/etc/localtime` itself, safely in a process with threads (the `time`
//! crate refuses local offsets there).
//!
//! The settings are process-wide, set once from the flags before a verb runs ([`init`]),
//! like the terminal's locale: every printer of every verb reads them, and threading them
//! through each call would change nothing but the signatures.
//!
//! Tables ([`Table`]) size every column to its widest cell, header included, so rows line
//! up whatever the ids, types and hashes are.

use std::sync::OnceLock;

use clap::ValueEnum;

/// The time zone of times in text output (`--time`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TimeZoneChoice {
    /// The system's time zone (`$TZ`, else `/etc/localtime`).
    #[default]
    Local,
    /// UTC, with a `Z`.
    Utc,
}

/// Text-output settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Display {
    /// Time zone of printed times.
    pub time: TimeZoneChoice,
    /// Print long reasons whole (the wasm backtrace of a trap).
    pub verbose: bool,
}

static DISPLAY: OnceLock<Display> = OnceLock::new();

/// Sets the settings for this process (the first call wins).
pub fn init(display: Display) {
    let _ = DISPLAY.set(display);
}

fn settings() -> Display {
    DISPLAY.get().copied().unwrap_or_default()
}

/// True when `--verbose` was given.
pub fn verbose() -> bool {
    settings().verbose
}

/// An epoch-milliseconds time as RFC 3339 with milliseconds, in the chosen time zone.
pub fn time(ms: u64) -> String {
    format_time(ms, settings().time)
}

/// [`time`] in an explicit zone.
pub fn format_time(ms: u64, zone: TimeZoneChoice) -> String {
    let Ok(ts) = i64::try_from(ms)
        .map_err(|_| ())
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).map_err(|_| ()))
    else {
        // Out of jiff's range (year 9999): say what was recorded rather than nothing.
        return format!("{ms} ms");
    };
    match zone {
        TimeZoneChoice::Utc => ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        TimeZoneChoice::Local => ts
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string(),
    }
}

/// A blocked or failure reason as people read it: whole with `--verbose`, else
/// [`short_reason`].
pub fn reason(text: &str) -> String {
    if verbose() {
        return text.to_owned();
    }
    short_reason(text).unwrap_or_else(|| text.to_owned())
}

/// The short form of a trap's reason, leading with what matters: the guest's panic message
/// (and where it panicked), else the trap itself, then the context the engine gave and a
/// pointer to `--verbose` for the wasm backtrace. `None` when the reason is not a trap's.
///
/// A trap reads `CONTEXT: guest trapped: error while executing at wasm backtrace:\n 0: ...
/// \n 14: ...: wasm trap: CAUSE; guest stderr: thread '..' panicked at LOC:\nMESSAGE\nnote: ...`;
/// the one useful line comes last, after a dozen anonymous frames.
pub fn short_reason(text: &str) -> Option<String> {
    let (context, trap) = text.split_once("guest trapped: ")?;
    let (trap, stderr) = match trap.split_once("; guest stderr: ") {
        Some((t, s)) => (t, Some(s)),
        None => (trap, None),
    };
    let mut notes = Vec::new();
    let lead = match stderr.and_then(panic_message) {
        Some((message, at)) => {
            notes.push(match at {
                Some(at) => format!("guest panicked at {at}"),
                None => "guest panicked".to_owned(),
            });
            message
        }
        None => match trap.rfind("wasm trap: ") {
            Some(i) => trap[i..].trim().to_owned(),
            None => trap.lines().next().unwrap_or(trap).trim().to_owned(),
        },
    };
    let context = context.trim().trim_end_matches(':').trim();
    if !context.is_empty() {
        notes.push(context.to_owned());
    }
    if trap.contains("wasm backtrace") {
        notes.push("--verbose shows the wasm backtrace".to_owned());
    }
    Some(format!("{lead} ({})", notes.join("; ")))
}

/// The message and location of a Rust panic in what a guest wrote to stderr:
/// `thread '<unnamed>' panicked at src/lib.rs:1:2:` then the message, up to `note: ...`.
fn panic_message(stderr: &str) -> Option<(String, Option<String>)> {
    let mut lines = stderr.lines();
    let head = lines.by_ref().find(|l| l.contains(" panicked at "))?;
    let at = head.split_once(" panicked at ")?.1.trim();
    if let Some(loc) = at.strip_suffix(':') {
        let message: Vec<&str> = lines.take_while(|l| !l.starts_with("note: ")).collect();
        let message = message.join("\n").trim().to_owned();
        return (!message.is_empty()).then(|| (message, Some(loc.to_owned())));
    }
    // Before Rust 1.73: `panicked at 'MESSAGE', LOC`.
    let (message, loc) = at.strip_prefix('\'')?.rsplit_once("', ")?;
    Some((message.to_owned(), Some(loc.to_owned())))
}

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A text table: a header and rows, printed with every column as wide as its widest cell
/// and two spaces between columns; the last column is not padded.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The widths of the columns: the widest cell of each, header included.
    pub fn widths(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .chain([name.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// The rows added.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// The header laid out with the given widths.
    pub fn header(&self, widths: &[usize]) -> String {
        let names: Vec<String> = self.columns.iter().map(|(n, _)| n.to_string()).collect();
        self.line(&names, widths)
    }

    /// The header and rows as lines, without trailing spaces.
    pub fn lines(&self) -> Vec<String> {
        let widths = self.widths();
        std::iter::once(self.header(&widths))
            .chain(self.rows.iter().map(|cells| self.line(cells, &widths)))
            .collect()
    }

    /// One row laid out with the given widths (a streamed table keeps the widths of its
    /// first part, [`Table::widths`] at least).
    pub fn line(&self, cells: &[String], widths: &[usize]) -> String {
        let mut out = String::new();
        let last = self.columns.len().saturating_sub(1);
        for (i, (_, align)) in self.columns.iter().enumerate() {
            let cell = cells.get(i).map(String::as_str).unwrap_or("");
            let w = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                out.push_str("  ");
            }
            match align {
                Align::Right => out.push_str(&format!("{cell:>w$}")),
                Align::Left if i == last => out.push_str(cell),
                Align::Left => out.push_str(&format!("{cell:<w$}")),
            }
        }
        out.truncate(out.trim_end().len());
        out
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        for l in self.lines() {
            println!("{l}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_whatever_the_values() {
        let mut t = Table::new(&[("ID", Align::Left), ("N", Align::Right), ("X", Align::Left)]);
        t.row(vec!["a".into(), "1".into(), "first".into()]);
        t.row(vec![
            "a-much-longer-id-than-the-header".into(),
            "12345".into(),
            "second".into(),
        ]);
        let lines = t.lines();
        assert_eq!(
            lines,
            vec![
                "ID                                    N  X",
                "a                                     1  first",
                "a-much-longer-id-than-the-header  12345  second",
            ]
        );
    }

    const TRAP: &str = "workflow task failed at event #2: guest trapped: error while executing at wasm backtrace:\n    0:  0x33b65 - <unknown>!<wasm function 494>\n   14:  0x375f3 - <unknown>!<wasm function 530>: wasm trap: wasm `unreachable` instruction executed; guest stderr: thread '<unnamed>' (1) panicked at testkit/src/lib.rs:172:5:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";

    #[test]
    fn a_trap_reason_leads_with_the_panic_message_and_drops_the_backtrace() {
        assert_eq!(
            short_reason(TRAP).unwrap(),
            "boom (guest panicked at testkit/src/lib.rs:172:5; workflow task failed at event #2; --verbose shows the wasm backtrace)"
        );
        let no_panic = TRAP.split("; guest stderr").next().unwrap();
        assert_eq!(
            short_reason(no_panic).unwrap(),
            "wasm trap: wasm `unreachable` instruction executed (workflow task failed at event #2; --verbose shows the wasm backtrace)"
        );
        assert_eq!(short_reason("nondeterminism at event #5"), None);
    }

    #[test]
    fn utc_times_are_rfc3339_with_milliseconds_and_z() {
        assert_eq!(
            format_time(1_795_896_320_799, TimeZoneChoice::Utc),
            "2026-11-28T20:05:20.799Z"
        );
        assert_eq!(
            format_time(0, TimeZoneChoice::Utc),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn local_times_carry_their_offset() {
        let t = format_time(1_795_896_320_799, TimeZoneChoice::Local);
        // `+HH:MM` or `-HH:MM` at the end, whatever the machine's zone.
        let offset = &t[t.len() - 6..];
        assert!(
            (offset.starts_with('+') || offset.starts_with('-')) && &offset[3..4] == ":",
            "{t}"
        );
        assert_eq!(&t[10..11], "T", "{t}");
    }
}
