//! `pinion alias`, `modules`, `gc` and `upgrade`: the rollout verbs, over [`Api`] (the
//! database, or a server).

use std::path::Path;

use anyhow::anyhow;

use super::args::AliasAction;
use super::display::{time, Align, Table};
use super::print::{print_json, print_refusal};
use super::replay::EXIT_DIVERGED;
use super::Failure;
use crate::api::types::{
    AliasUpgrade, GcBody, GcResponse, RampBody, SetAliasBody, UpgradeBody, UpgradeResponse,
};
use crate::api::{Api, ApiError};
use crate::engine::Pinion;

/// What `alias set --upgrade-compatible` moved (or would move), instance by instance.
fn print_alias_upgrade(name: &str, to: &crate::history::ModuleHash, u: &AliasUpgrade) {
    for r in &u.results {
        match (r.replay.is_compatible(), r.upgraded, &r.error) {
            (true, true, _) => println!("upgraded     {} from {}", r.instance_id, r.from.short()),
            (true, false, Some(e)) => println!("not moved    {}: {e}", r.instance_id),
            (true, false, None) => println!(
                "compatible   {} (dry run; stays on {})",
                r.instance_id,
                r.from.short()
            ),
            _ => println!("stays        {}: {}", r.instance_id, r.replay),
        }
    }
    let from: Vec<String> = u.from.iter().map(|h| h.short().to_string()).collect();
    let from = if from.is_empty() {
        "none (the alias pointed nowhere else)".to_string()
    } else {
        from.join(", ")
    };
    if u.dry_run {
        eprintln!(
            "dry run: {} instance(s) of {from} would move to {}, {} would stay pinned; nothing was changed (alias {name} was not moved)",
            u.moved,
            to.short(),
            u.stayed
        );
    } else {
        eprintln!(
            "{} instance(s) of {from} moved to {}, {} stayed pinned",
            u.moved,
            to.short(),
            u.stayed
        );
    }
}

/// `pinion alias ...`.
pub fn alias(api: &dyn Api, json: bool, action: &AliasAction) -> Result<i32, Failure> {
    match action {
        AliasAction::Set {
            name,
            module,
            verify,
            verify_limit,
            upgrade_compatible,
            dry_run,
        } => {
            let body = SetAliasBody {
                module: module.clone(),
                verify: *verify,
                verify_limit: *verify_limit,
                upgrade_compatible: *upgrade_compatible,
                dry_run: *dry_run,
            };
            match api.set_alias(name, &body) {
                Ok(set) => {
                    if json {
                        print_json(&set);
                    } else {
                        if let Some(v) = &set.verified {
                            eprintln!("verify: {v}");
                        }
                        if let Some(u) = &set.upgrade {
                            print_alias_upgrade(name, &set.module, u);
                        }
                        if !*dry_run {
                            println!("{name} -> {}", set.module);
                        }
                    }
                    Ok(0)
                }
                Err(ApiError::Refused(v)) => {
                    print_refusal(&v, json, &format!("alias {name} not moved"));
                    Ok(EXIT_DIVERGED)
                }
                Err(e) => Err(e.into()),
            }
        }
        AliasAction::Ramp {
            name,
            module,
            percent,
            cancel,
        } => {
            if *cancel {
                let r = api.cancel_ramp(name)?;
                if json {
                    print_json(&r);
                } else {
                    println!("{name}: ramp cancelled");
                }
                return Ok(0);
            }
            let (Some(module), Some(percent)) = (module, percent) else {
                return Err(Failure {
                    code: 2,
                    error: anyhow!("give MODULE and PERCENT, or --cancel"),
                });
            };
            let r = api.ramp_alias(
                name,
                &RampBody {
                    module: module.clone(),
                    percent: *percent,
                },
            )?;
            if json {
                print_json(&r);
            } else if let Some(ramp) = &r.ramp {
                println!("{name}: {percent}% of new instances -> {}", ramp.module);
            }
            Ok(0)
        }
        AliasAction::List => {
            let aliases = api.aliases()?;
            if json {
                print_json(&aliases);
            } else {
                let mut t = Table::new(&[
                    ("ALIAS", Align::Left),
                    ("MODULE", Align::Left),
                    ("RAMP", Align::Left),
                ]);
                for a in aliases {
                    let ramp = a
                        .ramp
                        .map(|(h, pct)| format!("{pct}% -> {}", h.short()))
                        .unwrap_or_else(|| "-".into());
                    t.row(vec![a.name, a.module_hash.short().to_owned(), ramp]);
                }
                t.print();
            }
            Ok(0)
        }
        AliasAction::History { name } => {
            let changes = api.alias_history(name)?;
            if json {
                print_json(&changes);
            } else {
                let mut t = Table::new(&[
                    ("AT", Align::Left),
                    ("ACTION", Align::Left),
                    ("MODULE", Align::Left),
                    ("RAMP", Align::Right),
                ]);
                for c in changes {
                    t.row(vec![
                        time(c.at_ms),
                        c.action,
                        c.module_hash.map(|h| h.0).unwrap_or_else(|| "-".into()),
                        c.ramp_percent
                            .map(|p| format!("{p}%"))
                            .unwrap_or_else(|| "-".into()),
                    ]);
                }
                t.print();
            }
            Ok(0)
        }
    }
}

