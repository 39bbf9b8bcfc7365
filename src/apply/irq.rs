//! Placing IRQs for the running VMs (at `started`, by the watcher) and giving them back (at
//! `release`), as `plan::irq` worked out. Managed IRQs refuse to move (EIO; EPERM since
//! 6.12): skipped, logged once, and remembered for `status`.

use std::collections::BTreeSet;

use super::{Base, Context};
use crate::change::Change;
use crate::cpulist::CpuSet;
use crate::error::Result;
use crate::irq;
use crate::log;
use crate::plan::irq::{housekeeping, Placement};
use crate::state::{Journal, Ledger};

/// Whether any running VM's device IRQ (or another IRQ on an isolated CPU) is not where it
/// should be.
pub fn needs_refresh(ctx: &Context, ledger: &Ledger) -> bool {
    let any_target = ledger.vms.values().any(|v| v.irq.is_some());
    (any_target || ledger.isolation.is_some())
        && irq::differs(
            ctx.fs,
            ledger,
            ctx.policy.move_other_irqs,
            &housekeeping(ctx.fs, ledger),
        )
}

/// Make the IRQ changes of `placement` (worked out for `next`), journaling each first. Updates
/// `next.irq`.
pub fn place(
    ctx: &Base,
    placement: Placement,
    next: &mut Ledger,
    journal: &mut Journal,
) -> Result<()> {
    let Placement {
        changes,
        mut hold,
        wanted,
    } = placement;
    // Every change is journaled before the first is made, in one write: a host with thousands
    // of IRQs would otherwise rewrite (and fsync) a growing journal once per IRQ. Undoing a
    // change that was never made writes back the value that is still there.
    let first = journal.changes.len();
    if !changes.is_empty() {
        journal.changes.extend(changes.iter().cloned());
        ctx.state.save_journal(journal)?;
    }
    let mut refused_paths = BTreeSet::new();
    for change in changes {
        if let Err(e) = ctx.effects().apply(&change) {
            let refused = matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EPERM));
            let Change::File { path, .. } = &change else {
                return Err(e);
            };
            let Some(number) = irq::irq_of(path).filter(|_| refused) else {
                return Err(e);
            };
            // A managed IRQ: the kernel places it. Not ours to change, nothing to undo.
            refused_paths.insert(path.clone());
            hold.baseline.remove(path);
            if hold.refused.insert(number) {
                log::warn(&format!(
                    "IRQ {number} cannot be moved ({e}); leaving it where the kernel put it"
                ));
            }
        }
    }
    if !refused_paths.is_empty() {
        let mut i = 0;
        journal.changes.retain(|c| {
            i += 1;
            i <= first || !matches!(c, Change::File { path, .. } if refused_paths.contains(path))
        });
        ctx.state.save_journal(journal)?;
    }
    check_effective(ctx, &wanted);
    next.irq = (!hold.is_empty()).then_some(hold);
    Ok(())
}

/// The kernel may deliver on fewer CPUs than asked (x86 picks one): fine. Outside the request
/// it is worth a line in the log.
fn check_effective(ctx: &Base, wanted: &irq::Wanted) {
    for irqs in wanted.device_irqs.values() {
        for irq in irqs {
            let Some(want) = wanted.files.get(&irq::affinity_path(*irq)) else {
                continue;
            };
            let Ok(effective) = ctx
                .fs
                .read(&format!("proc/irq/{irq}/effective_affinity_list"))
            else {
                continue;
            };
            let (Ok(want), Ok(effective)) = (CpuSet::parse(want), CpuSet::parse(&effective)) else {
                continue;
            };
            if !effective.is_subset(&want) {
                // x86 moves an IRQ when it next fires: until then the old CPU shows here.
                log::info(&format!(
                    "IRQ {irq} is still delivered to CPUs {effective}, asked for {want}"
                ));
            }
        }
    }
}
