//! IRQ affinity: a VM's PCI passthrough devices interrupt the CPUs its policy names, every
//! other IRQ (and `default_smp_affinity`, for IRQs created later) stays off isolated CPUs, and
//! everything goes back to the value first found once no running VM needs it.
//!
//! The wanted state is computed from the ledger (running VMs, their devices and targets, the
//! isolated CPUs) and compared with the kernel's: the same code serves `started`, `release`
//! and the `watch` daemon that pins VFIO vectors appearing after the guest enables MSI-X.
//! `wanted` puts together three parts, one function each: the device IRQs of running VMs
//! (`devices_of_running_vms`), every other IRQ off the isolated CPUs (`others_off_isolated`)
//! and `default_smp_affinity` (`default_affinity_off_isolated`).

use std::collections::{BTreeMap, BTreeSet};

use crate::change::Change;
use crate::cpulist::CpuSet;
use crate::domain::PciAddress;
use crate::host::HostFs;
use crate::state::holds::IrqHold;
use crate::state::{Ledger, Phase};

pub const IRQ_DIR: &str = "proc/irq";
pub const DEFAULT_AFFINITY: &str = "proc/irq/default_smp_affinity";

pub fn affinity_path(irq: u32) -> String {
    format!("{IRQ_DIR}/{irq}/smp_affinity_list")
}

/// Every IRQ the kernel lists under /proc/irq.
pub fn all_irqs(fs: &dyn HostFs) -> Vec<u32> {
    fs.list(IRQ_DIR)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The IRQs of one PCI device: its MSI/MSI-X vectors (`msi_irqs/`), its INTx line (`irq`), and
/// /proc/interrupts lines that name it (VFIO's `vfio-msix[N](BDF)`).
pub fn device_irqs(fs: &dyn HostFs, device: &PciAddress, interrupts: &str) -> BTreeSet<u32> {
    let bdf = device.to_string();
    let bdf = bdf.as_str();
    let dir = format!("sys/bus/pci/devices/{bdf}");
    let mut irqs: BTreeSet<u32> = fs
        .list(&format!("{dir}/msi_irqs"))
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    if let Some(intx) = fs
        .read(&format!("{dir}/irq"))
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
    {
        if intx != 0 && fs.exists(&format!("{IRQ_DIR}/{intx}")) {
            irqs.insert(intx);
        }
    }
    let vfio = format!("({bdf})");
    for line in interrupts.lines() {
        // A line per IRQ with a count per CPU: thousands of words on a large host, and only
        // the few lines that name the device matter.
        if !line.contains(bdf) {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(irq) = words
            .next()
            .and_then(|w| w.strip_suffix(':'))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        if words.any(|w| w.contains(&vfio) || w == bdf) {
            irqs.insert(irq);
        }
    }
    irqs
}

/// The affinity files to change, from the ledger's running VMs and isolated CPUs.
pub struct Wanted {
    /// Path → wanted value, for every file kvmtune wants different from its original.
    pub files: BTreeMap<String, String>,
    /// Device IRQs per VM, for `status`.
    pub device_irqs: BTreeMap<String, BTreeSet<u32>>,
    /// The kernel's values `wanted` read on the way (path → value, trimmed), so that working
    /// out the changes does not read every IRQ of a large host a second time.
    pub read: BTreeMap<String, String>,
}

/// Work out the wanted affinity of every IRQ. `move_others`: the policy moves non-VM IRQs off
/// isolated CPUs. `housekeeping`: where they go when nothing else of their original is left.
pub fn wanted(
    fs: &dyn HostFs,
    ledger: &Ledger,
    move_others: bool,
    housekeeping: &CpuSet,
) -> Wanted {
    let (mut files, device_irqs) = devices_of_running_vms(fs, ledger);
    let hold = ledger.irq.clone().unwrap_or_default();
    let mut originals = Originals {
        fs,
        baseline: &hold.baseline,
        read: BTreeMap::new(),
    };
    let isolated = ledger.isolated_except("");
    if move_others && !isolated.is_empty() {
        let devices: BTreeSet<u32> = device_irqs.values().flatten().copied().collect();
        let stays = |irq: u32| devices.contains(&irq) || hold.refused.contains(&irq);
        let away = Away {
            isolated: &isolated,
            housekeeping,
        };
        files.extend(others_off_isolated(fs, &mut originals, &away, stays));
        files.extend(default_affinity_off_isolated(&mut originals, &away));
    }
    Wanted {
        files,
        device_irqs,
        read: originals.read,
    }
}

/// The device IRQs of every running VM that has an IRQ target: affinity file → the target,
/// and the IRQs per VM.
fn devices_of_running_vms(
    fs: &dyn HostFs,
    ledger: &Ledger,
) -> (BTreeMap<String, String>, BTreeMap<String, BTreeSet<u32>>) {
    // /proc/interrupts is as wide as the host has CPUs: read only when a device needs it.
    let places_devices = ledger
        .vms
        .values()
        .any(|vm| vm.irq.is_some() && vm.phase == Phase::Running && !vm.devices.is_empty());
    let interrupts = if places_devices {
        fs.read("proc/interrupts").unwrap_or_default()
    } else {
        String::new()
    };
    let mut files = BTreeMap::new();
    let mut by_vm = BTreeMap::new();
    for (name, vm) in &ledger.vms {
        let Some(target) = vm.irq.as_ref().filter(|_| vm.phase == Phase::Running) else {
            continue;
        };
        let mut irqs = BTreeSet::new();
        for bdf in &vm.devices {
            irqs.extend(device_irqs(fs, bdf, &interrupts));
        }
        for irq in &irqs {
            files.insert(affinity_path(*irq), target.to_string());
        }
        by_vm.insert(name.clone(), irqs);
    }
    (files, by_vm)
}

/// The value an affinity file had before kvmtune changed it: the hold's baseline, else the
/// kernel's now, which is kept in `read`.
struct Originals<'a> {
    fs: &'a dyn HostFs,
    baseline: &'a BTreeMap<String, String>,
    read: BTreeMap<String, String>,
}

impl Originals<'_> {
    fn get(&mut self, path: &str) -> Option<String> {
        if let Some(v) = self.baseline.get(path) {
            return Some(v.clone());
        }
        let now = self.fs.read(path).ok()?.trim().to_string();
        self.read.insert(path.to_string(), now.clone());
        Some(now)
    }
}

