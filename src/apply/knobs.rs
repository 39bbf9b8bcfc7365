//! Holding host knobs (see the `knobs` module): check a VM's knobs against this host before
//! anything changes, bring every knob in line with the ledger (held at the VMs' value, or back
//! to the value found before the first of them), and make the changes with a read-back.
//!
//! KSM refuses a change of `merge_across_nodes` (EBUSY) while any page is merged, so such a
//! change is made between an unmerge (`run` = 2, which the kernel does synchronously) and
//! putting `run` back. Undone in reverse, the same three changes unmerge again before the old
//! value returns: a journal replayed either way keeps the kernel's order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::Base;
use crate::change::Change;
use crate::error::{Error, Result};
use crate::host::knobs::{
    check_readable, pages_shared, parse_choices, read_value, same_value, shown, value_of, KSM_DIR,
    KSM_MERGE_ACROSS_NODES, KSM_RUN, KSM_UNMERGE, SYSCTL_DIR,
};
use crate::host::HostFs;
use crate::log;
use crate::plan::knobs::KnobWant;
use crate::state::{Journal, Ledger};

/// How long a `merge_across_nodes` write may stay busy after the unmerge. The kernel frees
/// stable tree nodes of pages being unmapped a little later; pages cannot merge again while
/// `run` is 2, so this wait ends.
const MERGE_BUSY_WAIT: Duration = Duration::from_secs(2);
const MERGE_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// The knobs of `wants` this host can hold, checked before anything changes. A kernel
/// without KSM has nothing scanning to stop: those knobs are dropped, not refused. A THP word
/// the kernel does not offer, or a missing or unreadable THP or sysctl file, is the policy's
/// error (exit 2), said with the path and the value.
pub fn check(fs: &dyn HostFs, vm: &str, wants: Vec<KnobWant>) -> Result<Vec<KnobWant>> {
    let mut out = Vec::new();
    for want in wants {
        if want.path.starts_with(KSM_DIR) && !fs.exists(&want.path) {
            log::info(&format!(
                "VM '{vm}': {} does not exist (a kernel without KSM); nothing to hold",
                shown(&want.path)
            ));
            continue;
        }
        if !fs.exists(&want.path) {
            return Err(Error::Config(format!(
                "VM '{vm}' wants {} = {} ({}), but this kernel has no {}",
                shown(&want.path),
                want.value,
                want.why,
                shown(&want.path)
            )));
        }
        check_readable(fs, &want.path)?;
        if !want.path.starts_with(SYSCTL_DIR) {
            let text = fs.read(&want.path)?;
            if let Some(choices) = parse_choices(&text) {
                if !choices.offered.contains(&want.value) {
                    return Err(Error::Config(format!(
                        "VM '{vm}' wants {} = {} ({}), but the kernel offers only {}",
                        shown(&want.path),
                        want.value,
                        want.why,
                        choices.offered.join(", ")
                    )));
                }
            }
        }
        out.push(want);
    }
    Ok(out)
}

/// The changes that take every knob to what `next` calls for: the value its VMs want, or,
/// held by none, the value found before. Records the value found for knobs held for the first
/// time, forgets those given back. Nothing is changed on the host here.
pub fn changes(fs: &dyn HostFs, next: &mut Ledger) -> Result<Vec<Change>> {
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for hold in next.vms.values() {
        for (path, value) in &hold.knobs {
            wanted.entry(path.clone()).or_insert_with(|| value.clone());
        }
    }
    let mut targets = wanted.clone();
    for (path, baseline) in &next.knobs {
        targets
            .entry(path.clone())
            .or_insert_with(|| baseline.clone());
    }
    let mut out = Vec::new();
    let mut merge = None;
    for (path, target) in &targets {
        let Some(now) = read_value(fs, path)? else {
            log::warn(&format!(
                "{} is gone; cannot hold or restore it",
                shown(path)
            ));
            continue;
        };
        if wanted.contains_key(path) {
            next.knobs
                .entry(path.clone())
                .or_insert_with(|| now.clone());
        }
        if same_value(&now, target) {
            continue;
        }
        let change = Change::File {
            path: path.clone(),
            before: now,
            after: target.clone(),
        };
        if path == KSM_MERGE_ACROSS_NODES {
            merge = Some(change);
        } else {
            out.push(change);
        }
    }
    next.knobs.retain(|path, _| wanted.contains_key(path));
    if let Some(merge) = merge {
        out = around_unmerge(fs, out, merge)?;
    }
    Ok(out)
}

/// Put a `merge_across_nodes` change between an unmerge and `run`'s value after this
/// operation (the one `changes` wants, else the one found).
fn around_unmerge(fs: &dyn HostFs, mut changes: Vec<Change>, merge: Change) -> Result<Vec<Change>> {
    let run_now = read_value(fs, KSM_RUN)?.unwrap_or_else(|| "0".into());
    let position = changes
        .iter()
        .position(|c| matches!(c, Change::File { path, .. } if path == KSM_RUN));
    let run_after = match position.map(|i| changes.remove(i)) {
        Some(Change::File { after, .. }) => after,
        _ => run_now.clone(),
    };
    if run_now != KSM_UNMERGE {
        changes.push(Change::File {
            path: KSM_RUN.into(),
            before: run_now,
            after: KSM_UNMERGE.into(),
        });
    }
    changes.push(merge);
    if run_after != KSM_UNMERGE {
        changes.push(Change::File {
            path: KSM_RUN.into(),
            before: KSM_UNMERGE.into(),
            after: run_after,
        });
    }
    Ok(changes)
}

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
