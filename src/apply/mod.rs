//! Making a plan real, and undoing it: every change is journaled before it is made, read back
//! after, and rolled back on the first shortfall. Release and recover work from the ledger and
//! the journals only: they take a `Base`, which has no policy, and where they must recompute
//! (narrowing isolation, giving IRQs back while other VMs run) they use the settings the holds
//! in the ledger recorded. Whether kvmtune may change the host at all is the `Privilege` the
//! entry decided, checked before the lock is taken.

pub mod effects;
pub mod hugepages;
pub mod irq;
pub mod isolation;
pub mod knobs;

use std::time::Instant;

use crate::change::Change;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::host::hugepages::read_pool;
use crate::host::irqbalance::IrqBalancer;
use crate::host::snapshot::Snapshot;
use crate::host::systemctl::Systemctl;
use crate::host::tasks::{Known, TaskAffinity};
use crate::host::topology::node_mem_free;
use crate::host::HostFs;
use crate::log;
use crate::plan::{self, Plan};
use crate::policy::Policy;
use crate::privilege::Privilege;
use crate::size::{human, page_size_name};
use crate::state::holds::IrqSettings;
use crate::state::{Journal, Ledger, Operation, Phase, StateDir, StateLock};
use effects::Effects;

/// What every operation works with: the host (its files, systemd, task affinity, irqbalance),
/// the state directory, and who kvmtune runs as. `release` and `recover` need nothing more:
/// they work from the journal and the ledger, so a policy that is broken (or changed) while VMs
/// run cannot keep a stopped VM's holdings.
#[derive(Clone, Copy)]
pub struct Base<'a> {
    pub fs: &'a dyn HostFs,
    pub systemctl: &'a dyn Systemctl,
    pub affinity: &'a dyn TaskAffinity,
    pub irqbalance: &'a dyn IrqBalancer,
    pub state: &'a StateDir,
    pub privilege: &'a Privilege,
}

/// `Base` and the policy: what `prepare`, `started` and `irq-watch` work with.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub base: Base<'a>,
    pub policy: &'a Policy,
    /// The operation is `kvmtune run`'s, which starts the VM's QEMU and places it itself
    /// (libvirt's hook: false).
    pub kvmtune_run: bool,
}

impl<'a> std::ops::Deref for Context<'a> {
    type Target = Base<'a>;

    fn deref(&self) -> &Base<'a> {
        &self.base
    }
}

impl Base<'_> {
    fn effects(&self) -> Effects<'_> {
        Effects::new(self.fs, self.systemctl, self.affinity, self.irqbalance)
    }

    /// One look at the host as it is now, to work out changes from (`Snapshot::probe`).
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot::new(self.fs, self.systemctl, self.irqbalance)
    }
}

