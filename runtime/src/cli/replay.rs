//! `pinion replay`, `pinion history export|import` and `pinion deploy --verify`: the verbs
//! that move histories around and replay them.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use serde_json::json;

use super::args::{FilterArgs, HistoryAction, ReplayArgs};
use super::print::print_json;
use super::Failure;
use crate::api::types::{Candidate, ReplayQuery, ReplayResponse};
use crate::api::Api;
use crate::clock::{Clock, SystemClock};
use crate::engine::{Error, Pinion, PinionConfig};
use crate::history::{HistoryExport, InstanceId, InstanceStatus};
use crate::replay::{
    history_files, read_history_file, ReplayOptions, ReplayReport, ReplaySummary, Replayer,
};
use crate::rollout::StoredRun;
use crate::store::InstanceFilter;

/// Exit code when replay finds a divergence or failure.
pub const EXIT_DIVERGED: i32 = 8;

/// Bad syntax (exit 2): arguments that do not go together.
fn usage(msg: String) -> Failure {
    Failure {
        code: 2,
        error: anyhow!(msg),
    }
}

/// Parses `500ms`, `30s`, `15m`, `2h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration `{s}`: use a number and a unit, like 30s, 15m, 2h or 7d")
    })?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1_000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => {
            return Err(format!(
                "invalid duration `{s}`: unit must be ms, s, m, h or d"
            ))
        }
    };
    Ok(Duration::from_millis(ms))
}

/// FNV-1a: a stable hash, so `--sample` picks the same instances on every run.
fn sampled(id: &str, rate: f64) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    ((h % 1_000_000) as f64) < rate * 1_000_000.0
}

fn to_filter(
    args: &FilterArgs,
    default_status: Option<InstanceStatus>,
) -> Result<(InstanceFilter, Option<f64>), Failure> {
    let status = match args.status.as_deref() {
        None => default_status,
        Some("all") => None,
        Some(s) => Some(InstanceStatus::parse(s).ok_or_else(|| {
            usage(format!(
                "unknown status `{s}`; use running, blocked, completed, failed, cancelled, terminated or all"
            ))
        })?),
    };
    let created_since_ms = match &args.since {
        Some(s) => Some(
            SystemClock
                .now_ms()
                .saturating_sub(parse_duration(s).map_err(usage)?.as_millis() as u64),
        ),
        None => None,
    };
    if let Some(r) = args.sample {
        if !(r > 0.0 && r <= 1.0) {
            return Err(usage(format!(
                "--sample {r} is out of range: use a rate in (0, 1]"
            )));
        }
    }
    Ok((
        InstanceFilter {
            status,
            workflow_type: args.workflow_type.clone(),
            module_hash: None,
            created_since_ms,
            ids: args.ids.iter().map(|i| InstanceId(i.clone())).collect(),
            limit: args.limit,
            after: None,
        },
        args.sample,
    ))
}

/// Opens the database read-only: replay and export must not change it.
pub fn open_read_only(db: &Path) -> Result<Pinion, Failure> {
    let mut config = PinionConfig::new(db);
    config.sqlite.read_only = true;
    Ok(Pinion::open(config)?)
}

/// Histories matching the filter, newest first; with `all_runs`, each instance's archived
/// runs (oldest first) before its current one.
fn histories(
    p: &Pinion,
    filter: &InstanceFilter,
    sample: Option<f64>,
    all_runs: bool,
) -> Result<Vec<HistoryExport>, Failure> {
    let mut out = Vec::new();
    for rec in p.list(filter)? {
        if sample.is_some_and(|r| !sampled(&rec.id.0, r)) {
            continue;
        }
        for run in StoredRun::of(&rec, all_runs) {
            let h = match run.run {
                None => p.store().export_history(&rec.id),
                Some(n) => p.store().export_run(&rec.id, n),
            };
            if let Some(h) = h.map_err(Error::from)? {
                out.push(h);
            }
        }
    }
    Ok(out)
}

