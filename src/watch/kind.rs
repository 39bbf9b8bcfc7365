//! What the watcher finds (`Finding`) and repairs (`Repair`), each of a kind
//! (`state::stats::RepairKind`, which also keys the repair counters).

use crate::state::stats::RepairKind;

/// Something the watcher's look found not as kvmtune left it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Finding {
    pub kind: RepairKind,
    /// What it is, in words (for the log when it cannot be repaired); for `GoneVm`, the VM.
    pub what: String,
    /// Seen only by the full look (every `metrics.interval`): kept until the next one.
    pub slow: bool,
}

impl Finding {
    pub fn new(kind: RepairKind, what: impl Into<String>) -> Finding {
        Finding {
            kind,
            what: what.into(),
            slow: false,
        }
    }

    /// A finding only the full look makes.
    pub fn slow(kind: RepairKind, what: impl Into<String>) -> Finding {
        Finding {
            slow: true,
            ..Finding::new(kind, what)
        }
    }
}

/// A repair made: one line in the log, one count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    pub kind: RepairKind,
    pub line: String,
}
