//! Making CPU isolation real once `plan::isolation` has worked out the changes: checking that
//! the kernel confines host tasks where asked, putting kernel threads and pinned threads back
//! where they belong, and saying in the log that isolation began.

use super::Base;
use crate::error::{Error, Result};
use crate::host::tasks::{thread_mask, PinnedThread};
use crate::isolation::{self, Unconfined, View};
use crate::log;
use crate::plan::isolation::holders;
use crate::state::Ledger;

/// After the changes: does the kernel confine host tasks where we asked? (cgroup v2 falls
/// back to the parent's CPUs silently instead of failing a write.)
pub fn verify(ctx: &Base, next: &Ledger) -> Result<()> {
    let Some(hold) = &next.isolation else {
        return Ok(());
    };
    let mounts = crate::host::cgroup::detect(ctx.fs)?;
    let confiner = isolation::confiner(hold.method);
    match confiner.check(ctx.fs, &mounts, &hold.housekeeping, &holders(next)) {
        Ok(()) => Ok(()),
        Err(Unconfined::Failed(e)) => Err(e),
        Err(Unconfined::Elsewhere(Some(effective))) => Err(Error::Refused(format!(
            "host tasks should be confined to CPUs {}, but the kernel gives them {effective} ({}). Nothing was changed.",
            hold.housekeeping, hold.method
        ))),
        Err(Unconfined::Elsewhere(None)) => Err(Error::Refused(format!(
            "cannot read back where host tasks run ({}). Nothing was changed.",
            hold.method
        ))),
    }
}

/// After partitions were undone: the kernel gave every kernel thread of the root cgroup the
/// CPUs no partition holds (`cpuset_update_tasks_cpumask` for the top cpuset), isolated ones
/// too. Put the movable ones back where the ledger's hold keeps them (`KernelThreadPlaces`).
/// Not journaled: release gives them back from the hold's baseline whatever they are on, and
/// the watcher confines them again if this is cut short.
pub fn reconfine_kernel_threads(ctx: &Base) {
    let Ok(ledger) = ctx.state.load_ledger() else {
        return;
    };
    let Some(hold) = ledger.isolation.as_ref().filter(|h| {
        isolation::confiner(h.method).resets_kernel_threads() && h.settings.move_kernel_threads
    }) else {
        return;
    };
    let Ok(view) = View::read_for(ctx.fs, hold.method) else {
        return;
    };
    let places = isolation::KernelThreadPlaces::new(&hold.baseline, &hold.housekeeping);
    for t in view.tasks.iter().filter(|t| t.is_movable_kernel_thread()) {
        let cpus = places.cpus(t);
        if t.allowed == cpus {
            continue;
        }
        if let Err(e) = ctx.affinity.set_affinity(t.pid, &cpus) {
            log::warn(&format!(
                "cannot put kernel thread {} ({}) back on CPUs {cpus}: {e}",
                t.pid, t.comm
            ));
        }
    }
}

/// Put pinned threads back on their CPUs, as far as their cpuset now allows. A no-op on
/// kernels that keep the masks themselves (6.2 and later).
pub fn restore_pins(ctx: &Base, pins: &[PinnedThread]) {
    for pin in pins {
        let Some((comm, now)) = thread_mask(ctx.fs, pin.pid, pin.tid) else {
            continue; // gone
        };
        let want = pin.cpus.intersection(&now);
        if comm != pin.comm || want.is_empty() || want == now {
            continue;
        }
        if let Err(e) = ctx.affinity.set_affinity(pin.tid, &want) {
            log::warn(&format!(
                "cannot put thread {} ({comm}) back on CPUs {want}: {e}",
                pin.tid
            ));
        }
    }
}

/// Say in the log that isolation began, once its changes are made (they are worked out
/// read-only, and `kvmtune plan` works them out too: it must not say so).
pub fn log_set_up(before: &Ledger, after: &Ledger) {
    if before.isolation.is_some() {
        return;
    }
    if let Some(hold) = &after.isolation {
        log::info(&format!(
            "isolating CPUs {} with {} ({}); host tasks go to CPUs {}",
            after.isolated_except(""),
            hold.method,
            hold.why,
            hold.housekeeping
        ));
    }
}