/// The file an exported history goes to: `<id>.json` for an instance's current run,
/// `<id>@run<N>.json` for an archived one (as `purge --export` names them).
fn export_file_name(h: &HistoryExport) -> String {
    if h.status == InstanceStatus::ContinuedAsNew {
        run_file_name(&h.instance_id.0, h.run)
    } else {
        history_file_name(&h.instance_id.0)
    }
}

/// Replays `hs` on every core (printing progress on stderr while it runs), then prints the
/// reports that need attention (text mode), in the order of `hs`. Returns every report.
fn replay_all(
    replayer: &Replayer,
    hs: &[HistoryExport],
    json: bool,
) -> Result<(ReplaySummary, Vec<ReplayReport>), Failure> {
    let progress = crate::engine::Progress::new();
    progress.add_total(hs.len() as u64);
    let reports = super::progress::watch(&progress, "replayed", || {
        crate::pool::run_each(hs.len(), crate::pool::default_threads(), &progress, |i| {
            Ok(Some(replayer.replay(&hs[i])))
        })
    })?;
    let mut summary = ReplaySummary::default();
    for r in &reports {
        summary.add(r);
        if !json && (!r.is_compatible() || !r.warnings.is_empty()) {
            println!("{r}");
        }
    }
    Ok((summary, reports))
}

fn module_bytes(spec: &str, db: &Path) -> Result<Vec<u8>, Failure> {
    let path = Path::new(spec);
    if path.is_file() {
        return std::fs::read(path)
            .with_context(|| format!("reading {spec}"))
            .map_err(|e| Failure { code: 4, error: e });
    }
    if spec.ends_with(".wasm") {
        return Err(Failure {
            code: 4,
            error: anyhow!("{spec}: no such file"),
        });
    }
    let p = open_read_only(db)?;
    let m = p.registry().resolve(spec).map_err(Error::from)?;
    p.store()
        .module_bytes(&m.hash)
        .map_err(Error::from)?
        .ok_or_else(|| Failure {
            code: 3,
            error: anyhow!("module {} has no stored bytes", m.hash),
        })
}

/// `pinion replay`.
pub fn replay(db: &Path, json: bool, args: &ReplayArgs) -> Result<i32, Failure> {
    let bytes = module_bytes(&args.module, db)?;
    let options = ReplayOptions {
        strict_inputs: args.strict_inputs,
    };
    let replayer = Replayer::from_bytes(&bytes, options).map_err(|e| Failure {
        code: 4,
        error: e.into(),
    })?;
    if args.follow {
        return follow(db, json, args, &replayer);
    }
    let hs = if args.history.is_empty() {
        let p = open_read_only(db)?;
        // Asking for instances by id means those instances, whatever their status.
        let default_status = if args.filter.ids.is_empty() {
            Some(InstanceStatus::Running)
        } else {
            None
        };
        let (filter, sample) = to_filter(&args.filter, default_status)?;
        let exported = replayer.manifest().workflows.clone();
        let mut hs = histories(&p, &filter, sample, args.filter.all_runs)?;
        if filter.workflow_type.is_none() {
            // Without an explicit type, replay only the types the candidate exports.
            hs.retain(|h| exported.contains(&h.workflow_type));
        }
        hs
    } else {
        let mut hs = Vec::new();
        for path in &args.history {
            for file in history_files(path).map_err(|e| Failure {
                code: 4,
                error: e.into(),
            })? {
                hs.push(read_history_file(&file).map_err(|e| Failure {
                    code: 4,
                    error: e.into(),
                })?);
            }
        }
        hs
    };
    let (summary, reports) = replay_all(&replayer, &hs, json)?;
    if json {
        print_json(&ReplayResponse {
            module: replayer.module_hash().clone(),
            summary,
            reports,
        });
    } else {
        println!("{summary}");
    }
    Ok(if summary.ok() { 0 } else { EXIT_DIVERGED })
}

