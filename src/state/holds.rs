//! The holds the ledger keeps for features shared by every VM: what isolation (`IsolationHold`)
//! and IRQ placement (`IrqHold`) changed, with the values first found and the policy settings
//! they were made with. They are persisted state, read by `release` and `recover` without the
//! policy; the `isolation` and `irq` modules work out the changes that fill them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::change::Change;
use crate::cpulist::CpuSet;
use crate::host::tasks::PinnedThread;
use crate::policy::Policy;

/// How host tasks are kept off isolated CPUs (chosen by `isolation::choose_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Systemd,
    CgroupV2,
    CgroupV1,
    Partition,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Systemd => "systemd AllowedCPUs",
            Method::CgroupV2 => "cgroup v2 cpuset",
            Method::CgroupV1 => "cgroup v1 cpuset",
            Method::Partition => "isolated cpuset partition",
        })
    }
}

/// Kept in the ledger while any VM is isolated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationHold {
    pub method: Method,
    /// The CPUs host tasks are confined to now.
    pub housekeeping: CpuSet,
    /// Every change made since isolation began, once per thing, with the value found first.
    pub baseline: Vec<Change>,
    /// Threads that were pinned when isolation began: their masks are put back at the end.
    #[serde(default)]
    pub pinned: Vec<PinnedThread>,
    /// The policy's settings the host tasks were last confined with. `release` narrows the
    /// isolation with these, never with the policy, which may have changed or broken since.
    /// (A ledger written before they were kept reads as the built-in defaults.)
    #[serde(default)]
    pub settings: IsolationSettings,
    /// Why this method was chosen, for `kvmtune status` (empty in ledgers from before).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

/// The policy's settings that shape the confinement, as a hold keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IsolationSettings {
    /// `cpus.move_kernel_threads`.
    pub move_kernel_threads: bool,
    /// `cpus.governor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub governor: Option<String>,
}

impl Default for IsolationSettings {
    fn default() -> Self {
        IsolationSettings::of(&Policy::default())
    }
}

impl IsolationSettings {
    pub fn of(policy: &Policy) -> IsolationSettings {
        IsolationSettings {
            move_kernel_threads: policy.move_kernel_threads,
            governor: policy.governor.clone(),
        }
    }
}

/// What kvmtune keeps about IRQs in the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqHold {
    /// The value first found in each affinity file kvmtune changed.
    pub baseline: BTreeMap<String, String>,
    /// IRQs the kernel would not move (managed IRQs: EIO, or EPERM since 6.12).
    pub refused: BTreeSet<u32>,
    /// irqbalance's banned CPUs before kvmtune added the isolated ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irqbalance_banned: Option<CpuSet>,
    /// Why irqbalance could not be told, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irqbalance_note: Option<String>,
    /// The policy's settings the IRQs were last placed with. `release` gives IRQs back with
    /// these, never with the policy, which may have changed or broken since. (A ledger written
    /// before they were kept reads as the built-in defaults.)
    #[serde(default)]
    pub settings: IrqSettings,
}

impl IrqHold {
    /// Nothing held: no changed affinity, refused IRQ, irqbalance value or note (whatever the
    /// settings).
    pub fn is_empty(&self) -> bool {
        self.baseline.is_empty()
            && self.refused.is_empty()
            && self.irqbalance_banned.is_none()
            && self.irqbalance_note.is_none()
    }
}

/// The policy's IRQ settings, as a hold keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IrqSettings {
    /// `irq.move_others`: IRQs that are not a VM's move off isolated CPUs.
    pub move_others: bool,
    /// `irq.irqbalance`: a running irqbalance is told to keep off isolated CPUs.
    pub irqbalance: bool,
}

impl Default for IrqSettings {
    fn default() -> Self {
        IrqSettings::of(&Policy::default())
    }
}

impl IrqSettings {
    pub fn of(policy: &Policy) -> IrqSettings {
        IrqSettings {
            move_others: policy.move_other_irqs,
            irqbalance: policy.irqbalance,
        }
    }
}
