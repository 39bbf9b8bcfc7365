//! Bringing CPU isolation in line with the VMs in the ledger: set up, widen or narrow the
//! housekeeping set, or give everything back when the last isolated VM goes.

use super::Context;
use crate::change::Change;
use crate::error::{Error, Result};
use crate::host::tasks::{pinned_threads, thread_mask, PinnedThread};
use crate::isolation::{self, choose_method, Inputs, IsolationHold, View};
use crate::log;
use crate::state::Ledger;

/// The isolation changes that take the host to what `next` (the ledger after this operation)
/// needs, and `next.isolation` updated to match. Nothing is changed on the host here.
pub fn changes(ctx: &Context, next: &mut Ledger) -> Result<Vec<Change>> {
    let isolated = next.isolated_except("");
    let Some(mut hold) = next.isolation.take() else {
        if isolated.is_empty() {
            return Ok(Vec::new());
        }
        return set_up(ctx, next, &isolated);
    };
    let keep = next.isolated_vm_pids();
    if isolated.is_empty() {
        return Ok(isolation::give_back(ctx.fs, &mut hold.baseline, &isolated));
    }
    let view = View::read(ctx.fs)?;
    let housekeeping = view.online.difference(&isolated);
    let mut changes = isolation::give_back(ctx.fs, &mut hold.baseline, &isolated);
    let confine = isolation::confine(
        &inputs(ctx, &view, &keep),
        hold.method,
        &housekeeping,
        &isolated,
    )?;
    isolation::remember(&mut hold.baseline, &confine);
    changes.extend(confine);
    hold.housekeeping = housekeeping;
    next.isolation = Some(hold);
    Ok(changes)
}

fn set_up(
    ctx: &Context,
    next: &mut Ledger,
    isolated: &crate::cpulist::CpuSet,
) -> Result<Vec<Change>> {
    let view = View::read(ctx.fs)?;
    let method = choose_method(ctx.policy.isolation, &view.mounts).map_err(|e| {
        Error::Refused(format!(
            "cannot isolate CPUs {isolated}: {e}. Nothing was changed."
        ))
    })?;
    let housekeeping = view.online.difference(isolated);
    if housekeeping.is_empty() {
        return Err(Error::Refused(format!(
            "isolating CPUs {isolated} would leave the host no CPU. Nothing was changed."
        )));
    }
    let keep = next.isolated_vm_pids();
    let changes = isolation::confine(&inputs(ctx, &view, &keep), method, &housekeeping, isolated)?;
    let mut baseline = Vec::new();
    isolation::remember(&mut baseline, &changes);
    log::info(&format!(
        "isolating CPUs {isolated} with {method}; host tasks go to CPUs {housekeeping}"
    ));
    next.isolation = Some(IsolationHold {
        method,
        housekeeping,
        baseline,
        pinned: pinned_threads(ctx.fs, &view.mounts, &view.online),
    });
    Ok(changes)
}

fn inputs<'a>(ctx: &'a Context, view: &'a View, keep: &'a [u32]) -> Inputs<'a> {
    Inputs {
        fs: ctx.fs,
        systemctl: ctx.systemctl,
        policy: ctx.policy,
        view,
        keep,
    }
}

/// After the changes: does the kernel confine host tasks where we asked? (cgroup v2 falls
/// back to the parent's CPUs silently instead of failing a write.)
pub fn verify(ctx: &Context, next: &Ledger) -> Result<()> {
    let Some(hold) = &next.isolation else {
        return Ok(());
    };
    let mounts = crate::host::cgroup::detect(ctx.fs)?;
    match isolation::effective_housekeeping(ctx.fs, hold.method, &mounts) {
        Some(effective) if effective == hold.housekeeping => Ok(()),
        Some(effective) => Err(Error::Refused(format!(
            "host tasks should be confined to CPUs {}, but the kernel gives them {effective} ({}). Nothing was changed.",
            hold.housekeeping, hold.method
        ))),
        None => Err(Error::Refused(format!(
            "cannot read back where host tasks run ({}). Nothing was changed.",
            hold.method
        ))),
    }
}

/// The isolation changes `next` calls for, and the pinned threads to keep across them. Threads
/// are scanned only when there is something to change: a VM that isolates nothing, while
/// nothing is isolated, costs no walk over every thread of the host on libvirt's start path.
pub fn changes_and_pins(
    ctx: &Context,
    ledger: &Ledger,
    next: &mut Ledger,
) -> Result<(Vec<Change>, Vec<PinnedThread>)> {
    let changes = changes(ctx, next)?;
    let pins = if changes.is_empty() {
        Vec::new()
    } else {
        pins_to_keep(ctx, ledger)
    };
    Ok((changes, pins))
}

/// The pinned threads whose masks an isolation change may reset: those pinned now, and those
/// that were pinned when isolation began (their masks then, which confinement narrowed).
pub fn pins_to_keep(ctx: &Context, ledger: &Ledger) -> Vec<PinnedThread> {
    let Ok(view) = View::read(ctx.fs) else {
        return Vec::new();
    };
    let mut pins = ledger
        .isolation
        .as_ref()
        .map(|h| h.pinned.clone())
        .unwrap_or_default();
    for now in pinned_threads(ctx.fs, &view.mounts, &view.online) {
        if !pins.iter().any(|p| p.tid == now.tid && p.comm == now.comm) {
            pins.push(now);
        }
    }
    pins
}

/// Put pinned threads back on their CPUs, as far as their cpuset now allows. A no-op on
/// kernels that keep the masks themselves (6.2 and later).
pub fn restore_pins(ctx: &Context, pins: &[PinnedThread]) {
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