/// `pinion replay --server URL`: the server replays histories from its database against
/// the candidate (uploaded when it is a file here, else named by hash, prefix or alias).
pub fn replay_remote(api: &dyn Api, json: bool, args: &ReplayArgs) -> Result<i32, Failure> {
    let unsupported = [
        (args.follow, "--follow"),
        (args.filter.since.is_some(), "--since"),
        (args.filter.sample.is_some(), "--sample"),
    ];
    if let Some((_, flag)) = unsupported.iter().find(|(given, _)| *given) {
        return Err(Failure {
            code: 2,
            error: anyhow!("replay {flag} needs the database: drop --server and use --db"),
        });
    }
    let path = Path::new(&args.module);
    let candidate = if path.is_file() {
        Candidate::Bytes(
            std::fs::read(path)
                .with_context(|| format!("reading {}", args.module))
                .map_err(|e| Failure { code: 4, error: e })?,
        )
    } else if args.module.ends_with(".wasm") {
        return Err(Failure {
            code: 4,
            error: anyhow!("{}: no such file", args.module),
        });
    } else {
        Candidate::Module(args.module.clone())
    };
    let r = api.replay(
        &candidate,
        &ReplayQuery {
            workflow_type: args.filter.workflow_type.clone(),
            status: args.filter.status.clone(),
            ids: args.filter.ids.clone(),
            limit: args.filter.limit,
            strict_inputs: args.strict_inputs,
            all_runs: args.filter.all_runs,
        },
    )?;
    if json {
        print_json(&r);
    } else {
        for report in &r.reports {
            if !report.is_compatible() || !report.warnings.is_empty() {
                println!("{report}");
            }
        }
        println!("{}", r.summary);
    }
    Ok(if r.summary.ok() { 0 } else { EXIT_DIVERGED })
}

/// Shadow mode: replay new and changed histories every interval; report each new
/// divergence once.
fn follow(db: &Path, json: bool, args: &ReplayArgs, replayer: &Replayer) -> Result<i32, Failure> {
    let interval = parse_duration(&args.interval).map_err(usage)?;
    let (filter, sample) = to_filter(&args.filter, Some(InstanceStatus::Running))?;
    let exported = replayer.manifest().workflows.clone();
    let mut seen: HashMap<(String, u32), usize> = HashMap::new();
    let mut reported: std::collections::HashSet<(String, String)> = Default::default();
    if !json {
        eprintln!(
            "following {} every {interval:?}; Ctrl-C to stop",
            db.display()
        );
    }
    loop {
        let p = open_read_only(db)?;
        for h in histories(&p, &filter, sample, args.filter.all_runs)? {
            if filter.workflow_type.is_none() && !exported.contains(&h.workflow_type) {
                continue;
            }
            let key = (h.instance_id.0.clone(), h.run);
            if seen.get(&key) == Some(&h.events.len()) {
                continue;
            }
            seen.insert(key, h.events.len());
            let r = replayer.replay(&h);
            if r.is_compatible() {
                continue;
            }
            let key = (
                r.label(),
                serde_json::to_string(&r.outcome).unwrap_or_default(),
            );
            if reported.insert(key) {
                if json {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                } else {
                    println!("{r}");
                }
                let _ = std::io::stdout().flush();
            }
        }
        drop(p);
        std::thread::sleep(interval);
    }
}

