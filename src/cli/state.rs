//! The commands about what kvmtune holds: `kvmtune status` (read-only, lock-free; its
//! verdict is the exit status) and `kvmtune recover` (releases from the journals and the
//! ledger, never the policy).

use crate::apply::{self, Recover};
use crate::assemble::Roots;
use crate::error::Result;
use crate::host::RootFs;
use crate::log;
use crate::privilege::Privilege;
use crate::state::StateDir;
use crate::status;

use super::StatusFormat;

/// `kvmtune status`: the verdict decides the exit status, whatever the format.
pub(super) fn status(roots: &Roots, privilege: &Privilege, format: StatusFormat) -> Result<i32> {
    let policy = roots.policy(privilege)?;
    let fs = RootFs::new(&roots.root);
    let state = StateDir::peek(&roots.state_dir, privilege)?;
    let status = status::gather(&fs, state.as_ref(), &policy)?;
    match format {
        StatusFormat::Text => print!("{}", status::render(&status)),
        StatusFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("status serializes")
        ),
        StatusFormat::Prometheus => print!("{}", crate::metrics::render(&status)),
    }
    Ok(status.verdict.exit_code())
}

/// `kvmtune recover [--all | NAME]`: finish or undo interrupted operations, and release the
/// VM called NAME, or every VM whose QEMU is gone.
pub(super) fn recover(roots: &Roots, privilege: &Privilege, name: Option<&str>) -> Result<()> {
    privilege.require_root("recover")?;
    // SPEC: recover works from the journals and the ledger only; a broken policy is
    // said, and changes nothing of what is given back.
    if let Err(e) = roots.policy(privilege) {
        log::warn(&format!("{e} (recover works from the ledger all the same)"));
    }
    let owner = roots.base(privilege)?;
    let which = match name {
        Some(n) => Recover::One(n),
        None => Recover::AllStopped,
    };
    let released = apply::recover(&owner.base(), which)?;
    if released.is_empty() {
        println!("nothing to release");
    }
    for vm in released {
        println!("released {vm:?}");
    }
    Ok(())
}
