//! `pinion alias`, `modules`, `gc`, `upgrade` and deploy's `--alias` /
//! `--on-nondeterminism`: the rollout verbs, over [`crate::rollout`].

use std::path::Path;

use anyhow::anyhow;
use serde_json::json;

use super::args::AliasAction;
use super::replay::EXIT_DIVERGED;
use super::{print_json, Failure};
use crate::engine::{Error, Pinion};
use crate::history::ModuleHash;
use crate::rollout::UpgradeSelector;
use crate::store::NondeterminismPolicy;

/// Parses deploy's `--on-nondeterminism` values (`fail`, or `Type=fail`) against the
/// module's workflow types, before anything is stored.
pub fn parse_policies(
    workflows: &[String],
    specs: &[String],
) -> Result<Vec<(String, NondeterminismPolicy)>, Failure> {
    let mut out = Vec::new();
    for spec in specs {
        let (types, policy) = match spec.split_once('=') {
            Some((t, pol)) => (vec![t.to_owned()], pol),
            None => (workflows.to_vec(), spec.as_str()),
        };
        let policy = NondeterminismPolicy::parse(policy).ok_or_else(|| Failure {
            code: 4,
            error: anyhow!("unknown policy `{policy}`; use block or fail"),
        })?;
        for t in types {
            if !workflows.contains(&t) {
                return Err(Failure {
                    code: 3,
                    error: anyhow!("the module has no workflow type `{t}`"),
                });
            }
            out.push((t, policy));
        }
    }
    Ok(out)
}

/// Stores parsed policies for a deployed module.
pub fn apply_policies(
    p: &Pinion,
    hash: &ModuleHash,
    policies: &[(String, NondeterminismPolicy)],
) -> Result<(), Failure> {
    for (t, policy) in policies {
        p.store()
            .set_policy(hash, t, *policy)
            .map_err(Error::from)?;
    }
    Ok(())
}

fn print_reports(reports: &[crate::replay::ReplayReport]) {
    for r in reports.iter().filter(|r| !r.is_compatible()) {
        println!("{r}");
    }
}

/// `pinion alias ...`.
pub fn alias(p: &Pinion, json: bool, action: &AliasAction) -> Result<i32, Failure> {
    match action {
        AliasAction::Set {
            name,
            module,
            verify,
            verify_limit,
        } => {
            if *verify {
                let (summary, reports) =
                    p.verify_module(&p.replayer_for(module)?, *verify_limit)?;
                if !summary.ok() {
                    if json {
                        print_json(
                            &json!({ "verified": false, "summary": summary, "reports": reports }),
                        );
                    } else {
                        print_reports(&reports);
                        eprintln!("alias {name} not moved: {summary}");
                    }
                    return Ok(EXIT_DIVERGED);
                }
            }
            let hash = p.set_alias(name, module)?;
            if json {
                print_json(&json!({ "alias": name, "module": hash }));
            } else {
                println!("{name} -> {hash}");
            }
            Ok(0)
        }
        AliasAction::Ramp {
            name,
            module,
            percent,
            cancel,
        } => {
            if *cancel {
                p.cancel_ramp(name)?;
                if !json {
                    println!("{name}: ramp cancelled");
                } else {
                    print_json(&json!({ "alias": name, "ramp": null }));
                }
                return Ok(0);
            }
            let (Some(module), Some(percent)) = (module, percent) else {
                return Err(Failure {
                    code: 2,
                    error: anyhow!("give MODULE and PERCENT, or --cancel"),
                });
            };
            let hash = p.ramp_alias(name, module, *percent)?;
            if json {
                print_json(
                    &json!({ "alias": name, "ramp": { "module": hash, "percent": percent } }),
                );
            } else {
                println!("{name}: {percent}% of new instances -> {hash}");
            }
            Ok(0)
        }
        AliasAction::List => {
            let aliases = p.store().list_aliases().map_err(Error::from)?;
            if json {
                print_json(&serde_json::to_value(&aliases).unwrap_or_default());
            } else {
                println!("{:<20} {:<14} RAMP", "ALIAS", "MODULE");
                for a in aliases {
                    let ramp = a
                        .ramp
                        .map(|(h, pct)| format!("{pct}% -> {}", h.short()))
                        .unwrap_or_else(|| "-".into());
                    println!("{:<20} {:<14} {ramp}", a.name, a.module_hash.short());
                }
            }
            Ok(0)
        }
        AliasAction::History { name } => {
            let changes = p.store().alias_history(name).map_err(Error::from)?;
            if changes.is_empty() && p.store().get_alias(name).map_err(Error::from)?.is_none() {
                return Err(Error::UnknownAlias(name.clone()).into());
            }
            if json {
                print_json(&serde_json::to_value(&changes).unwrap_or_default());
            } else {
                for c in changes {
                    let module = c.module_hash.map(|h| h.0).unwrap_or_else(|| "-".into());
                    let pct = c.ramp_percent.map(|p| format!(" {p}%")).unwrap_or_default();
                    println!("{:>15}  {:<12} {module}{pct}", c.at_ms, c.action);
                }
            }
            Ok(0)
        }
    }
}

