//! The watcher's look: read-only, without the lock, cheap enough for every watch interval. It
//! compares what the ledger says kvmtune holds with the host and says what differs; the repair
//! (under the lock) decides again from what it reads there.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::kind::Finding;
use super::qemu::QemuPids;
use crate::apply::Context;
use crate::host::hugepages::read_pool;
use crate::isolation::drift::{self, Stays, Stray};
use crate::state::stats::RepairKind;
use crate::state::{Ledger, Phase};

/// How long a running VM must be seen without its QEMU before the watcher releases it. On a
/// normal stop libvirt calls `release` a moment after QEMU exits (it first re-attaches the
/// VM's devices, which can take a while): that is libvirt's release to make, not a repair.
/// A QEMU that died while libvirtd was down stays gone: it is released after this.
pub const GONE_GRACE: Duration = Duration::from_secs(10);

/// What the watcher keeps between looks.
#[derive(Debug, Default)]
pub struct Memory {
    pub qemu: QemuPids,
    pub stays: Stays,
    /// Running VMs seen without their QEMU, and since when.
    pub gone_since: HashMap<String, Instant>,
}

/// What one look found.
#[derive(Debug, Default)]
pub struct Found {
    pub findings: Vec<Finding>,
    /// Host processes in the root cgroup (on cgroupfs hosts): the sweep's work.
    pub strays: Vec<Stray>,
}

/// Look at everything the watcher keeps (or only at IRQs, for the old `irq-watch`). `full`: the
/// full look's turn (every `metrics.interval`), which also reads every IRQ of the host.
pub fn look(
    ctx: &Context,
    ledger: &Ledger,
    memory: &mut Memory,
    irqs_only: bool,
    full: bool,
    now: Instant,
) -> Found {
    let mut found = Found::default();
    irqs(ctx, ledger, full, &mut found.findings);
    if irqs_only {
        return found;
    }
    gone(ctx, ledger, memory, now, &mut found.findings);
    pools(ctx, ledger, &mut found.findings);
    knobs(ctx, ledger, &mut found.findings);
    isolation(ctx, ledger, &mut memory.stays, &mut found);
    found
}

/// Device IRQs of running VMs not on their CPUs (a VFIO vector that appeared or came back with
/// a new number), at every look: a late vector is pinned within one interval. Other IRQs back
/// on isolated CPUs (a driver reset, an admin) only at the full look: reading every IRQ of the
/// host is most of what a look costs, and an IRQ created later already gets the housekeeping
/// CPUs from default_smp_affinity.
fn irqs(ctx: &Context, ledger: &Ledger, full: bool, out: &mut Vec<Finding>) {
    let places = ledger.vms.values().any(|v| v.irq.is_some()) || ledger.isolation.is_some();
    if !places {
        return;
    }
    let housekeeping = crate::plan::irq::housekeeping(ctx.fs, ledger);
    let finding = |slow: bool, (path, now, want): (String, String, String)| {
        let what = format!("/{path} is {now}, wanted {want}");
        if slow {
            Finding::slow(RepairKind::Irq, what)
        } else {
            Finding::new(RepairKind::Irq, what)
        }
    };
    let devices = crate::irq::differing(ctx.fs, ledger, false, &housekeeping);
    if full && ctx.policy.move_other_irqs {
        let all = crate::irq::differing(ctx.fs, ledger, true, &housekeeping);
        out.extend(
            all.into_iter()
                .filter(|d| !devices.contains(d))
                .map(|d| finding(true, d)),
        );
    }
    out.extend(devices.into_iter().map(|d| finding(false, d)));
    if full {
        out.extend(irqbalance_unbanned(ctx, ledger));
    }
}

/// irqbalance free to use isolated CPUs, at the full look: one restarted since kvmtune banned
/// it (a package upgrade) starts from its own set, and would balance IRQs onto them.
fn irqbalance_unbanned(ctx: &Context, ledger: &Ledger) -> Option<Finding> {
    if !ledger.irq.as_ref()?.settings.irqbalance {
        return None;
    }
    let isolated = ledger.isolated_except("");
    if isolated.is_empty() {
        return None;
    }
    let answer = ctx.irqbalance.banned().ok()??;
    let pid = answer.pid;
    let in_effect = crate::plan::irq::irqbalance_in_effect(
        ledger.irqbalance_told.as_ref(),
        answer,
        crate::host::unix_now(),
    );
    (!isolated.is_subset(&in_effect)).then(|| {
        Finding::slow(
            RepairKind::Irq,
            format!(
                "irqbalance (pid {pid}) may use isolated CPUs {}: it is banned from {}",
                isolated.difference(&in_effect),
                if in_effect.is_empty() {
                    "none".to_string()
                } else {
                    in_effect.to_string()
                }
            ),
        )
    })
}