/// `prepare`: reserve what the VM needs. On failure the host is as it was and the error says why.
pub fn prepare(ctx: &Context, vm: &str, domain: &Domain) -> Result<Plan> {
    // Most VMs ask for nothing: answer them without the lock or a look at the host, so
    // libvirt's start path is not held up behind another VM's reservation.
    // While CPUs are isolated, every VM event also sweeps new host processes into place.
    // An unreadable ledger is left to the locked path, which sets it aside.
    if plan::asks_nothing(domain, ctx.policy) {
        if let Ok(ledger) = ctx.state.load_ledger() {
            if !ledger.vms.contains_key(vm) && ledger.isolation.is_none() {
                return Ok(Plan::nothing(vm));
            }
        }
    }
    let lock = lock(ctx)?;
    let mut ledger = ctx.state.load_ledger()?;
    if ledger.vms.contains_key(vm) {
        // libvirt never prepares a running VM; an entry left here is from a run whose release
        // we never saw (daemon crash). Give it back before starting afresh.
        log::warn(&format!(
            "VM '{vm}' still held resources from an earlier run; releasing them first"
        ));
        release_held(ctx, vm, &mut ledger)?;
    }
    // Every change is worked out from one look at the host before the first is made, by the
    // code `kvmtune plan` runs.
    let snapshot = ctx.snapshot();
    let probe = snapshot.probe();
    let plan = plan::changes::checked_plan(&probe, ctx.policy, domain, vm, &ledger)?;
    if plan::changes::holds_nothing(&plan, &ledger) {
        return Ok(plan);
    }
    let plan::changes::Prepare {
        knobs: knob_changes,
        // The same `PoolGrowth::change`s, journaled one by one below as each pool grows
        // (`hugepages::grow` compacts and retries, which a `Change` cannot say).
        pools: _,
        isolation: isolation_changes,
        pins,
        known,
        next,
    } = plan::changes::prepare(&probe, ctx.policy, &plan, &ledger, ctx.kvmtune_run)?;
    let deadline = Instant::now() + ctx.policy.reserve_timeout;
    let mut journal = Journal::new(vm, Operation::Prepare);
    // Knobs before pages (see `plan::changes::Prepare::knobs`).
    if let Err(e) = knobs::make(ctx, &mut journal, knob_changes) {
        undo_prepare(ctx, &journal)?;
        return Err(e);
    }
    for growth in plan.hugepages.iter().filter(|g| g.grow > 0) {
        journal.changes.extend(growth.change());
        ctx.state.save_journal(&journal)?;
        let grown = match hugepages::grow(ctx.fs, growth, ctx.policy.compaction, deadline) {
            Ok(grown) => grown,
            Err(e) => {
                undo_prepare(ctx, &journal)?;
                return Err(e);
            }
        };
        count(ctx, &lock, |c| {
            c.compaction_retries += u64::from(grown.compactions);
            c.reservation_failures += u64::from(grown.shortfall.is_some());
        });
        let Some(shortfall) = grown.shortfall else {
            continue;
        };
        undo_prepare(ctx, &journal)?;
        return Err(shortfall_error(ctx, vm, &shortfall));
    }

    // Isolation also sweeps host processes started since the last VM event into place.
    journal.pins = pins.clone();
    let result = make_isolation(ctx, &mut journal, isolation_changes, &next, &known);
    if let Err(e) = result {
        undo_prepare(ctx, &journal)?;
        isolation::restore_pins(ctx, &pins);
        return Err(e);
    }
    isolation::restore_pins(ctx, &pins);
    isolation::log_set_up(&ledger, &next);
    commit(ctx, journal, &next)?;
    Ok(plan)
}

/// The one line for a pool the kernel would not grow far enough, said after the undo so the
/// free memory it quotes is the host's as it is left.
fn shortfall_error(ctx: &Context, vm: &str, s: &hugepages::Shortfall) -> Error {
    let pool = s.growth.pool;
    let node = pool.node;
    let free = node_mem_free(ctx.fs, node).ok();
    let missing_bytes = s.growth.pages.saturating_sub(s.obtainable) * pool.page_bytes();
    let free_text = match free {
        // Enough free memory, yet no pages: it is in pieces smaller than a page.
        Some(bytes) if bytes >= missing_bytes => format!(
            "{} free on node {node}, too fragmented for {} pages",
            human(bytes),
            page_size_name(pool.page_kib)
        ),
        Some(bytes) => format!("{} free on node {node}", human(bytes)),
        None => format!("free memory on node {node} unknown"),
    };
    let how = if s.compacted {
        " after compaction"
    } else if ctx.policy.compaction {
        ""
    } else {
        " (compaction is off)"
    };
    Error::Refused(format!(
        "VM '{vm}' needs {} x {} pages on node {node}; {} could be reserved{how} ({free_text}). Nothing was changed.",
        s.growth.pages,
        page_size_name(pool.page_kib),
        s.obtainable,
    ))
}

