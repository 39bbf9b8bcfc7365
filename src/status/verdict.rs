//! Whether every promise kvmtune made holds now, and if not, which: the line `kvmtune status`
//! starts with, its exit status (0 kept, 1 not) and `kvmtune_promises_kept`.
//!
//! The promises, as SPEC.md and the hook make them: no operation is left half done; a VM that
//! holds resources runs; each pool keeps the pages kvmtune added for its VMs; host tasks stay
//! off isolated CPUs (per-CPU kernel threads cannot move; the virtualization daemons stay
//! unconfined on purpose on cgroupfs hosts) and what kvmtune set to confine them still holds;
//! once a VM runs, its device IRQs are where it asked and other IRQs off isolated CPUs; host
//! knobs keep the value held for their VMs; irqbalance can be told to keep off isolated CPUs.
//! IRQs are judged against the running VMs only: they are placed at `started`.

use serde::Serialize;

use super::Status;
use crate::host::cgroup::CgroupMounts;
use crate::host::{Host, HostFs};
use crate::isolation::Unconfined;
use crate::policy::Policy;
use crate::state::{Ledger, Phase};

/// One kind of promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Promise {
    /// Every operation finished or undone.
    Interrupted,
    /// A VM that holds resources runs.
    GoneVm,
    Hugepages,
    Isolation,
    Irqs,
    Knobs,
    Irqbalance,
}

impl Promise {
    pub const ALL: [Promise; 7] = [
        Promise::Interrupted,
        Promise::GoneVm,
        Promise::Hugepages,
        Promise::Isolation,
        Promise::Irqs,
        Promise::Knobs,
        Promise::Irqbalance,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Promise::Interrupted => "interrupted",
            Promise::GoneVm => "gone_vm",
            Promise::Hugepages => "hugepages",
            Promise::Isolation => "isolation",
            Promise::Irqs => "irqs",
            Promise::Knobs => "knobs",
            Promise::Irqbalance => "irqbalance",
        }
    }
}

/// A promise that does not hold, and what shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    pub promise: Promise,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub kept: bool,
    pub broken: Vec<Broken>,
}

/// Details shown in the one line; the rest are in `--json` and the sections below it.
const SHOWN: usize = 4;
/// Tasks or IRQs named in one detail.
const NAMED: usize = 5;

impl Verdict {
    /// The one line `kvmtune status` starts with.
    pub fn line(&self) -> String {
        if self.kept {
            return "Verdict: all promises kept".into();
        }
        let mut details: Vec<String> = self
            .broken
            .iter()
            .take(SHOWN)
            .map(|b| format!("{}: {}", b.promise.name(), b.detail))
            .collect();
        if self.broken.len() > SHOWN {
            details.push(format!("and {} more", self.broken.len() - SHOWN));
        }
        format!(
            "Verdict: {} promise(s) not kept: {}",
            self.broken.len(),
            details.join("; ")
        )
    }

    /// Exit status of `kvmtune status`: 0 kept, 1 not.
    pub fn exit_code(&self) -> i32 {
        if self.kept {
            0
        } else {
            1
        }
    }

    /// How many broken promises of this kind.
    pub fn count(&self, promise: Promise) -> usize {
        self.broken.iter().filter(|b| b.promise == promise).count()
    }
}

/// Judge the host against the ledger. `status` is the rest of what `status` gathered.
pub fn judge(
    fs: &dyn HostFs,
    ledger: &Ledger,
    policy: &Policy,
    host: &Host,
    status: &Status,
) -> Verdict {
    let mut broken = Vec::new();
    let mut say = |promise, detail: String| broken.push(Broken { promise, detail });
    for vm in &status.interrupted {
        say(
            Promise::Interrupted,
            format!("an operation of VM '{vm}' was interrupted (run `kvmtune recover`)"),
        );
    }
    for vm in &status.vms {
        if vm.phase == Phase::Running && vm.qemu_pids.is_empty() {
            say(
                Promise::GoneVm,
                format!(
                    "VM '{}' holds resources, but no QEMU process names it",
                    vm.name
                ),
            );
        }
    }
    for baseline in &ledger.pools {
        let want = baseline.persistent + ledger.added(baseline.pool);
        let have = host.pool(baseline.pool).map_or(0, |p| p.persistent());
        if have < want {
            say(
                Promise::Hugepages,
                format!(
                    "{} holds {have} persistent pages, {want} while its VMs run",
                    baseline.pool
                ),
            );
        }
    }
    let mounts = crate::host::cgroup::detect(fs).ok();
    for (promise, detail) in isolation(fs, mounts.as_ref(), ledger, status) {
        say(promise, detail);
    }
    if let Some(detail) = mounts.as_ref().and_then(|m| stranded(fs, m)) {
        say(Promise::Isolation, detail);
    }
    if let Some(detail) = irqs(fs, ledger, policy) {
        say(Promise::Irqs, detail);
    }
    for knob in &status.knobs.held {
        if knob.now.as_deref() != Some(knob.value.as_str()) {
            say(
                Promise::Knobs,
                format!(
                    "{} is {}, held at {} for VM {}",
                    knob.path,
                    knob.now.as_deref().unwrap_or("gone"),
                    knob.value,
                    knob.vms.join(", ")
                ),
            );
        }
    }
    if let Some(note) = ledger.irq.as_ref().and_then(|h| h.irqbalance_note.clone()) {
        say(Promise::Irqbalance, note);
    }
    Verdict {
        kept: broken.is_empty(),
        broken,
    }
}

