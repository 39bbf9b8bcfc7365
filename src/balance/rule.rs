//! The balancing rule: a pure function from one snapshot (host memory, each VM's balloon
//! statistics and bounds, what was last changed and when) to the changes of balloon targets.
//! No I/O: the daemon gathers the snapshot and applies the decisions.
//!
//! # The rule (stable; kvmtune(8) documents the same)
//!
//! *free* is the host's `MemAvailable`. *low* and *high* are the policy's `host_free_low` and
//! `host_free_high` (a percentage is of `MemTotal`); *mid* is halfway between them.
//!
//! 1. **Host level.** free < low: the host is *short*. free > high: it is *comfortable*.
//!    In between nothing is moved for the host's sake (the dead band is the hysteresis).
//! 2. **Which VMs may change now.** A VM changed less than `vm_interval` ago, or whose
//!    statistics have not been refreshed since its last change, waits. A VM whose balloon has
//!    not yet reached the last target kvmtune set (by more than 2 MiB) is not pushed further
//!    the same way.
//! 3. **Bounds first.** A VM above its max goes down to max; a VM below its min goes up to
//!    min, unless the host is short (host stability first).
//! 4. **Short host: shrink.** kvmtune takes back *mid − free* in all. A VM can give
//!    *room* = min(unused − `guest_free_min`, size − min), where *unused* is the guest's free
//!    memory. VMs with the most room give first, each `step` percent of its room, at least
//!    `min_step`, at most `max_step`, and no more than what is still needed (but `min_step`).
//!    Growing never happens while the host is short.
//! 5. **Comfortable host: grow.** kvmtune hands out at most *free − mid* in all. VMs with the
//!    least unused memory get first, each `step` percent of its distance to max, at least
//!    `min_step`, at most `max_step`.
//! 6. A change smaller than `min_step` is made only when it lands exactly on the VM's bound.
//!
//! Shrinking stops at mid and growing stops at mid, so what kvmtune does by itself never
//! crosses the other mark: a VM is not squeezed and refilled in turn while the host's own
//! demand stays the same.

use std::fmt;

use crate::policy::balance::BalancePolicy;
use crate::size::human;

const MIB: u64 = 1 << 20;

/// A balloon this close to its target has reached it (guests return whole pages; QEMU reports
/// in KiB).
pub const SETTLED: u64 = 2 * MIB;

/// The host's memory, from /proc/meminfo, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostMem {
    pub total: u64,
    /// `MemAvailable`: what can be given to new work without swapping.
    pub available: u64,
}

/// The sizes a VM's balloon may take, in bytes (resolved: metadata within the policy floor
/// and the VM's `<memory>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: u64,
    pub max: u64,
}

/// The last target kvmtune set for a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastChange {
    /// Unix time, seconds.
    pub at: u64,
    pub target: u64,
}

/// One VM as the rule sees it: balloon statistics in bytes, times in Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmState {
    pub name: String,
    /// The guest's memory now (`dommemstat` actual).
    pub actual: u64,
    /// The guest's free memory (`dommemstat` unused).
    pub unused: u64,
    /// When the guest last reported statistics (`dommemstat` last_update).
    pub stats_at: u64,
    pub bounds: Bounds,
    pub last: Option<LastChange>,
}

/// How the host stands against its marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostLevel {
    Short,
    Steady,
    Comfortable,
}

/// A new balloon target for one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub vm: String,
    /// The balloon's size now, bytes.
    pub old: u64,
    /// The new target, bytes (a multiple of 1 KiB: `virsh setmem` takes KiB).
    pub new: u64,
    pub why: String,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VM {:?}: balloon {} → {}: {}",
            self.vm,
            human(self.old),
            human(self.new),
            self.why
        )
    }
}

/// What the rule found and decided for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub level: HostLevel,
    pub free: u64,
    pub low: u64,
    pub high: u64,
    pub decisions: Vec<Decision>,
}

