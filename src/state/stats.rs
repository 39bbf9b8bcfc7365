//! Statistics kept beside the state: counters of events (`counters.json`) and when the watcher
//! last looked (`watch.json`), for `kvmtune status` and the metrics.
//!
//! They are not state: nothing is finished or undone from them, and a damaged file is read as
//! zeros (with a warning) rather than stopping an operation. Counters change only under the
//! host lock, so increments from the hooks and the watcher never overwrite each other. Like
//! everything in /run they start again from zero after a reboot, which Prometheus counters
//! allow (a counter may reset).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{atomic, StateDir, StateLock};
use crate::error::Result;
use crate::log;

const COUNTERS: &str = "counters.json";
const WATCH: &str = "watch.json";

/// A kind of repair the watcher makes: the label of `kvmtune_watch_repairs_total`, the key of
/// `Counters::repairs`, the word that starts each repair's line in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RepairKind {
    /// Device IRQs of running VMs pinned (late or renumbered VFIO vectors, a reset affinity),
    /// other IRQs moved off isolated CPUs again, irqbalance told again.
    Irq,
    /// Host processes born in the root cgroup (on isolated CPUs) moved into the housekeeping
    /// cgroup, on cgroupfs hosts.
    Sweep,
    /// What confines host tasks put back: a cgroup's CPUs, the cpuset controller, a unit's
    /// AllowedCPUs, kernel threads, workqueue masks, governors.
    Isolation,
    /// A pool shrunk below what kvmtune added for its VMs, grown back.
    Hugepages,
    /// A host knob held for running VMs set back to the held value.
    Knob,
    /// A VM whose QEMU is gone (it died while libvirtd was down) released.
    GoneVm,
}

impl RepairKind {
    pub const ALL: [RepairKind; 6] = [
        RepairKind::Irq,
        RepairKind::Sweep,
        RepairKind::Isolation,
        RepairKind::Hugepages,
        RepairKind::Knob,
        RepairKind::GoneVm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RepairKind::Irq => "irq",
            RepairKind::Sweep => "sweep",
            RepairKind::Isolation => "isolation",
            RepairKind::Hugepages => "hugepages",
            RepairKind::Knob => "knob",
            RepairKind::GoneVm => "gone_vm",
        }
    }
}

impl std::fmt::Display for RepairKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Events counted since the state directory was created (a boot, on a host).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Repairs the watcher made, by kind (`RepairKind` names).
    #[serde(default)]
    pub repairs: BTreeMap<String, u64>,
    /// Prepares that failed because the kernel gave fewer hugepages than a VM needs.
    #[serde(default)]
    pub reservation_failures: u64,
    /// Compactions of a node made to retry a reservation.
    #[serde(default)]
    pub compaction_retries: u64,
}

/// The watcher's last look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchMark {
    /// Unix time of the last pass, in whole milliseconds (an integer reads back exactly: the
    /// metrics `status` prints must equal those the watcher wrote).
    pub last_pass_ms: u64,
    /// The watcher's process.
    pub pid: u32,
}

impl WatchMark {
    /// The last pass in seconds since the Unix epoch.
    pub fn last_pass_seconds(&self) -> f64 {
        self.last_pass_ms as f64 / 1000.0
    }
}

impl StateDir {
    /// The counters; zeros when there are none yet or the file is damaged.
    pub fn counters(&self) -> Counters {
        self.read_stat(COUNTERS).unwrap_or_default()
    }

    /// Change the counters (written only when they change). Taking the lock is what makes
    /// read, change, write safe.
    pub fn count(&self, _lock: &StateLock, change: impl FnOnce(&mut Counters)) -> Result<()> {
        let before = self.counters();
        let mut counters = before.clone();
        change(&mut counters);
        if counters == before {
            return Ok(());
        }
        let text = serde_json::to_vec_pretty(&counters).expect("counters serialize");
        atomic::write_atomic(&self.path.join(COUNTERS), &text)
    }

    /// When the watcher last looked; `None` when no watcher has run since boot.
    pub fn watch_mark(&self) -> Option<WatchMark> {
        self.read_stat(WATCH)
    }

    /// Record the watcher's last look. The watcher alone writes this file, without the lock
    /// (a hook must never wait for a timestamp). A hook that takes the lock meanwhile removes
    /// temp files it finds (they look like those of a killed kvmtune): the write is tried once
    /// more before giving up until the next look.
    pub fn save_watch_mark(&self, mark: &WatchMark) -> Result<()> {
        let text = serde_json::to_vec(mark).expect("watch mark serializes");
        let path = self.path.join(WATCH);
        atomic::write_atomic(&path, &text).or_else(|_| atomic::write_atomic(&path, &text))
    }

    fn read_stat<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        let path = self.path.join(name);
        let text = match atomic::read_nofollow(&path) {
            Ok(Some(text)) => text,
            Ok(None) => return None,
            Err(e) => {
                log::warn(&format!("{e}; counting from zero"));
                return None;
            }
        };
        match serde_json::from_str(&text) {
            Ok(value) => Some(value),
            Err(e) => {
                log::warn(&format!(
                    "{} is unreadable ({e}); counting from zero",
                    path.display()
                ));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privilege::Privilege;

    /// Root, as whoever runs the tests (the directory is theirs).
    fn me() -> Privilege {
        Privilege::root_as(nix::unistd::geteuid().as_raw())
    }

    #[test]
    fn counters_survive_a_new_reader_and_damage_reads_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("s"), &me()).unwrap();
        assert_eq!(state.counters(), Counters::default());
        let lock = state.lock().unwrap();
        state
            .count(&lock, |c| {
                *c.repairs.entry("irq".into()).or_default() += 2;
                c.compaction_retries += 1;
            })
            .unwrap();
        drop(lock);
        let again = StateDir::open(&dir.path().join("s"), &me()).unwrap();
        assert_eq!(again.counters().repairs["irq"], 2);
        assert_eq!(again.counters().compaction_retries, 1);
        std::fs::write(dir.path().join("s/counters.json"), "{garbage").unwrap();
        assert_eq!(again.counters(), Counters::default());
    }

    #[test]
    fn the_watch_mark_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("s"), &me()).unwrap();
        assert_eq!(state.watch_mark(), None);
        let mark = WatchMark {
            last_pass_ms: 1_700_000_000_250,
            pid: 42,
        };
        state.save_watch_mark(&mark).unwrap();
        assert_eq!(state.watch_mark(), Some(mark));
    }
}
