//! Making the knob changes `plan::knob_changes` worked out (see the `knobs` module), with a
//! read-back.
//!
//! KSM refuses a change of `merge_across_nodes` (EBUSY) while any page is merged, so such a
//! change is made between an unmerge (`run` = 2, which the kernel does synchronously) and
//! putting `run` back. Undone in reverse, the same three changes unmerge again before the old
//! value returns: a journal replayed either way keeps the kernel's order.

use std::time::{Duration, Instant};

use super::Base;
use crate::change::Change;
use crate::error::{Error, Result};
use crate::host::knobs::{pages_shared, same_value, shown, value_of, KSM_MERGE_ACROSS_NODES};
use crate::host::HostFs;
use crate::log;
use crate::state::Journal;

/// How long a `merge_across_nodes` write may stay busy after the unmerge. The kernel frees
/// stable tree nodes of pages being unmapped a little later; pages cannot merge again while
/// `run` is 2, so this wait ends.
const MERGE_BUSY_WAIT: Duration = Duration::from_secs(2);
const MERGE_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Journal and make knob changes one by one, reading each back: a value the kernel shows
/// differently than asked stops the operation (the caller undoes it).
pub fn make(ctx: &Base, journal: &mut Journal, changes: Vec<Change>) -> Result<()> {
    for change in changes {
        journal.changes.push(change.clone());
        ctx.state.save_journal(journal)?;
        let Change::File { path, after, .. } = &change else {
            ctx.effects().apply(&change)?;
            continue;
        };
        ctx.effects().apply(&change).map_err(|e| match e {
            Error::Io { source, .. } => Error::Refused(format!(
                "{} refused {after} ({source}). Nothing was changed.",
                shown(path)
            )),
            Error::Refused(why) => Error::Refused(format!("{why}. Nothing was changed.")),
            other => other,
        })?;
        let now = fs_value(ctx.fs, path);
        if !same_value(&now, after) {
            return Err(Error::Refused(format!(
                "{} shows {now} after kvmtune wrote {after}. Nothing was changed.",
                shown(path)
            )));
        }
        log::info(&format!("{change}"));
    }
    Ok(())
}

fn fs_value(fs: &dyn HostFs, path: &str) -> String {
    fs.read(path).map(|t| value_of(&t)).unwrap_or_default()
}

/// Write `merge_across_nodes`, waiting a bounded time while the kernel says it is busy (the
/// unmerge before it has run, but stable tree nodes of pages being freed go a little later).
pub fn write_merge_across_nodes(fs: &dyn HostFs, value: &str) -> Result<()> {
    let deadline = Instant::now() + MERGE_BUSY_WAIT;
    loop {
        match fs.write(KSM_MERGE_ACROSS_NODES, value) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(MERGE_RETRY_PAUSE);
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(Error::Refused(format!(
                    "{} stays busy: {} page(s) are still merged after unmerging KSM (run = 2), so it cannot become {value}",
                    shown(KSM_MERGE_ACROSS_NODES),
                    pages_shared(fs)
                )))
            }
            other => return other,
        }
    }
}