/// Apply the rule (see the module documentation) at Unix time `now`.
pub fn decide(host: HostMem, vms: &[VmState], p: &BalancePolicy, now: u64) -> Verdict {
    let low = p.host_free_low.resolve(host.total);
    let high = p.host_free_high.resolve(host.total).max(low);
    let mid = low + (high - low) / 2;
    let free = host.available;
    let level = if free < low {
        HostLevel::Short
    } else if free > high {
        HostLevel::Comfortable
    } else {
        HostLevel::Steady
    };
    let mut decisions = Vec::new();
    let ready: Vec<&VmState> = vms.iter().filter(|v| may_change(v, p, now)).collect();

    // 3. Bounds first.
    let mut freed = 0u64;
    let mut taken = 0u64;
    let mut rest = Vec::new();
    for vm in ready {
        let Bounds { min, max } = vm.bounds;
        if vm.actual > max + SETTLED && !inflating(vm) {
            freed += vm.actual - max;
            decisions.push(decision(vm, max, format!("above its max {}", human(max))));
        } else if vm.actual + SETTLED < min && level != HostLevel::Short && !deflating(vm) {
            taken += min - vm.actual;
            decisions.push(decision(vm, min, format!("below its min {}", human(min))));
        } else {
            rest.push(vm);
        }
    }

    match level {
        HostLevel::Short => {
            let mut need = (mid - free).saturating_sub(freed);
            rest.retain(|v| !inflating(v));
            rest.sort_by(|a, b| room(b, p).cmp(&room(a, p)).then(a.name.cmp(&b.name)));
            for vm in rest {
                if need == 0 {
                    break;
                }
                let room = room(vm, p);
                let to_bound = vm.actual.saturating_sub(vm.bounds.min);
                let step = sized(room, room, p).min(need.max(p.min_step));
                let step = round_step(step, to_bound);
                if step == 0 || (step < p.min_step && step != to_bound) {
                    continue;
                }
                need = need.saturating_sub(step);
                decisions.push(decision(
                    vm,
                    vm.actual - step,
                    format!(
                        "host free {} below {} (low mark), VM unused {}",
                        human(free),
                        human(low),
                        human(vm.unused)
                    ),
                ));
            }
        }
        HostLevel::Comfortable => {
            let mut headroom = (free - mid).saturating_sub(taken);
            rest.retain(|v| !deflating(v) && v.actual < v.bounds.max);
            rest.sort_by(|a, b| a.unused.cmp(&b.unused).then(a.name.cmp(&b.name)));
            for vm in rest {
                let gap = vm.bounds.max - vm.actual;
                let step = sized(gap, gap, p).min(headroom);
                let step = round_step(step, gap);
                if step == 0 || (step < p.min_step && step != gap) {
                    continue;
                }
                headroom -= step;
                decisions.push(decision(
                    vm,
                    vm.actual + step,
                    format!(
                        "host free {} above {} (high mark), VM unused {}",
                        human(free),
                        human(high),
                        human(vm.unused)
                    ),
                ));
            }
        }
        HostLevel::Steady => {}
    }
    Verdict {
        level,
        free,
        low,
        high,
        decisions,
    }
}

/// Step 2: the interval has passed and the guest has reported since the last change.
fn may_change(vm: &VmState, p: &BalancePolicy, now: u64) -> bool {
    match vm.last {
        None => true,
        Some(last) => now >= last.at + p.vm_interval.as_secs() && vm.stats_at > last.at,
    }
}

/// The balloon is still inflating toward a lower target kvmtune set.
fn inflating(vm: &VmState) -> bool {
    vm.last.is_some_and(|l| vm.actual > l.target + SETTLED)
}

/// The balloon is still deflating toward a higher target kvmtune set.
fn deflating(vm: &VmState) -> bool {
    vm.last.is_some_and(|l| vm.actual + SETTLED < l.target)
}

/// What a VM can give without going below its min or leaving its guest less than
/// `guest_free_min` free.
fn room(vm: &VmState, p: &BalancePolicy) -> u64 {
    vm.unused
        .saturating_sub(p.guest_free_min)
        .min(vm.actual.saturating_sub(vm.bounds.min))
}

/// `step` percent of `base`, at least `min_step`, at most `max_step`, never more than `limit`.
fn sized(base: u64, limit: u64, p: &BalancePolicy) -> u64 {
    let share = (base as u128 * p.step_percent as u128 / 100) as u64;
    share.clamp(p.min_step, p.max_step).min(limit)
}

/// Whole MiB, so targets stay readable; a step to the bound is kept exact (bounds are whole KiB).
fn round_step(step: u64, to_bound: u64) -> u64 {
    if step == to_bound {
        step
    } else {
        step / MIB * MIB
    }
}

fn decision(vm: &VmState, new: u64, why: String) -> Decision {
    Decision {
        vm: vm.name.clone(),
        old: vm.actual,
        new,
        why,
    }
}

#[cfg(test)]
mod tests;
