//! `kvmtune balance`: memory follows demand between running VMs through their balloons. When
//! the host runs short, VMs with idle memory give some back; when memory is plentiful, they get
//! it back; always within each VM's bounds (`<kvmtune:balloon min max>`, within the policy's
//! floor and the VM's `<memory>`), and every change is logged as one line. The `[balance]`
//! section the rule reads is the policy's (`policy::balance`).
//!
//! - `rule`: the pure rule (thresholds with hysteresis, steps, a minimum interval per VM);
//!   its documentation is the reference.
//! - `vm`: which VMs may be ballooned (not hugepage-backed, not `<locked/>`, no passthrough
//!   devices, a balloon device, a guest driver answering) and their bounds.
//! - `virsh`: libvirt behind a trait; the real one runs `virsh`.
//! - `daemon`: the pass, the loop, what is logged.
//!
//! Nothing here touches the hook's state (`/run/kvmtune`): a balloon target is libvirt's, and
//! a stopped balancer leaves every VM at its last target.

pub mod daemon;
pub mod rule;
pub mod virsh;
pub mod vm;

pub use daemon::{run, Balancer, Event};
pub use rule::{decide, Decision};