/// Where an affinity goes off the isolated CPUs.
struct Away<'a> {
    isolated: &'a CpuSet,
    housekeeping: &'a CpuSet,
}

impl Away<'_> {
    /// `was` without the isolated CPUs, or the housekeeping CPUs when nothing is left; `None`
    /// when `was` has no isolated CPU.
    fn moved(&self, was: &CpuSet) -> Option<CpuSet> {
        if was.intersection(self.isolated).is_empty() {
            return None;
        }
        let left = was.difference(self.isolated);
        Some(if left.is_empty() {
            self.housekeeping.clone()
        } else {
            left
        })
    }
}

/// Every other IRQ (not one that `stays`) whose original affinity has isolated CPUs: its
/// affinity file → the same without them.
fn others_off_isolated(
    fs: &dyn HostFs,
    originals: &mut Originals,
    away: &Away,
    stays: impl Fn(u32) -> bool,
) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for irq in all_irqs(fs) {
        if stays(irq) {
            continue;
        }
        let path = affinity_path(irq);
        let Some(Ok(was)) = originals.get(&path).map(|v| CpuSet::parse(&v)) else {
            continue;
        };
        if let Some(want) = away.moved(&was) {
            files.insert(path, want.to_string());
        }
    }
    files
}

/// `default_smp_affinity` (for IRQs created later) off the isolated CPUs, as a mask as wide as
/// the kernel's.
fn default_affinity_off_isolated(
    originals: &mut Originals,
    away: &Away,
) -> Option<(String, String)> {
    let was = originals.get(DEFAULT_AFFINITY)?;
    let mask = CpuSet::parse_mask(&was).ok()?;
    let want = away.moved(&mask)?;
    Some((
        DEFAULT_AFFINITY.to_string(),
        want.to_mask(was.split(',').count()),
    ))
}

