//! The per-VM write-ahead journal of one operation in flight.
//!
//! Before kvmtune changes a host file it appends the change (with the value it found) to the
//! VM's journal and writes the journal atomically. When the operation finishes, the journal is
//! marked committed together with the ledger that results, the ledger is saved, and the journal
//! removed. A journal found later (a crash, a kill -9) says exactly what to finish or undo:
//! an uncommitted `prepare` is undone (every `before` written back, newest first), an
//! uncommitted `release` is finished (every `after` written again), and a committed one only
//! needs its ledger saved.

use serde::{Deserialize, Serialize};

use crate::change::Change;
use crate::host::tasks::PinnedThread;
use crate::state::ledger::Ledger;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Undone when interrupted.
    Prepare,
    /// IRQ placement once QEMU runs; undone when interrupted (libvirt then aborts the start).
    Started,
    /// Finished when interrupted.
    Release,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub vm: String,
    pub operation: Operation,
    /// Changes in the order they were made (or were about to be made).
    pub changes: Vec<Change>,
    /// Set when the operation completed: the ledger as it stands after it.
    pub committed: Option<Ledger>,
    /// Threads that were pinned when the operation began, with their masks then (kernels
    /// before 6.2 reset them when a change moves their process). Once the process has moved
    /// the pin no longer shows, so an operation killed midway needs them from here to put
    /// them back when it is undone or finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<PinnedThread>,
}

impl Journal {
    pub fn new(vm: &str, operation: Operation) -> Self {
        Journal {
            vm: vm.to_string(),
            operation,
            changes: Vec::new(),
            committed: None,
            pins: Vec::new(),
        }
    }
}

/// The journal's file name for a VM. Domain names may hold anything but `/` (and may be
/// `..`, or 10 KiB long), so the name is percent-encoded to a safe alphabet and, when long,
/// shortened with a hash. The full name is inside the journal.
pub fn file_name(vm: &str) -> String {
    let mut encoded = String::new();
    for (i, b) in vm.bytes().enumerate() {
        let safe = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if safe {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    if encoded.len() > 120 {
        let hash = vm.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        encoded.truncate(80);
        while encoded.ends_with('%')
            || encoded.len() > 78 && encoded[encoded.len() - 2..].starts_with('%')
        {
            encoded.pop();
        }
        encoded = format!("{encoded}~{hash:016x}");
    }
    format!("journal-{encoded}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_for_hostile_domain_names() {
        for name in ["..", ".", "a;b", "$(touch x)", "a\nb", "--help", "a/b", ""] {
            let f = file_name(name);
            assert!(f.starts_with("journal-") && f.ends_with(".json"), "{f}");
            assert!(
                !f.contains('/') && !f.contains('\n') && !f.contains(';'),
                "{f}"
            );
        }
        assert_eq!(file_name("db1"), "journal-db1.json");
    }

    #[test]
    fn long_names_are_shortened_but_stay_distinct() {
        let a = "x".repeat(10 * 1024);
        let b = format!("{}y", "x".repeat(10 * 1024 - 1));
        assert!(file_name(&a).len() < 200);
        assert_ne!(file_name(&a), file_name(&b));
    }
}
