//! Placing IRQs for the running VMs (at `started`, by the watcher) and giving them back (at
//! `release`). Managed IRQs refuse to move (EIO; EPERM since 6.12): skipped, logged once, and
//! remembered for `status`.
//!
//! `placement` works out the changes through a `Probe` (`kvmtune plan` runs it too); `place`
//! journals and makes them.

use std::collections::BTreeSet;

use super::{Base, Context, Probe};
use crate::change::Change;
use crate::cpulist::CpuSet;
use crate::error::Result;
use crate::host::HostFs;
use crate::irq;
use crate::log;
use crate::state::holds::{IrqHold, IrqSettings};
use crate::state::ledger::GivenBack;
use crate::state::{Journal, Ledger};

/// Where IRQs not tied to a VM go when all their CPUs are isolated.
pub fn housekeeping(fs: &dyn HostFs, next: &Ledger) -> CpuSet {
    let online =
        crate::host::topology::parse_list(fs, "sys/devices/system/cpu/online").unwrap_or_default();
    online.difference(&next.isolated_except(""))
}

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

/// The IRQ changes `next` (the ledger after this operation) calls for, worked out read-only,
/// with the hold to keep once they are made.
pub struct Placement {
    /// Device IRQs to their VM's CPUs, other IRQs off isolated CPUs, back to the baseline
    /// where no VM needs them any more, and irqbalance's banned CPUs.
    pub changes: Vec<Change>,
    /// `next.irq` after the changes (managed IRQs the kernel then refuses are taken out).
    pub hold: IrqHold,
    pub wanted: irq::Wanted,
}

/// Work out the IRQ changes for `next` with `settings` (the policy's). Reads the IRQ table,
/// the devices' vectors and irqbalance's answer; changes nothing. Takes `next.irq` out (the
/// caller puts `Placement::hold` back) and may note in `next` what irqbalance was given.
pub fn placement(probe: &Probe, settings: IrqSettings, next: &mut Ledger) -> Placement {
    let hk = housekeeping(probe.fs, next);
    let wanted = irq::wanted(probe.fs, next, settings.move_others, &hk);
    let mut hold = next.irq.take().unwrap_or_default();
    hold.settings = settings;
    let mut changes = irq::changes(probe.fs, &mut hold, &wanted);
    changes.extend(irqbalance_change(probe, next, &mut hold));
    Placement {
        changes,
        hold,
        wanted,
    }
}

/// Make the IRQ changes `next` calls for, journaling each first. Updates `next.irq`.
pub fn place(ctx: &Context, next: &mut Ledger, journal: &mut Journal) -> Result<()> {
    let Placement {
        changes,
        mut hold,
        wanted,
    } = placement(&ctx.probe(), IrqSettings::of(ctx.policy), next);
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

/// The changes that give back what no running VM needs any more (the ledger already without
/// the VM being released). Updates `next.irq`.
///
/// With the settings the hold records, not the policy's: release reads no policy.
pub fn give_back(ctx: &Base, next: &mut Ledger) -> Result<Vec<Change>> {
    let Some(settings) = next.irq.as_ref().map(|h| h.settings.clone()) else {
        return Ok(Vec::new());
    };
    let Placement {
        changes, mut hold, ..
    } = placement(&ctx.probe(), settings, next);
    if next.isolated_except("").is_empty() {
        hold.refused.clear();
    }
    next.irq = (!hold.is_empty()).then_some(hold);
    Ok(changes)
}

/// irqbalance must not use isolated CPUs while any are isolated, and gets its own set back after.
fn irqbalance_change(ctx: &Probe, next: &mut Ledger, hold: &mut IrqHold) -> Option<Change> {
    if !hold.settings.irqbalance {
        return None;
    }
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if next
        .irqbalance_given_back
        .as_ref()
        .is_some_and(|g| !g.pending_at(now_secs))
    {
        next.irqbalance_given_back = None;
    }
    let isolated = next.isolated_except("");
    let now = match ctx.irqbalance.banned() {
        Ok(Some(now)) => now,
        Ok(None) => return None,
        Err(e) => {
            if hold.irqbalance_note.is_none() {
                log::warn(&format!(
                    "cannot tell irqbalance to keep off isolated CPUs: {e}"
                ));
            }
            hold.irqbalance_note = Some(format!("irqbalance runs but cannot be told: {e}"));
            return None;
        }
    };
    hold.irqbalance_note = None;
    let want = match &hold.irqbalance_banned {
        _ if isolated.is_empty() => {
            let own = hold.irqbalance_banned.take()?;
            next.irqbalance_given_back = Some(GivenBack {
                banned: own.clone(),
                at: now_secs,
            });
            own
        }
        Some(original) => original.union(&isolated),
        None => {
            // Its own set: what kvmtune gave back moments ago if irqbalance may not have
            // applied it yet (its answer would still show kvmtune's ban), else its answer.
            let own = match next.irqbalance_given_back.take() {
                Some(given) => given.banned,
                None => now.clone(),
            };
            let want = own.union(&isolated);
            hold.irqbalance_banned = Some(own);
            want
        }
    };
    (want != now).then_some(Change::IrqBalance {
        before: now,
        after: want,
    })
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