/// `pinion modules`.
pub fn modules(api: &dyn Api, json: bool) -> Result<i32, Failure> {
    let rows = api.modules()?;
    if json {
        print_json(&rows);
        return Ok(0);
    }
    let mut t = Table::new(&[
        ("MODULE", Align::Left),
        ("LABEL", Align::Left),
        ("ABI", Align::Right),
        ("SDK", Align::Left),
        ("SIZE", Align::Right),
        ("DEPLOYED", Align::Left),
        ("ALIASES", Align::Left),
        ("RUNNING", Align::Right),
        ("BLOCKED", Align::Right),
        ("COMPLETED", Align::Right),
        ("STATUS", Align::Left),
        ("WORKFLOWS", Align::Left),
    ]);
    let rows_grants: Vec<_> = rows
        .iter()
        .map(|m| (m.module.hash.short().to_string(), m.grants.clone()))
        .collect();
    for m in rows {
        let mut aliases = m.aliases.clone();
        aliases.extend(m.ramping.iter().map(|(a, pct)| format!("{a}({pct}%)")));
        t.row(vec![
            m.module.hash.short().to_owned(),
            m.module.version_label.clone().unwrap_or_else(|| "-".into()),
            m.module.abi_version.to_string(),
            m.module.sdk_version.clone(),
            m.module.size.to_string(),
            time(m.module.deployed_at_ms),
            if aliases.is_empty() {
                "-".into()
            } else {
                aliases.join(",")
            },
            m.instances.running.to_string(),
            m.instances.blocked.to_string(),
            m.instances.completed.to_string(),
            serde_json::to_value(m.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            m.module.workflows.join(", "),
        ]);
    }
    t.print();
    print_grants(&rows_grants);
    Ok(0)
}

/// The grants part of `pinion modules`: one line per granted activity type.
fn print_grants(rows: &[(String, Vec<crate::rollout::ActivityGrants>)]) {
    if rows.iter().all(|(_, g)| g.is_empty()) {
        return;
    }
    println!();
    let mut t = Table::new(&[
        ("MODULE", Align::Left),
        ("ACTIVITY", Align::Left),
        ("GRANTED", Align::Left),
    ]);
    for (module, grants) in rows {
        for g in grants {
            let mut parts = Vec::new();
            if !g.http.is_empty() {
                parts.push(format!("http {}", g.http.join(" ")));
            }
            for d in &g.dirs {
                let mode = if d.mode == crate::config::DirMode::Rw {
                    "rw"
                } else {
                    "ro"
                };
                parts.push(format!("dir {}={} ({mode})", d.guest, d.host.display()));
            }
            if !g.env.is_empty() {
                parts.push(format!("env {}", g.env.join(" ")));
            }
            if !g.secrets.is_empty() {
                parts.push(format!("secrets {}", g.secrets.join(" ")));
            }
            t.row(vec![module.clone(), g.activity.clone(), parts.join("; ")]);
        }
    }
    t.print();
}

/// `pinion gc --export-modules DIR`: writes files on this machine, so only against the
/// database.
pub fn gc_exporting(p: &Pinion, json: bool, dry_run: bool, dir: &Path) -> Result<i32, Failure> {
    let modules = p.gc(dry_run, Some(dir))?;
    print_gc(&GcResponse { dry_run, modules }, json);
    Ok(0)
}

/// `pinion gc`.
pub fn gc(api: &dyn Api, json: bool, dry_run: bool) -> Result<i32, Failure> {
    print_gc(&api.gc(&GcBody { dry_run })?, json);
    Ok(0)
}

fn print_gc(r: &GcResponse, json: bool) {
    if json {
        print_json(r);
    } else {
        let verb = if r.dry_run { "would delete" } else { "deleted" };
        for h in &r.modules {
            println!("{verb} {h}");
        }
        eprintln!("{} module(s) {verb}", r.modules.len());
    }
}

/// `pinion upgrade`.
pub fn upgrade(api: &dyn Api, json: bool, body: &UpgradeBody) -> Result<i32, Failure> {
    let UpgradeResponse { dry_run, results } = api.upgrade(body)?;
    let incompatible = results.iter().filter(|r| !r.replay.is_compatible()).count();
    if json {
        print_json(&UpgradeResponse { dry_run, results });
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
