//! Repairing what a look found, under the host lock, through the hooks' own journaled paths:
//! gone VMs are released as `recover` releases them, everything else is reasserted as
//! `reconnect` does (`apply::reassert`), for the parts the findings name only. What is changed
//! is decided again from what is read under the lock: a look is only a reason to take it.
//! Each part that changed something is one `Repair` (one line in the log), counted in the
//! state directory.

use super::kind::{Finding, Repair};
use crate::apply::{self, Context, Reasserted, Recover, Scope};
use crate::change::Change;
use crate::error::Result;
use crate::isolation::drift::Stray;
use crate::state::stats::RepairKind;
use crate::state::StateLock;

/// Changes named in one line before "and N more".
const NAMED: usize = 6;

/// Repair `findings`; `strays` are the host processes the look saw in the root cgroup.
pub fn repair(ctx: &Context, findings: &[Finding], strays: &[Stray]) -> Result<Vec<Repair>> {
    apply::locked(ctx, |lock| {
        let mut repairs = release_gone(ctx, lock, findings)?;
        let scope = scope_of(findings);
        if scope != Scope::NONE {
            let done = apply::reassert(ctx, lock, scope)?;
            repairs.extend(describe(&done));
            if scope.isolation {
                repairs.extend(sweep(ctx, strays));
            }
        }
        if let Err(e) = ctx.state.count(lock, |c| {
            for r in &repairs {
                *c.repairs.entry(r.kind.name().to_string()).or_default() += 1;
            }
        }) {
            crate::log::warn(&format!("watch: cannot update the counters: {e}"));
        }
        Ok(repairs)
    })
}

/// Release the running VMs whose QEMU the look did not find, if under the lock they still run
/// in the ledger and still have no QEMU (a VM restarted meanwhile is left alone).
fn release_gone(ctx: &Context, lock: &StateLock, findings: &[Finding]) -> Result<Vec<Repair>> {
    let names: Vec<String> = findings
        .iter()
        .filter(|f| f.kind == RepairKind::GoneVm)
        .map(|f| f.what.clone())
        .collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let released = apply::recover_locked(ctx, lock, Recover::Gone(&names))?;
    Ok(released
        .into_iter()
        .map(|vm| Repair {
            kind: RepairKind::GoneVm,
            line: format!(
                "released VM '{vm}': its QEMU is gone (no process names it) and libvirt did not call release; what it held is given back"
            ),
        })
        .collect())
}

/// The parts of the reassertion the findings call for.
fn scope_of(findings: &[Finding]) -> Scope {
    let has = |k: RepairKind| findings.iter().any(|f| f.kind == k);
    Scope {
        hugepages: has(RepairKind::Hugepages),
        isolation: has(RepairKind::Isolation) || has(RepairKind::Sweep),
        knobs: has(RepairKind::Knob),
        irqs: has(RepairKind::Irq),
    }
}

/// One repair per part that changed something. Moving processes is the sweep's (see `sweep`),
/// not a change of what confines them.
fn describe(done: &Reasserted) -> Vec<Repair> {
    let mut out = Vec::new();
    let mut part = |kind: RepairKind, what: &str, changes: Vec<&Change>| {
        if !changes.is_empty() {
            out.push(Repair {
                kind,
                line: format!("{what}: {}", named(&changes)),
            });
        }
    };
    part(
        RepairKind::Hugepages,
        "pool grown back to what its VMs need",
        done.hugepages.iter().collect(),
    );
    part(
        RepairKind::Isolation,
        "put back what confines host tasks",
        done.isolation
            .iter()
            .filter(|c| !matches!(c, Change::MoveProcesses { .. }))
            .collect(),
    );
    part(
        RepairKind::Knob,
        "host knob set back to the value held for its VMs",
        done.knobs.iter().collect(),
    );
    part(
        RepairKind::Irq,
        "IRQ affinity set for running VMs",
        done.irqs.iter().collect(),
    );
    out
}

/// After the reassertion moved the root cgroup's host processes: which of those the look saw
/// have left it. The watcher moves itself too (the sweep leaves out the process that makes
/// it): started before isolation began, it is a host task in the root cgroup like any other.
fn sweep(ctx: &Context, strays: &[Stray]) -> Option<Repair> {
    let ledger = ctx.state.load_ledger().ok()?;
    let hold = ledger.isolation.as_ref()?;
    let mounts = crate::host::cgroup::detect(ctx.fs).ok()?;
    let method = crate::isolation::confiner(hold.method);
    let root = method.swept_root(&mounts)?.to_string();
    let housekeeping = method.housekeeping_cgroup(&mounts)?;
    let me = std::process::id();
    if strays.iter().any(|s| s.pid == me) {
        if let Err(e) = ctx
            .fs
            .write(&format!("{housekeeping}/cgroup.procs"), &me.to_string())
        {
            crate::log::warn(&format!(
                "watch: cannot move itself (pid {me}) into /{housekeeping}: {e}"
            ));
        }
    }
    let left: Vec<u32> = ctx
        .fs
        .read(&format!("{root}/cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let moved: Vec<String> = strays
        .iter()
        .filter(|s| !left.contains(&s.pid))
        .map(|s| format!("pid {} {:?}", s.pid, s.comm))
        .collect();
    if moved.is_empty() {
        return None;
    }
    Some(Repair {
        kind: RepairKind::Sweep,
        line: format!(
            "{} host process(es) born on isolated CPUs moved from /{root} to /{housekeeping}: {}",
            moved.len(),
            moved.join(", ")
        ),
    })
}

/// The first few changes, and how many more.
fn named(changes: &[&Change]) -> String {
    let mut out: Vec<String> = changes.iter().take(NAMED).map(|c| c.to_string()).collect();
    if changes.len() > NAMED {
        out.push(format!("and {} more", changes.len() - NAMED));
    }
    out.join("; ")
}
