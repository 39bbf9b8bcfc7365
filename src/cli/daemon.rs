//! The daemons' commands: `kvmtune watch` (and its old name `irq-watch`), which keeps every
//! promise between hook calls, and `kvmtune balance`, which moves memory through balloons.

use crate::assemble::Roots;
use crate::error::Result;
use crate::host::virsh::Virsh;
use crate::host::RootFs;
use crate::privilege::Privilege;
use crate::watch::Watcher;

/// `kvmtune watch` (every promise) or `irq-watch` (device IRQs only), as root.
pub(super) fn watch(
    roots: &Roots,
    privilege: &Privilege,
    watcher: Watcher,
    once: bool,
) -> Result<()> {
    privilege.require_root("watch")?;
    let mut owner = roots.context(privilege)?;
    crate::watch::run(&mut owner, &roots.config, watcher, once)
}

/// `kvmtune balance`: balloon targets follow memory demand, through libvirt at `connect`.
pub(super) fn balance(
    roots: &Roots,
    privilege: &Privilege,
    connect: &str,
    once: bool,
    dry_run: bool,
) -> Result<()> {
    let policy = roots.policy(privilege)?;
    let fs = RootFs::new(&roots.root);
    let mut virsh = Virsh::new(Some(connect));
    crate::balance::run(&mut virsh, &fs, &policy.balance, once, dry_run)
}