/// Running VMs whose QEMU has not run for `GONE_GRACE`: it died while libvirtd was down, and
/// no `release` will come. Prepared VMs are left alone: their QEMU is about to start.
fn gone(ctx: &Context, ledger: &Ledger, memory: &mut Memory, now: Instant, out: &mut Vec<Finding>) {
    memory.qemu.retain(|vm| ledger.vms.contains_key(vm));
    let mut seen = HashMap::new();
    for (name, hold) in &ledger.vms {
        if hold.phase != Phase::Running || !memory.qemu.of(ctx.fs, name).is_empty() {
            continue;
        }
        let since = memory.gone_since.get(name).copied().unwrap_or(now);
        seen.insert(name.clone(), since);
        if now.saturating_duration_since(since) >= GONE_GRACE {
            out.push(Finding::new(RepairKind::GoneVm, name.clone()));
        }
    }
    memory.gone_since = seen;
}

/// Pools holding fewer persistent pages than kvmtune left there for its VMs.
fn pools(ctx: &Context, ledger: &Ledger, out: &mut Vec<Finding>) {
    for baseline in &ledger.pools {
        let want = baseline.persistent + ledger.added(baseline.pool);
        let Ok(state) = read_pool(ctx.fs, baseline.pool) else {
            continue;
        };
        if state.persistent() < want {
            out.push(Finding::new(
                RepairKind::Hugepages,
                format!(
                    "{} holds {} persistent pages, {want} while its VMs run",
                    baseline.pool,
                    state.persistent()
                ),
            ));
        }
    }
}

/// Host knobs no longer at the value held for running VMs.
fn knobs(ctx: &Context, ledger: &Ledger, out: &mut Vec<Finding>) {
    let mut held = std::collections::BTreeMap::new();
    for hold in ledger.vms.values() {
        for (path, value) in &hold.knobs {
            held.entry(path.clone()).or_insert_with(|| value.clone());
        }
    }
    for (path, value) in held {
        let Ok(Some(now)) = crate::host::knobs::read_value(ctx.fs, &path) else {
            continue; // gone: nothing to put back
        };
        if !crate::host::knobs::same_value(&now, &value) {
            out.push(Finding::new(
                RepairKind::Knob,
                format!(
                    "{} is {now}, held at {value}",
                    crate::host::knobs::shown(&path)
                ),
            ));
        }
    }
}

/// What confines host tasks, and host processes born on isolated CPUs.
fn isolation(ctx: &Context, ledger: &Ledger, stays: &mut Stays, found: &mut Found) {
    let Some(hold) = &ledger.isolation else {
        return;
    };
    let Ok(mounts) = crate::host::cgroup::detect(ctx.fs) else {
        return;
    };
    found.findings.extend(
        drift::drifted(ctx.fs, hold, &mounts)
            .into_iter()
            .map(|what| Finding::new(RepairKind::Isolation, what)),
    );
    // (Drift already reasserts isolation, which places these too.)
    let drifted = found
        .findings
        .iter()
        .any(|f| f.kind == RepairKind::Isolation);
    let method = crate::isolation::confiner(hold.method);
    if !drifted {
        // What the method owes the VMs held though nothing drifted (partitions for a vCPU
        // libvirt plugged since the last VM event): worked out, not made.
        let holders = crate::plan::isolation::holders(ledger);
        found.findings.extend(
            method
                .not_in_place(ctx.fs, &mounts, &holders)
                .into_iter()
                .map(|what| Finding::new(RepairKind::Isolation, what)),
        );
    }
    let root_look = drift::strays(ctx.fs, hold, &mounts, &ledger.isolated_vm_pids(), stays);
    let root = method.swept_root(&mounts).unwrap_or_default();
    found.findings.extend(root_look.processes.iter().map(|s| {
        Finding::new(
            RepairKind::Sweep,
            format!("pid {} {:?} is in the root cgroup /{root}", s.pid, s.comm),
        )
    }));
    // Reasserting isolation gives them the housekeeping CPUs, as the hook gave the others.
    found
        .findings
        .extend(root_look.kernel_threads.iter().map(|k| {
            Finding::new(
                RepairKind::Isolation,
                format!(
                    "kernel thread {} {:?} started on CPUs outside {}",
                    k.pid, k.comm, hold.housekeeping
                ),
            )
        }));
    found.strays = root_look.processes;
}
