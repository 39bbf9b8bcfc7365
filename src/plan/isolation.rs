//! Bringing CPU isolation in line with the VMs in the ledger, worked out: set up, widen or
//! narrow the housekeeping set, or give everything back when the last isolated VM goes, and
//! the pinned threads to keep across the changes. Reads the host through a `Probe` (one
//! snapshot) and changes nothing; `apply` makes the changes (`make_isolation`), and
//! `apply::isolation` checks them and puts pinned threads back.

use std::collections::BTreeSet;

use crate::change::Change;
use crate::error::{Error, Result};
use crate::host::snapshot::Probe;
use crate::host::tasks::{kernel_keeps_pins, pinned_threads, Known, PinnedThread};
use crate::isolation::{self, choose_method, partition, Inputs, Offers, View};
use crate::policy::Policy;
use crate::state::holds::{IsolationHold, IsolationSettings, Method};
use crate::state::Ledger;
use partition::Holders;

/// The isolation changes that take the host to what `next` (the ledger after this operation)
/// needs, and `next.isolation` updated to match. Nothing is changed on the host here.
///
/// `policy`: the policy's settings, for operations that read it (`prepare`, `started`); `None`
/// for `release` and `recover`, which confine with the settings the hold records, and cannot
/// set isolation up.
pub fn changes(probe: &Probe, policy: Option<&Policy>, next: &mut Ledger) -> Result<Vec<Change>> {
    changes_with(probe, policy, next, &mut Scan::default())
}

/// The host's processes as read once for one operation: listing every process of a large
/// host (and every thread of its user processes) is most of what isolation costs, so
/// computing the changes and the pinned threads to keep share one look.
#[derive(Default)]
struct Scan {
    view: Option<View>,
    /// Pinned threads among the processes a set of changes moves, with that set.
    pinned: Option<(Option<BTreeSet<u32>>, Vec<PinnedThread>)>,
    /// The kernel puts pinned threads back itself (6.2 and later): none are looked for.
    kernel_keeps_pins: Option<bool>,
}

impl Scan {
    /// Every task.
    fn view(&mut self, ctx: &Probe) -> Result<&View> {
        if !self.view.as_ref().is_some_and(View::has_every_task) {
            self.view = Some(View::read(ctx.fs)?);
        }
        Ok(self.view.as_ref().expect("just read"))
    }

    /// What `method` needs to look at (`View::read_for`).
    fn view_for(&mut self, ctx: &Probe, method: Method) -> Result<&View> {
        if self.view.is_none() {
            self.view = Some(View::read_for(ctx.fs, method)?);
        }
        Ok(self.view.as_ref().expect("just read"))
    }

    /// The kernel puts pinned threads back itself: none need looking for.
    fn kernel_keeps_pins(&mut self, ctx: &Probe) -> bool {
        *self
            .kernel_keeps_pins
            .get_or_insert_with(|| kernel_keeps_pins(ctx.fs))
    }

    /// Threads pinned now in the `affected` processes (`None`: every process).
    fn pinned(
        &mut self,
        ctx: &Probe,
        affected: Option<BTreeSet<u32>>,
    ) -> Result<Vec<PinnedThread>> {
        if let Some((seen, pinned)) = &self.pinned {
            if *seen == affected {
                return Ok(pinned.clone());
            }
        }
        if self.kernel_keeps_pins(ctx) {
            return Ok(Vec::new());
        }
        let view = self.view(ctx)?;
        let tasks: Vec<_> = view
            .tasks
            .iter()
            .filter(|t| affected.as_ref().map_or(true, |a| a.contains(&t.pid)))
            .cloned()
            .collect();
        let pinned = pinned_threads(ctx.fs, &view.mounts, &view.online, &tasks);
        self.pinned = Some((affected, pinned.clone()));
        Ok(pinned)
    }
}