/// The changes from the kernel's values now to `wanted`, and back to the baseline for files no
/// longer wanted. Updates `hold.baseline` to match.
pub fn changes(fs: &dyn HostFs, hold: &mut IrqHold, wanted: &Wanted) -> Vec<Change> {
    let mut changes = Vec::new();
    for (path, want) in &wanted.files {
        let now = match wanted.read.get(path) {
            Some(v) => v.clone(),
            None => match fs.read(path) {
                Ok(v) => v.trim().to_string(),
                Err(_) => continue, // the IRQ went away
            },
        };
        if !same_value(path, &now, want) {
            hold.baseline
                .entry(path.clone())
                .or_insert_with(|| now.clone());
            changes.push(Change::File {
                path: path.clone(),
                before: now,
                after: want.clone(),
            });
        }
    }
    let done: Vec<String> = hold
        .baseline
        .keys()
        .filter(|p| !wanted.files.contains_key(*p))
        .cloned()
        .collect();
    for path in done {
        let original = hold.baseline.remove(&path).unwrap_or_default();
        match fs.read(&path).map(|v| v.trim().to_string()) {
            Ok(now) if !same_value(&path, &now, &original) => changes.push(Change::File {
                path,
                before: now,
                after: original,
            }),
            _ => {} // already back, or the IRQ is gone (a VFIO vector freed with its VM)
        }
    }
    changes
}

fn same_value(path: &str, a: &str, b: &str) -> bool {
    let parse = |v: &str| {
        if path == DEFAULT_AFFINITY {
            CpuSet::parse_mask(v)
        } else {
            CpuSet::parse(v)
        }
    };
    match (parse(a), parse(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.trim() == b.trim(),
    }
}

/// Whether the kernel's IRQ affinities differ from what the ledger wants (read-only: the
/// watcher asks this every interval and takes the lock only when it is true).
pub fn differs(fs: &dyn HostFs, ledger: &Ledger, move_others: bool, housekeeping: &CpuSet) -> bool {
    !differing(fs, ledger, move_others, housekeeping).is_empty()
}

/// The affinity files whose value differs from what the ledger wants: `(path, now, wanted)`.
pub fn differing(
    fs: &dyn HostFs,
    ledger: &Ledger,
    move_others: bool,
    housekeeping: &CpuSet,
) -> Vec<(String, String, String)> {
    let wanted = wanted(fs, ledger, move_others, housekeeping);
    let isolated = ledger.isolated_except("");
    let devices: BTreeSet<String> = wanted
        .device_irqs
        .values()
        .flatten()
        .map(|irq| affinity_path(*irq))
        .collect();
    let mut out = Vec::new();
    for (path, want) in &wanted.files {
        let now = match wanted.read.get(path) {
            Some(v) => Some(v.clone()),
            None => fs.read(path).ok().map(|v| v.trim().to_string()),
        };
        // Another IRQ only has to stay off the isolated CPUs: irqbalance (or an admin) may
        // narrow it to some of the others, and that is no drift to repair.
        let kept_off = |now: &str| {
            !devices.contains(path)
                && irq_of(path).is_some()
                && CpuSet::parse(now)
                    .is_ok_and(|cpus| !cpus.is_empty() && cpus.intersection(&isolated).is_empty())
        };
        if let Some(now) = now.filter(|now| !same_value(path, now, want) && !kept_off(now)) {
            out.push((path.clone(), now, want.clone()));
        }
    }
    out
}

/// The IRQ number of an affinity file path, if it is one.
pub fn irq_of(path: &str) -> Option<u32> {
    path.strip_prefix("proc/irq/")?
        .strip_suffix("/smp_affinity_list")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irq_paths_round_trip() {
        assert_eq!(irq_of(&affinity_path(57)), Some(57));
        assert_eq!(irq_of(DEFAULT_AFFINITY), None);
    }

    #[test]
    fn default_affinity_compares_as_masks() {
        assert!(same_value(DEFAULT_AFFINITY, "3", "00000003"));
        assert!(same_value("proc/irq/5/smp_affinity_list", "0-1", "0,1"));
    }
}
