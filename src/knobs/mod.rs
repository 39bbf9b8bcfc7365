//! Host knobs: host-wide kernel settings that matter to a latency-critical VM and that
//! operators flip by hand and forget to flip back — KSM's scanning and `merge_across_nodes`,
//! transparent hugepages' `enabled` and `defrag`, and sysctls the policy lists (such as
//! `vm.stat_interval` for isolated CPUs).
//!
//! Each knob is held while at least one VM that wants it runs, through the same journal as
//! every other change: the value found when the first such VM prepared is kept in the ledger
//! (`Ledger::knobs`), each VM's hold names the knobs it wants (`VmHold::knobs`), and the value
//! found comes back when the last of them is released. Which VMs want a knob is the policy's
//! choice (`for` lists of `Selector`s); a VM's metadata may ask (or opt out) only where the
//! policy lists `metadata`. Values come from the policy alone, so two VMs never want different
//! values — unless the policy changed while one runs: then the second is refused at prepare.
//!
//! Where each part lives, bottom to top:
//! - `host::knobs`: the files and their formats (THP's `always [madvise] never`);
//! - `policy::knobs`: the `[ksm]`, `[thp]` and `[sysctl]` sections and their checks;
//! - `status` (here): what `kvmtune status` shows;
//! - `plan::knobs`: which knobs a VM wants (pure);
//! - `apply::knobs`: the changes, with KSM's unmerge before `merge_across_nodes`.

pub mod status;