/// The processes whose threads' masks `changes` may reset: the members of the cgroups they
/// move processes out of or change the CPUs of. `None`: any process (systemd units, the v2
/// controller). Once a VM's isolation is in place, a later call moves only the few processes
/// started since, and need not look at every thread of the host.
fn affected(ctx: &Probe, changes: &[Change]) -> Option<BTreeSet<u32>> {
    let mut cgroups = BTreeSet::new();
    for change in changes {
        match change {
            Change::UnitProperty { .. } | Change::Controller { .. } => return None,
            Change::MoveProcesses { from, .. } => {
                cgroups.insert(from.clone());
            }
            Change::RemoveCgroup { path, .. } => {
                cgroups.insert(path.clone());
            }
            Change::File { path, .. } => {
                if let Some((dir, "cpuset.cpus" | "cpus")) = path.rsplit_once('/') {
                    cgroups.insert(dir.to_string());
                }
            }
            _ => {}
        }
    }
    let mut pids = BTreeSet::new();
    for cgroup in cgroups {
        let procs = ctx
            .fs
            .read(&format!("{cgroup}/cgroup.procs"))
            .unwrap_or_default();
        pids.extend(procs.lines().filter_map(|p| p.trim().parse::<u32>().ok()));
    }
    Some(pids)
}

fn changes_with(
    ctx: &Probe,
    policy: Option<&Policy>,
    next: &mut Ledger,
    scan: &mut Scan,
) -> Result<Vec<Change>> {
    let isolated = next.isolated_except("");
    let Some(mut hold) = next.isolation.take() else {
        if isolated.is_empty() {
            return Ok(Vec::new());
        }
        let policy = policy.ok_or_else(|| {
            Error::State(format!(
                "the ledger isolates CPUs {isolated} but holds no isolation to narrow; `kvmtune status` shows the host as it is"
            ))
        })?;
        return set_up(ctx, policy, next, &isolated, scan);
    };
    let keep = next.isolated_vm_pids();
    if isolated.is_empty() {
        return Ok(isolation::give_back(ctx.fs, &mut hold.baseline, &isolated));
    }
    if let Some(policy) = policy {
        hold.settings = IsolationSettings::of(policy);
    }
    let holders = holders(next);
    if policy.is_some() {
        isolation::confiner(hold.method).admits(&holders)?;
    }
    let view = scan.view_for(ctx, hold.method)?;
    let housekeeping = view.online.difference(&isolated);
    let mut changes = isolation::give_back(ctx.fs, &mut hold.baseline, &isolated);
    let confine = isolation::confine(
        &inputs(ctx, &hold.settings, view, &keep, &holders, &hold.baseline),
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
    ctx: &Probe,
    policy: &Policy,
    next: &mut Ledger,
    isolated: &crate::cpulist::CpuSet,
    scan: &mut Scan,
) -> Result<Vec<Change>> {
    let mounts = crate::host::cgroup::detect(ctx.fs)?;
    let offers = Offers {
        partition: partition::probe(ctx.fs, &mounts, &holders(next)),
    };
    let choice = choose_method(policy.isolation, &mounts, &offers).map_err(|e| {
        Error::Refused(format!(
            "cannot isolate CPUs {isolated}: {e}. Nothing was changed."
        ))
    })?;
    let method = choice.method;
    let view = scan.view_for(ctx, method)?;
    let housekeeping = view.online.difference(isolated);
    if housekeeping.is_empty() {
        return Err(Error::Refused(format!(
            "isolating CPUs {isolated} would leave the host no CPU. Nothing was changed."
        )));
    }
    let keep = next.isolated_vm_pids();
    let settings = IsolationSettings::of(policy);
    let changes = isolation::confine(
        &inputs(ctx, &settings, view, &keep, &holders(next), &[]),
        method,
        &housekeeping,
        isolated,
    )?;
    let mut baseline = Vec::new();
    isolation::remember(&mut baseline, &changes);
    next.isolation = Some(IsolationHold {
        method,
        housekeeping,
        baseline,
        pinned: if scan.kernel_keeps_pins(ctx) {
            Vec::new()
        } else {
            scan.pinned(ctx, affected(ctx, &changes))?
        },
        settings,
        why: choice.why,
    });
    Ok(changes)
}

/// Who holds the isolated CPUs in `next`: the VMs `kvmtune run` placed, and libvirt's.
pub fn holders(next: &Ledger) -> Holders {
    let mut holders = Holders::default();
    for (name, vm) in next.vms.iter().filter(|(_, vm)| !vm.isolate.is_empty()) {
        if vm.kvmtune_run {
            holders.kvmtune_run = holders.kvmtune_run.union(&vm.isolate);
        } else {
            holders.libvirt.push((name.clone(), vm.isolate.clone()));
            if let Some(why) = &vm.partition_misfit {
                holders.misfits.push((name.clone(), why.clone()));
            }
        }
    }
    holders
}

fn inputs<'a>(
    ctx: &'a Probe,
    settings: &'a IsolationSettings,
    view: &'a View,
    keep: &'a [u32],
    holders: &'a Holders,
    baseline: &'a [Change],
) -> Inputs<'a> {
    Inputs {
        fs: ctx.fs,
        systemctl: ctx.systemctl,
        settings,
        view,
        keep,
        holders,
        baseline,
    }
}

