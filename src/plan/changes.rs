//! The changes `prepare` and `started` will make, worked out from one snapshot of the host
//! (`Probe`) and the ledger, changing nothing. `apply::prepare` makes exactly these (journaling
//! each first); `kvmtune plan` (`preview`) prints them. One set of functions serves both, so
//! what `plan` shows is what the journal records, as long as the host does not change in
//! between (see `Preview`).

use serde::Serialize;

use super::knob_changes as knobs;
use super::{irq, isolation, Plan};
use crate::change::Change;
use crate::domain::Domain;
use crate::error::Result;
use crate::host::snapshot::Probe;
use crate::host::tasks::{Known, PinnedThread};
use crate::host::Host;
use crate::plan;
use crate::policy::Policy;
use crate::state::holds::IrqSettings;
use crate::state::{Ledger, Phase, PoolHold, VmHold};

/// What `prepare` will change, in the order it changes it, and the ledger it then commits.
pub struct Prepare {
    /// Knobs come first: unmerging KSM's pages (for `merge_across_nodes`) takes memory that
    /// the reservation would otherwise count as free.
    pub knobs: Vec<Change>,
    /// The pool growths (`PoolGrowth::change`).
    pub pools: Vec<Change>,
    /// Confining host tasks to the housekeeping CPUs; also sweeps host processes started
    /// since the last VM event into place.
    pub isolation: Vec<Change>,
    /// Threads whose masks the isolation changes may reset, to put back after them.
    pub pins: Vec<PinnedThread>,
    /// The processes the isolation scan read (moving them need not read them again).
    pub known: Known,
    /// The ledger once every change is made.
    pub next: Ledger,
}

impl Prepare {
    /// Every change, in the order the journal records it.
    pub fn changes(&self) -> Vec<Change> {
        let mut all = self.knobs.clone();
        all.extend(self.pools.iter().cloned());
        all.extend(self.isolation.iter().cloned());
        all
    }
}

/// Whether prepare has nothing to do for `plan`: it asks for nothing kvmtune holds, and no
/// isolation is in place whose sweep every VM event makes.
pub fn holds_nothing(plan: &Plan, ledger: &Ledger) -> bool {
    !asks_for_a_hold(plan) && ledger.isolation.is_none()
}

/// IRQs are placed for a VM with both an IRQ target and passthrough devices.
fn places_irqs(plan: &Plan) -> bool {
    plan.irq.is_some() && !plan.devices.is_empty()
}

/// Whether the VM holds anything once prepared: pages, CPUs, IRQs or knobs.
fn asks_for_a_hold(plan: &Plan) -> bool {
    !plan.hugepages.is_empty()
        || !plan.isolate.is_empty()
        || places_irqs(plan)
        || !plan.knobs.is_empty()
}

/// The VM's plan on the host `probe` reads (`plan::plan`), its knobs checked against this
/// host's files (`knobs::check`): what `prepare` and `kvmtune plan` both start from.
pub fn checked_plan(
    probe: &Probe,
    policy: &Policy,
    domain: &Domain,
    vm: &str,
    ledger: &Ledger,
) -> Result<Plan> {
    let host = Host::read(probe.fs)?;
    let mut plan = plan::plan(domain, vm, policy, &host, ledger)?;
    plan.knobs = knobs::check(probe.fs, vm, std::mem::take(&mut plan.knobs))?;
    Ok(plan)
}

/// The changes prepare makes for `plan` (already checked: `checked_plan`).
/// Reads the host through `probe`; changes nothing.
pub fn prepare(
    probe: &Probe,
    policy: &Policy,
    plan: &Plan,
    ledger: &Ledger,
    kvmtune_run: bool,
) -> Result<Prepare> {
    let mut next = ledger_after(plan, ledger, kvmtune_run);
    let knobs = knobs::changes(probe.fs, &mut next)?;
    let pools = plan.changes();
    let (isolation, pins, known) =
        isolation::changes_and_pins(probe, Some(policy), ledger, &mut next)?;
    Ok(Prepare {
        knobs,
        pools,
        isolation,
        pins,
        known,
        next,
    })
}

