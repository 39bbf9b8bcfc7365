//! Growing one pool and reading back what the kernel really gave.
//!
//! A write to `nr_hugepages` succeeds even when the kernel allocates fewer pages (memory is
//! short or fragmented), so the count is always read back. When short, the node is compacted
//! (`nodeN/compact`, synchronous) and the write repeated, until the target is met, compaction
//! stops helping, or the policy's time bound runs out.

use std::time::Instant;

use super::Base;
use crate::change::Change;
use crate::error::Result;
use crate::host::hugepages::{compact_node, read_pool};
use crate::host::HostFs;
use crate::log;
use crate::plan::PoolGrowth;
use crate::state::{Journal, Ledger};

/// A pool could not be grown far enough.
#[derive(Debug, Clone)]
pub struct Shortfall {
    pub growth: PoolGrowth,
    /// Pages the VM could have had: what the free pool covered plus what the kernel added.
    pub obtainable: u64,
    pub compacted: bool,
}

/// How many compaction rounds without progress end the retries before the deadline.
const MAX_STALLED_ROUNDS: u32 = 2;

/// What growing one pool came to.
#[derive(Debug, Clone)]
pub struct Grown {
    /// `None` when the target was reached; the caller undoes the write either way the
    /// journal says.
    pub shortfall: Option<Shortfall>,
    /// Compactions made to retry (counted for the metrics).
    pub compactions: u32,
}

/// Grow the pool to the plan's target, compacting and retrying when the kernel gives less.
pub fn grow(
    fs: &dyn HostFs,
    growth: &PoolGrowth,
    compaction: bool,
    deadline: Instant,
) -> Result<Grown> {
    let pool = growth.pool;
    let target = growth.before.persistent() + growth.grow;
    let value = growth.target_nr().to_string();
    fs.write(&pool.nr_path(), &value)?;
    let mut got = read_pool(fs, pool)?.persistent();
    let mut compactions = 0;
    let mut stalled = 0;
    while got < target && compaction && Instant::now() < deadline && stalled < MAX_STALLED_ROUNDS {
        if let Err(e) = compact_node(fs, pool.node) {
            log::warn(&format!("cannot compact node {}: {e}", pool.node));
            break;
        }
        compactions += 1;
        fs.write(&pool.nr_path(), &value)?;
        let now = read_pool(fs, pool)?.persistent();
        stalled = if now > got { 0 } else { stalled + 1 };
        got = now;
    }
    let compacted = compactions > 0;
    if got >= target {
        log::info(&format!(
            "{pool}: {} -> {} pages{}",
            growth.before.persistent(),
            got,
            if compacted { " after compaction" } else { "" }
        ));
        return Ok(Grown {
            shortfall: None,
            compactions,
        });
    }
    Ok(Grown {
        shortfall: Some(Shortfall {
            growth: growth.clone(),
            obtainable: growth.covered() + got.saturating_sub(growth.before.persistent()),
            compacted,
        }),
        compactions,
    })
}

/// Put back pools that hold fewer persistent pages than kvmtune left there (an admin or a
/// script shrank one while its VMs run: their pages became surplus and would vanish when the
/// VM stops, or a restarted VM would not find them). Each write is journaled first. The kernel
/// turns surplus pages back into persistent ones first; if it gives less than asked, that is
/// logged, not fatal: the VM runs already.
pub fn restore_drifted(ctx: &Base, ledger: &Ledger, journal: &mut Journal) -> Result<()> {
    for baseline in &ledger.pools {
        let pool = baseline.pool;
        let want = baseline.persistent + ledger.added(pool);
        let state = read_pool(ctx.fs, pool)?;
        if state.persistent() >= want {
            continue;
        }
        // The written value is the persistent count the kernel is to keep.
        let change = Change::File {
            path: pool.nr_path(),
            before: state.persistent().to_string(),
            after: want.to_string(),
        };
        log::warn(&format!(
            "{pool} holds {} persistent pages, {want} expected while its VMs run: putting it back",
            state.persistent()
        ));
        journal.changes.push(change.clone());
        ctx.state.save_journal(journal)?;
        ctx.effects().apply(&change)?;
        let got = read_pool(ctx.fs, pool)?.persistent();
        if got < want {
            log::warn(&format!("{pool}: the kernel gave {got} of {want} pages"));
        }
    }
    Ok(())
}