/// The isolation changes `next` calls for, and the pinned threads to keep across them. Threads
/// are scanned only when there is something to change: a VM that isolates nothing, while
/// nothing is isolated, costs no walk over every thread of the host on libvirt's start path.
///
/// Also the name and flags of every process the scan read, so that moving processes need not
/// read them again.
pub fn changes_and_pins(
    ctx: &Probe,
    policy: Option<&Policy>,
    ledger: &Ledger,
    next: &mut Ledger,
) -> Result<(Vec<Change>, Vec<PinnedThread>, Known)> {
    let mut scan = Scan::default();
    let changes = changes_with(ctx, policy, next, &mut scan)?;
    let pins = if changes.is_empty() {
        Vec::new()
    } else {
        pins_with(ctx, ledger, &mut scan, Some(&changes))
    };
    let known = scan
        .view
        .map(|v| {
            v.tasks
                .into_iter()
                .map(|t| (t.pid, (t.comm, t.flags)))
                .collect()
        })
        .unwrap_or_default();
    Ok((changes, pins, known))
}

/// The pinned threads whose masks an isolation change may reset: those pinned now, those that
/// were pinned when isolation began (their masks then, which confinement narrowed), and
/// `noted`: those an interrupted operation's journal noted before it moved their processes.
pub fn pins_to_keep(probe: &Probe, ledger: &Ledger, noted: &[PinnedThread]) -> Vec<PinnedThread> {
    let mut pins = noted.to_vec();
    for pin in pins_with(probe, ledger, &mut Scan::default(), None) {
        if !pins.iter().any(|p| p.tid == pin.tid && p.comm == pin.comm) {
            pins.push(pin);
        }
    }
    pins
}

/// `changes`: the changes about to be made (only the processes they move are looked at), or
/// `None` when unknown (every process is).
fn pins_with(
    ctx: &Probe,
    ledger: &Ledger,
    scan: &mut Scan,
    changes: Option<&[Change]>,
) -> Vec<PinnedThread> {
    // (Which processes a change affects is worked out only if their threads are to be read.)
    let affected = match changes {
        Some(c) if !scan.kernel_keeps_pins(ctx) => affected(ctx, c),
        _ => None,
    };
    let Ok(now) = scan.pinned(ctx, affected) else {
        return Vec::new();
    };
    let mut pins = ledger
        .isolation
        .as_ref()
        .map(|h| h.pinned.clone())
        .unwrap_or_default();
    let known: std::collections::HashSet<(u32, String)> =
        pins.iter().map(|p| (p.tid, p.comm.clone())).collect();
    pins.extend(
        now.into_iter()
            .filter(|p| !known.contains(&(p.tid, p.comm.clone()))),
    );
    pins
}