/// `pinion modules`.
pub fn modules(p: &Pinion, json: bool) -> Result<i32, Failure> {
    let rows = p.module_statuses()?;
    if json {
        print_json(&serde_json::to_value(&rows).unwrap_or_default());
        return Ok(0);
    }
    println!(
        "{:<14} {:<8} {:>8} {:<16} {:>7} {:>7} {:>9} {:<9} WORKFLOWS",
        "MODULE", "LABEL", "SIZE", "ALIASES", "RUNNING", "BLOCKED", "COMPLETED", "STATUS"
    );
    for m in rows {
        let mut aliases = m.aliases.clone();
        aliases.extend(m.ramping.iter().map(|(a, pct)| format!("{a}({pct}%)")));
        println!(
            "{:<14} {:<8} {:>8} {:<16} {:>7} {:>7} {:>9} {:<9} {}",
            m.module.hash.short(),
            m.module.version_label.as_deref().unwrap_or("-"),
            m.module.size,
            if aliases.is_empty() {
                "-".into()
            } else {
                aliases.join(",")
            },
            m.instances.running,
            m.instances.blocked,
            m.instances.completed,
            serde_json::to_value(m.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            m.module.workflows.join(", ")
        );
    }
    Ok(0)
}

/// `pinion gc`.
pub fn gc(p: &Pinion, json: bool, dry_run: bool, export: Option<&Path>) -> Result<i32, Failure> {
    let collected = p.gc(dry_run, export)?;
    if json {
        print_json(&json!({ "dry_run": dry_run, "modules": collected }));
    } else {
        let verb = if dry_run { "would delete" } else { "deleted" };
        for h in &collected {
            println!("{verb} {h}");
        }
        eprintln!("{} module(s) {verb}", collected.len());
    }
    Ok(0)
}

/// `pinion upgrade`.
pub fn upgrade(
    p: &Pinion,
    json: bool,
    to: &str,
    selector: UpgradeSelector,
    dry_run: bool,
) -> Result<i32, Failure> {
    let results = p.upgrade(to, &selector, dry_run)?;
    let incompatible = results.iter().filter(|r| !r.replay.is_compatible()).count();
    if json {
        print_json(&json!({ "dry_run": dry_run, "results": results }));
    } else {
        for r in &results {
            match (r.replay.is_compatible(), r.upgraded, &r.error) {
                (true, true, _) => {
                    println!("upgraded     {} from {}", r.instance_id, r.from.short())
                }
                (true, false, Some(e)) => println!("not moved    {}: {e}", r.instance_id),
                (true, false, None) => println!(
                    "compatible   {} (dry run; on {})",
                    r.instance_id,
                    r.from.short()
                ),
                _ => println!("incompatible {}: {}", r.instance_id, r.replay),
            }
        }
        eprintln!(
            "{} instance(s) considered, {} incompatible",
            results.len(),
            incompatible
        );
    }
    Ok(if incompatible == 0 { 0 } else { EXIT_DIVERGED })
}
