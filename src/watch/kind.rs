//! What the watcher finds and repairs, by kind: the label of `kvmtune_watch_repairs_total`, the
//! key of the repair counters, the word that starts each repair's line in the log.

/// A kind of repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
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

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Irq,
        Kind::Sweep,
        Kind::Isolation,
        Kind::Hugepages,
        Kind::Knob,
        Kind::GoneVm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Irq => "irq",
            Kind::Sweep => "sweep",
            Kind::Isolation => "isolation",
            Kind::Hugepages => "hugepages",
            Kind::Knob => "knob",
            Kind::GoneVm => "gone_vm",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Something the watcher's look found not as kvmtune left it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Finding {
    pub kind: Kind,
    /// What it is, in words (for the log when it cannot be repaired); for `GoneVm`, the VM.
    pub what: String,
    /// Seen only by the full look (every `metrics.interval`): kept until the next one.
    pub slow: bool,
}

impl Finding {
    pub fn new(kind: Kind, what: impl Into<String>) -> Finding {
        Finding {
            kind,
            what: what.into(),
            slow: false,
        }
    }

    /// A finding only the full look makes.
    pub fn slow(kind: Kind, what: impl Into<String>) -> Finding {
        Finding {
            slow: true,
            ..Finding::new(kind, what)
        }
    }
}

/// A repair made: one line in the log, one count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    pub kind: Kind,
    pub line: String,
}