/// CPUs the kernel keeps isolated with no partition holding them (`partition::stranded`).
fn stranded(fs: &dyn HostFs, mounts: &CgroupMounts) -> Option<String> {
    let (cpus, path) = crate::isolation::partition::stranded(fs, mounts)?;
    Some(format!(
        "the kernel keeps CPUs {cpus} isolated ({path}) though no isolated partition holds them: a partition was left invalid when its cgroup went (kernel 6.12), and no VM can be pinned there until the host reboots"
    ))
}

/// What kvmtune set to confine host tasks, and the host tasks still allowed on isolated CPUs.
fn isolation(
    fs: &dyn HostFs,
    mounts: Option<&CgroupMounts>,
    ledger: &Ledger,
    status: &Status,
) -> Vec<(Promise, String)> {
    let (Some(hold), Some(iso)) = (&ledger.isolation, &status.isolation) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(mounts) = mounts {
        let drift = crate::isolation::drift::drifted(fs, hold, mounts);
        if drift.is_empty() {
            // (Partitions take only the CPUs of the VMs whose cgroups are there, a VM libvirt
            // has not started yet has none: the partitions' own read-back says what holds.)
            let holders = crate::plan::isolation::holders(ledger);
            let method = crate::isolation::confiner(hold.method);
            match method.check(fs, mounts, &hold.housekeeping, &holders) {
                Ok(()) => {}
                Err(Unconfined::Failed(e)) => out.push((Promise::Isolation, e.to_string())),
                Err(Unconfined::Elsewhere(effective)) => out.push((
                    Promise::Isolation,
                    format!(
                        "host tasks should be confined to CPUs {}, the kernel gives them {}",
                        hold.housekeeping,
                        effective.map_or("(unreadable)".into(), |e| e.to_string())
                    ),
                )),
            }
        }
        out.extend(drift.into_iter().map(|d| (Promise::Isolation, d)));
    }
    let stray: Vec<String> = iso
        .unconfined
        .iter()
        .filter(|t| !t.is_daemon())
        .map(|t| format!("pid {} {:?}", t.pid, t.comm))
        .collect();
    if !stray.is_empty() {
        out.push((
            Promise::Isolation,
            format!(
                "{} host task(s) may run on isolated CPUs {}: {}",
                stray.len(),
                iso.isolated,
                named(&stray)
            ),
        ));
    }
    out
}

/// Device IRQs of running VMs off their CPUs, or other IRQs on CPUs running VMs isolate.
fn irqs(fs: &dyn HostFs, ledger: &Ledger, policy: &Policy) -> Option<String> {
    let mut running = ledger.clone();
    running.vms.retain(|_, v| v.phase == Phase::Running);
    if !running
        .vms
        .values()
        .any(|v| v.irq.is_some() || !v.isolate.is_empty())
    {
        return None;
    }
    let online = crate::host::topology::parse_list(fs, "sys/devices/system/cpu/online").ok()?;
    let housekeeping = online.difference(&running.isolated_except(""));
    let off: Vec<String> =
        crate::irq::differing(fs, &running, policy.move_other_irqs, &housekeeping)
            .into_iter()
            .map(|(path, now, want)| {
                let what = crate::irq::irq_of(&path)
                    .map_or_else(|| format!("/{path}"), |n| format!("IRQ {n}"));
                format!("{what} on {now}, wanted {want}")
            })
            .collect();
    (!off.is_empty()).then(|| {
        format!(
            "{} IRQ affinity(ies) not where kvmtune put them: {}",
            off.len(),
            named(&off)
        )
    })
}

/// The first few items, and how many more.
fn named(items: &[String]) -> String {
    let mut out = items
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > NAMED {
        out.push_str(&format!(", and {} more", items.len() - NAMED));
    }
    out
}