/// The ledger once prepare is done: the pools' first values kept, the VM's hold added.
fn ledger_after(plan: &Plan, ledger: &Ledger, kvmtune_run: bool) -> Ledger {
    let mut next = ledger.clone();
    for g in plan.hugepages.iter().filter(|g| g.grow > 0) {
        next.keep_baseline(g.pool, g.before.persistent());
    }
    if !asks_for_a_hold(plan) {
        return next;
    }
    let places_irqs = places_irqs(plan);
    next.vms.insert(
        plan.vm.clone(),
        VmHold {
            phase: Phase::Prepared,
            hugepages: plan
                .hugepages
                .iter()
                .map(|g| PoolHold {
                    pool: g.pool,
                    pages: g.pages,
                    added: g.grow,
                })
                .collect(),
            isolate: plan.isolate.clone(),
            irq: plan.irq.clone().filter(|_| places_irqs),
            devices: if places_irqs {
                plan.devices.clone()
            } else {
                Vec::new()
            },
            pid: None,
            kvmtune_run,
            partition_misfit: plan.partition_misfit.clone().filter(|_| !kvmtune_run),
            knobs: plan
                .knobs
                .iter()
                .map(|k| (k.path.clone(), k.value.clone()))
                .collect(),
        },
    );
    next
}

/// What `started` will change once `prepare` is done, foreseen from the host before prepare.
/// The IRQ placement is the one `started` works out (`irq::placement`): prepare touches no
/// IRQ. Isolation, knobs and pools are in place after prepare, so `started` finds nothing to
/// put back, except that a cgroup method moves the host's processes into its cgroup again
/// (those born since prepare): the same `MoveProcesses` prepare made.
pub fn started(probe: &Probe, policy: &Policy, vm: &str, prepared: &Prepare) -> Vec<Change> {
    let mut next = prepared.next.clone();
    match next.vms.get_mut(vm) {
        Some(hold) => hold.phase = Phase::Running,
        None if next.isolation.is_none() => return Vec::new(),
        None => {}
    }
    let mut changes: Vec<Change> = prepared
        .isolation
        .iter()
        .filter(|c| matches!(c, Change::MoveProcesses { .. }))
        .cloned()
        .collect();
    changes.extend(irq::placement(probe, IrqSettings::of(policy), &mut next).changes);
    changes
}

/// What `kvmtune plan` shows: the decisions, and every change `prepare` and then `started`
/// will journal, worked out by the code that makes them.
///
/// Equal to the journals unless the host changes in between: a process or kernel thread born
/// after the plan is moved too (the `MoveProcesses` change names cgroups, not processes),
/// IRQ vectors a guest enables later are pinned when they appear, and an IRQ the kernel
/// manages refuses to move: `started` tries it, then drops it from its journal.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    #[serde(flatten)]
    pub plan: Plan,
    /// Every change of `prepare`, in the order its journal records them.
    pub prepare: Vec<Change>,
    /// Every change of `started` (QEMU's `started` event, or `kvmtune run` once QEMU runs).
    pub started: Vec<Change>,
    /// The VM is still in the ledger from a run whose release never came: prepare gives that
    /// back first (a release journal of its own, not shown).
    pub releases_stale_hold: bool,
}

/// Plan the start of `domain` as `vm` on the host `probe` reads, with `ledger` as it is now.
pub fn preview(
    probe: &Probe,
    policy: &Policy,
    domain: &Domain,
    vm: &str,
    ledger: &Ledger,
) -> Result<Preview> {
    let plan = checked_plan(probe, policy, domain, vm, ledger)?;
    let releases_stale_hold = ledger.vms.contains_key(vm);
    if holds_nothing(&plan, ledger) {
        return Ok(Preview {
            plan,
            prepare: Vec::new(),
            started: Vec::new(),
            releases_stale_hold,
        });
    }
    // `kvmtune plan` previews the start libvirt's hook makes (not `kvmtune run`'s).
    let prepared = prepare(probe, policy, &plan, ledger, false)?;
    let started = started(probe, policy, vm, &prepared);
    Ok(Preview {
        prepare: prepared.changes(),
        started,
        plan,
        releases_stale_hold,
    })
}