/// `started`: QEMU runs and has taken its pages (no longer promised from the free pool), and
/// has opened its devices: their IRQs go where the policy says, other IRQs off isolated CPUs.
pub fn started(ctx: &Context, vm: &str) -> Result<()> {
    // A VM kvmtune holds nothing for, while nothing is isolated: nothing to place, no lock.
    if let Ok(peek) = ctx.state.load_ledger() {
        if !peek.vms.contains_key(vm) && peek.isolation.is_none() {
            return Ok(());
        }
    }
    let _lock = lock(ctx)?;
    let ledger = ctx.state.load_ledger()?;
    let mut next = ledger.clone();
    match next.vms.get_mut(vm) {
        Some(hold) => hold.phase = Phase::Running,
        None if ledger.isolation.is_none() => return Ok(()),
        None => {}
    }
    let mut journal = Journal::new(vm, Operation::Started);
    // At a reconnect after a libvirtd restart, whatever drifted is put back: a pool someone
    // shrank, processes started meanwhile, a reset cpuset, mask, knob or IRQ.
    reassert_into(ctx, &ledger, &mut next, &mut journal, Scope::ALL)?;
    if next == ledger && journal.changes.is_empty() {
        return ctx.state.remove_journal(&journal.vm);
    }
    commit(ctx, journal, &next)
}

/// Which parts of what kvmtune holds a reassertion looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub hugepages: bool,
    pub isolation: bool,
    pub knobs: bool,
    pub irqs: bool,
}

impl Scope {
    pub const ALL: Scope = Scope {
        hugepages: true,
        isolation: true,
        knobs: true,
        irqs: true,
    };
    pub const IRQS: Scope = Scope {
        irqs: true,
        ..Scope::NONE
    };
    pub const NONE: Scope = Scope {
        hugepages: false,
        isolation: false,
        knobs: false,
        irqs: false,
    };
}

/// The changes one reassertion made, by part: the watcher says each part in one line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reasserted {
    pub hugepages: Vec<Change>,
    /// Processes swept, cgroups, units, kernel threads, workqueue masks, governors.
    pub isolation: Vec<Change>,
    pub knobs: Vec<Change>,
    /// IRQ affinities and irqbalance.
    pub irqs: Vec<Change>,
}

/// The journal of the watcher's own operations. No domain name holds a `/`: this journal can
/// never be a VM's. (Older releases' `irq-watch` used `/irq-watch`; any journal left by it is
/// finished like every other.)
pub const WATCH_JOURNAL: &str = "/watch";

/// Put back, under the lock, what the ledger says kvmtune holds wherever the host drifted from
/// it, through the same journaled path as `reconnect` (for the watcher). The changes are
/// committed before it returns.
pub fn reassert(ctx: &Context, _lock: &StateLock, scope: Scope) -> Result<Reasserted> {
    let ledger = ctx.state.load_ledger()?;
    let mut next = ledger.clone();
    let mut journal = Journal::new(WATCH_JOURNAL, Operation::Started);
    let done = reassert_into(ctx, &ledger, &mut next, &mut journal, scope)?;
    if next == ledger && journal.changes.is_empty() {
        ctx.state.remove_journal(&journal.vm)?;
    } else {
        commit(ctx, journal, &next)?;
    }
    Ok(done)
}

