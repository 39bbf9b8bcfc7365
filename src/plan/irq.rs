//! Where IRQs go, worked out: device IRQs to their VM's CPUs, other IRQs off isolated CPUs,
//! back to where they were once no VM needs them, and irqbalance's banned CPUs. Reads the host
//! through a `Probe` (one snapshot) and changes nothing; `apply::irq` makes the changes.

use crate::change::Change;
use crate::cpulist::CpuSet;
use crate::error::Result;
use crate::host::irqbalance::Answer;
use crate::host::snapshot::Probe;
use crate::host::HostFs;
use crate::irq;
use crate::log;
use crate::state::holds::{IrqHold, IrqSettings};
use crate::state::ledger::Told;
use crate::state::Ledger;

/// Where IRQs not tied to a VM go when all their CPUs are isolated.
pub fn housekeeping(fs: &dyn HostFs, next: &Ledger) -> CpuSet {
    let online =
        crate::host::topology::parse_list(fs, "sys/devices/system/cpu/online").unwrap_or_default();
    online.difference(&next.isolated_except(""))
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

/// The changes that give back what no running VM needs any more (the ledger already without
/// the VM being released). Updates `next.irq`.
///
/// With the settings the hold records, not the policy's: release reads no policy.
pub fn give_back(probe: &Probe, next: &mut Ledger) -> Result<Vec<Change>> {
    let Some(settings) = next.irq.as_ref().map(|h| h.settings.clone()) else {
        return Ok(Vec::new());
    };
    let Placement {
        changes, mut hold, ..
    } = placement(probe, settings, next);
    if next.isolated_except("").is_empty() {
        hold.refused.clear();
    }
    next.irq = (!hold.is_empty()).then_some(hold);
    Ok(changes)
}

/// What the irqbalance that gave `answer` goes by from its next round: what kvmtune told it
/// moments ago (`told`), which its answer does not show until then; else its answer.
pub fn irqbalance_in_effect(told: Option<&Told>, answer: Answer, now_secs: u64) -> CpuSet {
    match told {
        Some(told) if told.counts_for(answer.pid, now_secs) => told.banned.clone(),
        _ => answer.banned,
    }
}

/// irqbalance must not use isolated CPUs while any are isolated, and gets its own set back after.
fn irqbalance_change(ctx: &Probe, next: &mut Ledger, hold: &mut IrqHold) -> Option<Change> {
    if !hold.settings.irqbalance {
        return None;
    }
    let now_secs = crate::host::unix_now();
    next.irqbalance_told = next
        .irqbalance_told
        .take()
        .filter(|told| told.pending_at(now_secs));
    let isolated = next.isolated_except("");
    let answer = match ctx.irqbalance.banned() {
        Ok(Some(answer)) => answer,
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
    let pid = answer.pid;
    let in_effect = irqbalance_in_effect(next.irqbalance_told.as_ref(), answer, now_secs);
    let want = match &hold.irqbalance_banned {
        _ if isolated.is_empty() => hold.irqbalance_banned.take()?,
        Some(own) => own.union(&isolated),
        None => {
            hold.irqbalance_banned = Some(in_effect.clone());
            in_effect.union(&isolated)
        }
    };
    if want == in_effect {
        return None;
    }
    next.irqbalance_told = Some(Told {
        banned: want.clone(),
        at: now_secs,
        pid: Some(pid),
    });
    Some(Change::IrqBalance {
        before: in_effect,
        after: want,
    })
}
