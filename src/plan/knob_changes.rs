//! Which knob writes bring the host in line with the ledger, worked out: check a VM's knobs
//! against this host before anything changes, and the changes that hold every knob at its
//! VMs' value or give it back to the value found before the first of them. A change of KSM's
//! `merge_across_nodes` goes between an unmerge and `run`'s value (see `apply::knobs`). Reads
//! the host through `HostFs` (a snapshot's) and changes nothing.

use std::collections::BTreeMap;

use crate::change::Change;
use crate::error::{Error, Result};
use crate::host::knobs::{
    check_readable, parse_choices, read_value, same_value, shown, KSM_DIR, KSM_MERGE_ACROSS_NODES,
    KSM_RUN, KSM_UNMERGE, SYSCTL_DIR,
};
use crate::host::HostFs;
use crate::log;
use crate::plan::knobs::KnobWant;
use crate::state::Ledger;

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