/// `pinion history export | import`.
pub fn history_action(db: &Path, json: bool, action: &HistoryAction) -> Result<i32, Failure> {
    match action {
        HistoryAction::Export {
            id,
            all,
            filter,
            out,
        } => {
            let p = open_read_only(db)?;
            let hs = match (id, all) {
                (Some(id), false) => {
                    let mut f = InstanceFilter::default();
                    f.ids.push(InstanceId(id.clone()));
                    let hs = histories(&p, &f, None, filter.all_runs)?;
                    if hs.is_empty() {
                        return Err(Error::UnknownInstance(id.clone()).into());
                    }
                    hs
                }
                (None, true) => {
                    let (f, sample) = to_filter(filter, None)?;
                    histories(&p, &f, sample, filter.all_runs)?
                }
                _ => return Err(usage("give either an instance id or --all".into())),
            };
            match out {
                None if hs.len() == 1 => println!(
                    "{}",
                    serde_json::to_string_pretty(&hs[0]).context("encoding")?
                ),
                None => {
                    return Err(usage(format!(
                        "{} histories match; use --out DIR to write one file each",
                        hs.len()
                    )))
                }
                Some(dir) => {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    for h in &hs {
                        let path = dir.join(export_file_name(h));
                        let mut file = std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&path)
                            .map_err(|e| Failure {
                                code: 1,
                                error: anyhow::anyhow!(
                                    "cannot create {}: {e}; export into an empty directory (nothing is overwritten)",
                                    path.display()
                                ),
                            })?;
                        std::io::Write::write_all(
                            &mut file,
                            serde_json::to_string_pretty(h)
                                .context("encoding")?
                                .as_bytes(),
                        )
                        .with_context(|| format!("writing {}", path.display()))?;
                    }
                    if json {
                        print_json(&json!({ "exported": hs.len(), "dir": dir }));
                    } else {
                        eprintln!("exported {} histories to {}", hs.len(), dir.display());
                    }
                }
            }
            Ok(0)
        }
        HistoryAction::Import { files } => {
            // Parse everything first: a bad file imports nothing.
            let mut hs = Vec::new();
            for path in files {
                for file in history_files(path).map_err(|e| Failure {
                    code: 4,
                    error: e.into(),
                })? {
                    let h = read_history_file(&file).map_err(|e| Failure {
                        code: 4,
                        error: e.into(),
                    })?;
                    crate::executor::split_history(&h.instance_id, &h.events).map_err(|e| {
                        Failure {
                            code: 4,
                            error: anyhow!("{}: {e}", file.display()),
                        }
                    })?;
                    hs.push(h);
                }
            }
            // An archived run (`<id>@run<N>.json`, from `export --all-runs` or
            // `purge --export`) shares its instance's id: an instance is imported as its
            // current run only; the archived runs replay from their files.
            let before = hs.len();
            hs.retain(|h| h.status != InstanceStatus::ContinuedAsNew);
            let skipped = before - hs.len();
            let p = Pinion::open(PinionConfig::new(db))?;
            let now = SystemClock.now_ms();
            for h in &hs {
                p.store().import_history(h, now).map_err(Error::from)?;
            }
            if json {
                print_json(&json!({ "imported": hs.len(), "skipped_archived_runs": skipped }));
            } else {
                eprintln!("imported {} histories", hs.len());
                if skipped > 0 {
                    eprintln!(
                        "skipped {skipped} archived runs (an instance is imported as its current run; replay archived runs from their files with `replay --history`)"
                    );
                }
            }
            Ok(0)
        }
    }
}

pub use crate::history::{history_file_name, run_file_name};

#[cfg(test)]
mod tests {
    use super::history_file_name;

    #[test]
    fn history_file_names_are_distinct_and_stay_in_the_directory() {
        let ids = ["x/y", "x_y", "x:y", "x%2Fy", "../etc", ".hidden", "é"];
        let names: Vec<String> = ids.iter().map(|i| history_file_name(i)).collect();
        assert_eq!(
            names,
            [
                "x%2Fy.json",
                "x_y.json",
                "x%3Ay.json",
                "x%252Fy.json",
                "%2E.%2Fetc.json",
                "%2Ehidden.json",
                "%C3%A9.json"
            ]
        );
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }

    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_the_rest() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn sampling_is_stable_and_roughly_the_rate() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("wf-{i}")).collect();
        let picked = ids.iter().filter(|i| sampled(i, 0.1)).count();
        assert!((800..1200).contains(&picked), "{picked}");
        assert_eq!(ids.iter().filter(|i| sampled(i, 0.1)).count(), picked);
        assert!(ids.iter().all(|i| sampled(i, 1.0)));
    }
}
