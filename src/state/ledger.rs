//! The ledger: what each VM kvmtune knows of holds, and each pool's count before kvmtune first
//! grew it. Release and recover work from this, never from the XML libvirt passes to release.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::holds::{IrqHold, IsolationHold};
use crate::cpulist::CpuSet;
use crate::domain::PciAddress;
use crate::host::PoolKey;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    #[serde(default)]
    pub vms: BTreeMap<String, VmHold>,
    /// Pools kvmtune has grown and must give back, with their `nr_hugepages` before that.
    #[serde(default)]
    pub pools: Vec<PoolBaseline>,
    /// Present while any VM's CPUs are isolated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<IsolationHold>,
    /// Present while kvmtune holds any IRQ affinity changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irq: Option<IrqHold>,
    /// Host knobs kvmtune holds for VMs (file → the value found before the first VM wanted
    /// it), written back when no VM's `knobs` names the file any more.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub knobs: BTreeMap<String, String>,
    /// The banned CPUs kvmtune last told irqbalance, and when. irqbalance applies `settings
    /// cpus` only at its next round (every 10 s by default), and until then its `setup` answer
    /// still shows the set before: a VM starting or stopping meanwhile must go by what it was
    /// told, not by its answer (seen on Debian 13: a ban given back moments before outlived
    /// every VM, and a VM on the same CPUs as one just stopped ran unprotected). Kept for a
    /// while after the last isolated VM stopped. Ledgers of earlier builds, which kept only the
    /// give-back, call it `irqbalance_given_back`.
    #[serde(
        default,
        alias = "irqbalance_given_back",
        skip_serializing_if = "Option::is_none"
    )]
    pub irqbalance_told: Option<Told>,
}