/// The parts of `started` that bring the host back in line with `next`, journaling each
/// change first; on a failure everything this call made is undone.
fn reassert_into(
    ctx: &Context,
    ledger: &Ledger,
    next: &mut Ledger,
    journal: &mut Journal,
    scope: Scope,
) -> Result<Reasserted> {
    let mut done = Reasserted::default();
    let mut mark = journal.changes.len();
    let mut since = |journal: &Journal, part: &mut Vec<Change>| {
        part.extend(journal.changes[mark..].iter().cloned());
        mark = journal.changes.len();
    };
    if scope.hugepages {
        hugepages::restore_drifted(ctx, ledger, journal)?;
        since(journal, &mut done.hugepages);
    }
    let mut pins = Vec::new();
    let result = (|| {
        // The rest is worked out from one look at the host (after the pools, which it does
        // not read), then made: processes started meanwhile swept into place, a cpuset, unit,
        // mask, knob or IRQ someone reset put back.
        let snapshot = ctx.snapshot();
        let probe = snapshot.probe();
        let isolation = scope
            .isolation
            .then(|| plan::isolation::changes_and_pins(&probe, Some(ctx.policy), ledger, next))
            .transpose()?;
        let knob_changes = scope
            .knobs
            .then(|| plan::knob_changes::changes(probe.fs, next))
            .transpose()?;
        let placement = scope
            .irqs
            .then(|| plan::irq::placement(&probe, IrqSettings::of(ctx.policy), next));
        if let Some((changes, noted, known)) = isolation {
            journal.pins = noted.clone();
            pins = noted;
            make_isolation(ctx, journal, changes, next, &known)?;
            isolation::log_set_up(ledger, next);
            since(journal, &mut done.isolation);
        }
        if let Some(knob_changes) = knob_changes {
            knobs::make(ctx, journal, knob_changes)?;
            since(journal, &mut done.knobs);
        }
        if let Some(placement) = placement {
            irq::place(ctx, placement, next, journal)?;
            since(journal, &mut done.irqs);
        }
        Ok(())
    })();
    if let Err(e) = result {
        undo_prepare(ctx, journal)?;
        isolation::restore_pins(ctx, &pins);
        return Err(e);
    }
    isolation::restore_pins(ctx, &pins);
    Ok(done)
}

/// The `irq-watch` pass: pin device IRQs that appeared (or were reset) since the last look.
/// Cheap when nothing changed: no lock, no write.
pub fn refresh_irqs(ctx: &Context) -> Result<usize> {
    if let Ok(ledger) = ctx.state.load_ledger() {
        if !irq::needs_refresh(ctx, &ledger) {
            return Ok(0);
        }
    }
    locked(ctx, |lock| reassert(ctx, lock, Scope::IRQS)).map(|done| done.irqs.len())
}

/// Run `f` under the host lock, once interrupted work is finished (for the watcher, which
/// decides without the lock whether anything needs changing, and takes it only then).
pub fn locked<T>(ctx: &Base, f: impl FnOnce(&StateLock) -> Result<T>) -> Result<T> {
    let lock = lock(ctx)?;
    f(&lock)
}

/// Add to the counters; a failure to write them is logged, never fatal (they are statistics).
fn count(ctx: &Base, lock: &StateLock, change: impl FnOnce(&mut crate::state::Counters)) {
    if let Err(e) = ctx.state.count(lock, change) {
        log::warn(&format!("cannot update the counters: {e}"));
    }
}

/// `release`: give back what the VM held. A VM kvmtune holds nothing for is a no-op (a failed
/// or absent prepare).
pub fn release(ctx: &Base, vm: &str) -> Result<()> {
    let _lock = lock(ctx)?;
    let mut ledger = ctx.state.load_ledger()?;
    if !ledger.vms.contains_key(vm) {
        return Ok(());
    }
    release_held(ctx, vm, &mut ledger)
}