/// See `Ledger::irqbalance_told`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Told {
    pub banned: CpuSet,
    /// When, in seconds since the epoch.
    pub at: u64,
    /// Which irqbalance was told (its PID); `None` in ledgers of earlier builds. Another one
    /// answering since was not told anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl Told {
    /// Long enough for irqbalance to have applied it: several rounds of its default 10 s.
    pub const TRUSTED_FOR_SECS: u64 = 60;

    /// Whether irqbalance may not have applied it yet at `now` (seconds since the epoch).
    pub fn pending_at(&self, now: u64) -> bool {
        now < self.at.saturating_add(Self::TRUSTED_FOR_SECS)
    }

    /// Whether the irqbalance with PID `pid` goes by it at `now`: it was told to that one (a
    /// restarted irqbalance was told nothing) and may not show it yet.
    pub fn counts_for(&self, pid: u32, now: u64) -> bool {
        self.pending_at(now) && self.pid.map_or(true, |told| told == pid)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `prepare` succeeded; QEMU does not run yet, so its pages are still free and promised.
    Prepared,
    /// `started` was seen: QEMU runs and has taken its pages.
    Running,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmHold {
    pub phase: Phase,
    #[serde(default)]
    pub hugepages: Vec<PoolHold>,
    /// Host CPUs isolated for this VM (empty: none).
    #[serde(default, skip_serializing_if = "CpuSet::is_empty")]
    pub isolate: CpuSet,
    /// Where this VM's passthrough device IRQs go, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irq: Option<CpuSet>,
    /// Its PCI passthrough devices (`DDDD:BB:DD.F` in the file, parsed back on reading).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<PciAddress>,
    /// The QEMU process `kvmtune run` started for this VM, when the VM isolates CPUs: it runs
    /// on them, so confining host tasks leaves it where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `kvmtune run` starts this VM's QEMU and places it (in kvmtune's isolated partition, with
    /// that method); libvirt places the others itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kvmtune_run: bool,
    /// Why isolated partitions cannot hold this libvirt VM's isolated CPUs, from its pins
    /// (`plan::partition_fit`): the partition method is not set up for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_misfit: Option<String>,
    /// Host knobs held while it runs: file → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub knobs: BTreeMap<String, String>,
}

/// A VM's use of one pool: the pages it needs and how many kvmtune added to the pool for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolHold {
    pub pool: PoolKey,
    pub pages: u64,
    pub added: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolBaseline {
    pub pool: PoolKey,
    /// The persistent pool size before kvmtune grew it for the first VM.
    pub persistent: u64,
}

impl Ledger {
    /// Pages of `pool` promised to VMs that are prepared but not running (not yet taken from
    /// the free count), other than `except`.
    pub fn promised(&self, pool: PoolKey, except: &str) -> u64 {
        self.vms
            .iter()
            .filter(|(name, hold)| name.as_str() != except && hold.phase == Phase::Prepared)
            .flat_map(|(_, hold)| hold.hugepages.iter())
            .filter(|h| h.pool == pool)
            .map(|h| h.pages)
            .sum()
    }

    /// Whether any VM other than `except` uses pages of `pool`.
    pub fn others_hold(&self, pool: PoolKey, except: &str) -> bool {
        self.vms
            .iter()
            .filter(|(name, _)| name.as_str() != except)
            .any(|(_, hold)| hold.hugepages.iter().any(|h| h.pool == pool && h.pages > 0))
    }

    /// Pages kvmtune added to `pool` for all VMs.
    pub fn added(&self, pool: PoolKey) -> u64 {
        self.vms
            .values()
            .flat_map(|h| h.hugepages.iter())
            .filter(|h| h.pool == pool)
            .map(|h| h.added)
            .sum()
    }

    pub fn baseline(&self, pool: PoolKey) -> Option<u64> {
        self.pools
            .iter()
            .find(|b| b.pool == pool)
            .map(|b| b.persistent)
    }

    /// Record `persistent` as the pool's baseline unless one is already kept.
    pub fn keep_baseline(&mut self, pool: PoolKey, persistent: u64) {
        if self.baseline(pool).is_none() {
            self.pools.push(PoolBaseline { pool, persistent });
            self.pools.sort_by_key(|b| b.pool);
        }
    }

    /// CPUs isolated for any VM other than `except`.
    pub fn isolated_except(&self, except: &str) -> CpuSet {
        self.vms
            .iter()
            .filter(|(name, _)| name.as_str() != except)
            .fold(CpuSet::new(), |acc, (_, h)| acc.union(&h.isolate))
    }

    /// The VMs other than `except` that isolate any of `cpus`.
    pub fn isolating(&self, cpus: &CpuSet, except: &str) -> Vec<String> {
        self.vms
            .iter()
            .filter(|(name, h)| name.as_str() != except && !h.isolate.intersection(cpus).is_empty())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The QEMU processes of VMs that isolate CPUs and that `kvmtune run` started: VM
    /// processes, never confined to the housekeeping CPUs.
    pub fn isolated_vm_pids(&self) -> Vec<u32> {
        self.vms
            .values()
            .filter(|h| !h.isolate.is_empty())
            .filter_map(|h| h.pid)
            .collect()
    }

    /// The VMs other than `except` that hold the knob `path`, with the value each wants.
    pub fn knob_holders(&self, path: &str, except: &str) -> Vec<(String, String)> {
        self.vms
            .iter()
            .filter(|(name, _)| name.as_str() != except)
            .filter_map(|(name, h)| h.knobs.get(path).map(|v| (name.clone(), v.clone())))
            .collect()
    }

    /// Forget baselines of pools no VM holds pages in any more.
    pub fn drop_unheld_baselines(&mut self) {
        let vms = &self.vms;
        self.pools.retain(|b| {
            vms.values()
                .any(|h| h.hugepages.iter().any(|p| p.pool == b.pool && p.pages > 0))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_of_an_earlier_build_keeps_what_irqbalance_was_given_back() {
        let old = r#"{"vms":{},"pools":[],"irqbalance_given_back":{"banned":"0","at":1700000000}}"#;
        let ledger: Ledger = serde_json::from_str(old).unwrap();
        assert_eq!(
            ledger.irqbalance_told,
            Some(Told {
                banned: CpuSet::from_ids([0]),
                at: 1_700_000_000,
                pid: None
            })
        );
    }
}