/// Which VMs `recover` releases.
pub enum Recover<'a> {
    /// Every VM whose QEMU no longer runs.
    AllStopped,
    One(&'a str),
    /// Those of these VMs that the ledger still says run and whose QEMU no longer runs (the
    /// watcher saw them go without the lock: under it, a VM started again since is kept).
    Gone(&'a [String]),
}

/// Finish or undo interrupted operations, then release VMs that no longer run. Idempotent.
/// Returns the names released.
pub fn recover(ctx: &Base, which: Recover) -> Result<Vec<String>> {
    locked(ctx, |lock| recover_locked(ctx, lock, which))
}

/// `recover`, with the lock already taken.
pub fn recover_locked(ctx: &Base, _lock: &StateLock, which: Recover) -> Result<Vec<String>> {
    let mut ledger = ctx.state.load_ledger()?;
    let gone = |name: &str| !crate::host::process::qemu_running(ctx.fs, name);
    let names: Vec<String> = match which {
        Recover::One(vm) => ledger
            .vms
            .keys()
            .filter(|n| n.as_str() == vm)
            .cloned()
            .collect(),
        Recover::AllStopped => ledger.vms.keys().filter(|n| gone(n)).cloned().collect(),
        Recover::Gone(names) => ledger
            .vms
            .iter()
            .filter(|(n, hold)| {
                hold.phase == Phase::Running && names.contains(n) && gone(n.as_str())
            })
            .map(|(n, _)| n.clone())
            .collect(),
    };
    for vm in &names {
        release_held(ctx, vm, &mut ledger)?;
    }
    Ok(names)
}

/// Shrink each pool the VM used by what kvmtune added for it; a pool no VM uses any more
/// returns to its baseline. Updates `ledger` to the committed state.
fn release_held(ctx: &Base, vm: &str, ledger: &mut Ledger) -> Result<()> {
    let Some(hold) = ledger.vms.get(vm).cloned() else {
        return Ok(());
    };
    let mut next = ledger.clone();
    next.vms.remove(vm);
    let mut journal = Journal::new(vm, Operation::Release);
    // Every change is worked out from one look at the host before the first is made.
    let snapshot = ctx.snapshot();
    let probe = snapshot.probe();
    for h in &hold.hugepages {
        let state = read_pool(probe.fs, h.pool)?;
        let target = match (next.others_hold(h.pool, vm), ledger.baseline(h.pool)) {
            (false, Some(baseline)) => baseline,
            _ => state.persistent().saturating_sub(h.added),
        };
        let after = target + state.surplus;
        if after != state.nr {
            journal.changes.push(Change::File {
                path: h.pool.nr_path(),
                before: state.nr.to_string(),
                after: after.to_string(),
            });
        }
    }
    next.drop_unheld_baselines();
    journal
        .changes
        .extend(plan::knob_changes::changes(probe.fs, &mut next)?);
    journal
        .changes
        .extend(plan::irq::give_back(&probe, &mut next)?);
    // Narrowed with the settings isolation was set up with: release reads no policy.
    let (changes, pins, known) =
        plan::isolation::changes_and_pins(&probe, None, ledger, &mut next)?;
    journal.pins = pins.clone();
    journal.changes.extend(changes);
    if !journal.changes.is_empty() {
        ctx.state.save_journal(&journal)?;
        redo(ctx, &journal, &known)?;
        isolation::restore_pins(ctx, &pins);
    }
    commit(ctx, journal, &next)?;
    log::info(&format!("VM '{vm}' released"));
    *ledger = next;
    Ok(())
}

/// Journal the isolation changes, make them one by one, then check that the kernel confines
/// host tasks where asked. The journal is written once, before the first change (one write per
/// change would rewrite a growing journal for every kernel thread moved); undoing a change that
/// was never made puts back the value that is still there.
fn make_isolation(
    ctx: &Base,
    journal: &mut Journal,
    changes: Vec<Change>,
    next: &Ledger,
    known: &Known,
) -> Result<()> {
    if !changes.is_empty() {
        journal.changes.extend(changes.iter().cloned());
        ctx.state.save_journal(journal)?;
    }
    let mut effects = ctx.effects();
    effects.known = Some(known);
    for change in changes {
        effects.apply(&change)?;
        crate::isolation::partition::read_back(ctx.fs, &change)?;
    }
    effects.finish()?;
    isolation::verify(ctx, next)
}

/// Record the operation as done: the journal carries the resulting ledger until it is saved.
fn commit(ctx: &Base, mut journal: Journal, next: &Ledger) -> Result<()> {
    if journal.changes.is_empty() {
        // A journal may have been written for a change the kernel then refused.
        ctx.state.save_ledger(next)?;
        return ctx.state.remove_journal(&journal.vm);
    }
    journal.committed = Some(next.clone());
    ctx.state.save_journal(&journal)?;
    ctx.state.save_ledger(next)?;
    ctx.state.remove_journal(&journal.vm)
}

/// Put back every value a prepare changed, newest first, then forget the journal.
fn undo_prepare(ctx: &Base, journal: &Journal) -> Result<()> {
    let mut failed = None;
    let effects = ctx.effects();
    for change in journal.changes.iter().rev() {
        if let Err(e) = effects.undo(change) {
            log::error(&format!("cannot undo {change}: {e}"));
            failed.get_or_insert(e);
        }
    }
    if let Err(e) = effects.finish() {
        failed.get_or_insert(e);
    }
    if journal
        .changes
        .iter()
        .any(crate::isolation::partition::touches_partitions)
    {
        isolation::reconfine_kernel_threads(ctx);
    }
    match failed {
        // Keep the journal: the next call or `kvmtune recover` tries again.
        Some(e) => Err(e),
        None => ctx.state.remove_journal(&journal.vm),
    }
}

/// Make every change of a release journal (idempotent: values are absolute). `known`: the
/// processes the caller has just read, if any (moving processes need not read them again).
fn redo(ctx: &Base, journal: &Journal, known: &Known) -> Result<()> {
    let mut effects = ctx.effects();
    effects.known = Some(known);
    for change in &journal.changes {
        effects.apply(change)?;
        // Read back what the kernel may keep otherwise: pages still in use, a knob. (An IRQ
        // takes the value or fails the write; reading back thousands would double the cost.)
        if let Change::File { path, after, .. } = change {
            if path.starts_with("proc/irq/") {
                continue;
            }
            let now = ctx.fs.read(path).unwrap_or_default();
            // A choice file (THP's `always [madvise] never`) shows its value in brackets.
            if !crate::host::knobs::same_value(&now, after) {
                // Pages still in use (a QEMU not yet gone) stay as surplus and drain when freed.
                log::warn(&format!(
                    "{change}: the kernel shows {} for now",
                    crate::host::knobs::value_of(&now)
                ));
            }
        }
    }
    effects.finish()
}

/// Take the host-wide lock, once kvmtune is known to be allowed to change the host, and
/// clear what an interrupted run left: damaged state files, then interrupted operations.
fn lock(ctx: &Base) -> Result<StateLock> {
    ctx.privilege.may_change()?;
    let lock = ctx.state.lock()?;
    ctx.state.repair(&lock)?;
    finish_interrupted(ctx)?;
    Ok(lock)
}

/// Finish what a killed kvmtune left: committed journals only need their ledger saved; an
/// interrupted prepare is undone; an interrupted release is finished.
fn finish_interrupted(ctx: &Base) -> Result<()> {
    for journal in ctx.state.journals()? {
        match (&journal.committed, journal.operation) {
            (Some(ledger), _) => {
                ctx.state.save_ledger(ledger)?;
                ctx.state.remove_journal(&journal.vm)?;
            }
            (None, Operation::Prepare | Operation::Started) => {
                log::warn(&format!(
                    "undoing the interrupted prepare of VM '{}'",
                    journal.vm
                ));
                let pins = plan::isolation::pins_to_keep(
                    &ctx.snapshot().probe(),
                    &ctx.state.load_ledger()?,
                    &journal.pins,
                );
                undo_prepare(ctx, &journal)?;
                isolation::restore_pins(ctx, &pins);
            }
            (None, Operation::Release) => {
                log::warn(&format!(
                    "finishing the interrupted release of VM '{}'",
                    journal.vm
                ));
                let pins = plan::isolation::pins_to_keep(
                    &ctx.snapshot().probe(),
                    &ctx.state.load_ledger()?,
                    &journal.pins,
                );
                redo(ctx, &journal, &Known::default())?;
                isolation::restore_pins(ctx, &pins);
                let mut next = ctx.state.load_ledger()?;
                next.vms.remove(&journal.vm);
                next.drop_unheld_baselines();
                // The journal's changes are made; the holds must say so too (worked out from
                // one look at the host as the release left it).
                let snapshot = ctx.snapshot();
                let probe = snapshot.probe();
                let _ = plan::knob_changes::changes(probe.fs, &mut next)?;
                let _ = plan::irq::give_back(&probe, &mut next)?;
                let _ = plan::isolation::changes(&probe, None, &mut next)?;
                commit(ctx, journal, &next)?;
            }
        }
    }
    Ok(())
}
