//! `kvmtune watch`: one small daemon that keeps the promises kvmtune made for running VMs
//! between hook calls, and writes the metrics.
//!
//! Every `irq.watch_interval` it looks (`look`), read-only and without the lock: device IRQs
//! that appeared or were reset (VFIO vectors come with MSI-X, and back with new numbers after a
//! guest reboot), host processes born in the root cgroup on cgroupfs hosts, cgroups, units,
//! masks, pools and knobs someone rewrote, VMs whose QEMU died while libvirtd was not there to
//! call release. Only when it finds something does it take the host lock and repair
//! (`repair`), through the hooks' own journaled paths; each repair is one line in syslog and
//! one count in the state directory. A finding that a repair could not change is said once and
//! not tried again while it stays: the lock is never taken in a loop, and a hook never waits
//! behind a look.
//!
//! Every `metrics.interval`, and when a VM starts or stops, it gathers the whole status (every
//! task of the host: the one expensive read, which also finds host tasks that the cheap look
//! cannot see, such as a kernel thread moved back) and writes `kvmtune.prom`
//! (`crate::metrics`).
//!
//! `kvmtune irq-watch`, the old name, runs the IRQ part alone, as before.

pub mod kind;
pub mod look;
mod qemu;
pub mod repair;

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use kind::{Finding, Repair};

use crate::apply::Context;
use crate::assemble::ContextOwner;
use crate::error::Result;
use crate::log;
use crate::state::stats::RepairKind;
use crate::state::{Ledger, Phase, WatchMark};
use crate::stop::StopSignals;

/// What one pass did.
#[derive(Debug, Default)]
pub struct Pass {
    pub repairs: Vec<Repair>,
    /// Findings a repair changed nothing for (said once; not tried again while they stay).
    pub unrepaired: Vec<Finding>,
    /// Whether the metrics were gathered (and written, where there is a directory).
    pub metrics: bool,
}

/// The watcher's memory between passes.
#[derive(Debug, Default)]
pub struct Watcher {
    irqs_only: bool,
    memory: look::Memory,
    /// Findings of the last full look (other IRQs back on isolated CPUs, host tasks there
    /// that the cheap look does not see), kept until the next one.
    slow: Vec<Finding>,
    /// Findings already said to be beyond repair.
    said: Vec<Finding>,
    /// When the metrics are next due, and the VMs (name, phase) they showed.
    next_metrics: Option<Instant>,
    shown_vms: Vec<(String, Phase)>,
    said_no_dir: bool,
}

impl Watcher {
    pub fn new() -> Watcher {
        Watcher::default()
    }

    /// The old `irq-watch`: device IRQs and IRQs off isolated CPUs only, no metrics.
    pub fn irqs_only() -> Watcher {
        Watcher {
            irqs_only: true,
            ..Watcher::default()
        }
    }

    /// One pass at `now`: look, repair what needs it, write the metrics when due.
    pub fn pass(&mut self, ctx: &Context, now: Instant) -> Result<Pass> {
        let ledger = match ctx.state.load_ledger() {
            Ok(ledger) => ledger,
            // A damaged ledger: taking the lock sets it aside, as a hook call would.
            Err(_) => crate::apply::locked(ctx, |_| ctx.state.load_ledger())?,
        };
        // The old irq-watch read every IRQ at every look; it still does.
        let full = self.irqs_only || self.metrics_due(now, &ledger);
        let found = look::look(ctx, &ledger, &mut self.memory, self.irqs_only, full, now);
        let (slow, cheap): (Vec<Finding>, Vec<Finding>) =
            found.findings.into_iter().partition(|f| f.slow);
        if full {
            // What only a full look sees stays until the next one (the tasks' part comes with
            // the metrics, below).
            self.slow = slow;
        }
        let mut findings = cheap;
        findings.extend(self.slow.iter().cloned());
        // A finding said to be beyond repair is forgotten once a look that sees its kind no
        // longer finds it.
        self.said
            .retain(|f| findings.contains(f) || (f.slow && !full));
        let fresh: Vec<Finding> = findings
            .into_iter()
            .filter(|f| !self.said.contains(f))
            .collect();
        let mut pass = Pass::default();
        if !fresh.is_empty() {
            pass.repairs = repair::repair(ctx, &fresh, &found.strays)?;
            if pass.repairs.is_empty() {
                // Nothing changed. Taking the lock may have finished someone's interrupted
                // operation, which resolved the finding: only what a look still sees (or what
                // only the full look sees) is beyond repair.
                let ledger = ctx.state.load_ledger()?;
                let again =
                    look::look(ctx, &ledger, &mut self.memory, self.irqs_only, full, now).findings;
                let stays: Vec<Finding> = fresh
                    .into_iter()
                    .filter(|f| f.slow || again.contains(f))
                    .collect();
                self.said.extend(stays.iter().cloned());
                pass.unrepaired = stays;
            } else {
                // Repaired or not, the next full look says again.
                self.slow.clear();
            }
        }
        if !self.irqs_only {
            let ledger = if pass.repairs.is_empty() {
                ledger
            } else {
                ctx.state.load_ledger()?
            };
            if full || self.metrics_due(now, &ledger) {
                self.metrics(ctx, now, &ledger)?;
                pass.metrics = true;
            }
        }
        Ok(pass)
    }

    /// Due at the first pass, every `metrics.interval`, and when a VM starts or stops (its
    /// series come or go at the next look, not up to an interval later).
    fn metrics_due(&self, now: Instant, ledger: &Ledger) -> bool {
        self.next_metrics.map_or(true, |t| now >= t) || vms_shown(ledger) != self.shown_vms
    }

    fn metrics(&mut self, ctx: &Context, now: Instant, ledger: &Ledger) -> Result<()> {
        let qemu = &mut self.memory.qemu;
        let mut status =
            crate::status::gather_with(ctx.fs, Some(ctx.state), ctx.policy, &mut |vm, _| {
                qemu.of(ctx.fs, vm)
            })?;
        self.slow.extend(slow_findings(&status));
        let mark = WatchMark {
            last_pass_ms: unix_now_ms(),
            pid: std::process::id(),
        };
        if let Err(e) = ctx.state.save_watch_mark(&mark) {
            log::warn(&format!("watch: cannot record its last look: {e}"));
        }
        status.watch = Some(mark);
        self.next_metrics = Some(now + ctx.policy.metrics_interval);
        self.shown_vms = vms_shown(ledger);
        let Some(dir) = &ctx.policy.metrics_dir else {
            return Ok(());
        };
        let dir = ctx.fs.root().join(dir);
        let text = crate::metrics::render(&status);
        match crate::metrics::textfile::write(&dir, &text) {
            Ok(true) => self.said_no_dir = false,
            Ok(false) if !self.said_no_dir => {
                self.said_no_dir = true;
                log::info(&format!(
                    "watch: {} does not exist (no node_exporter here?): metrics are not written; `kvmtune status --format prometheus` shows them",
                    dir.display()
                ));
            }
            Ok(false) => {}
            Err(e) => log::warn(&format!("watch: {e}")),
        }
        Ok(())
    }
}

/// The VMs and their phases, as the metrics last showed them.
fn vms_shown(ledger: &Ledger) -> Vec<(String, Phase)> {
    ledger
        .vms
        .iter()
        .map(|(name, hold)| (name.clone(), hold.phase))
        .collect()
}

/// Host tasks the full look found on isolated CPUs that kvmtune could confine (the cheap look
/// sees the root cgroup only): for the next pass to repair.
fn slow_findings(status: &crate::status::Status) -> Vec<Finding> {
    let Some(iso) = &status.isolation else {
        return Vec::new();
    };
    iso.unconfined
        .iter()
        .filter(|t| !t.is_daemon())
        .map(|t| {
            Finding::slow(
                RepairKind::Isolation,
                format!(
                    "pid {} {:?} may run on isolated CPUs {}",
                    t.pid, t.comm, iso.isolated
                ),
            )
        })
        .collect()
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How the daemon says what a pass did: each repair one line in syslog (and on stdout for
/// `--once`, which someone is reading).
fn report(pass: &Pass, once: bool) {
    for r in &pass.repairs {
        let line = format!("watch: {}: {}", r.kind, r.line);
        match r.kind {
            // Expected: vectors come with the guest's driver, processes start.
            RepairKind::Irq | RepairKind::Sweep => log::info(&line),
            // Something undid kvmtune's work, or a QEMU died with libvirtd away.
            _ => log::warn(&line),
        }
        if once {
            println!("{line}");
        }
    }
    if !pass.unrepaired.is_empty() {
        let what: Vec<String> = pass
            .unrepaired
            .iter()
            .map(|f| format!("{}: {}", f.kind, f.what))
            .collect();
        let line = format!(
            "watch: cannot repair (tried; will try again once it changes): {}",
            what.join("; ")
        );
        log::warn(&line);
        if once {
            println!("{line}");
        }
    }
}

/// Run the watcher: one pass with `once`, else until SIGTERM or SIGINT (a pass in progress
/// finishes first). The policy is read again when its file changes, as the hooks read it at
/// every call; a policy that does not parse is said once, and the last good one kept.
pub fn run(
    owner: &mut ContextOwner,
    config: &Path,
    mut watcher: Watcher,
    once: bool,
) -> Result<()> {
    if once {
        let pass = watcher.pass(&owner.context(), Instant::now())?;
        report(&pass, true);
        return Ok(());
    }
    let signals = StopSignals::block()?;
    log::info(&format!(
        "watch: looking every {} ms{}",
        owner.policy.irq_watch_interval.as_millis(),
        if watcher.irqs_only {
            " at device IRQs only (irq-watch is the old name of `kvmtune watch`, which does all)"
        } else {
            ""
        }
    ));
    let mut stamp = policy_stamp(config);
    let mut last_error: Option<String> = None;
    loop {
        let now_stamp = policy_stamp(config);
        if now_stamp != stamp {
            stamp = now_stamp;
            match crate::policy::Policy::load(config, &owner.privilege) {
                Ok(policy) => {
                    log::info(&format!("watch: {} read again", config.display()));
                    owner.policy = policy;
                }
                Err(e) => log::warn(&format!("watch: keeping the policy it had: {e}")),
            }
        }
        match watcher.pass(&owner.context(), Instant::now()) {
            Ok(pass) => {
                if last_error.take().is_some() {
                    log::info("watch: looking again");
                }
                report(&pass, false);
            }
            // A daemon keeps going: the next pass may succeed (a VM stopped meanwhile).
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(&text) {
                    log::warn(&format!("watch: {text}; trying again"));
                    last_error = Some(text);
                }
            }
        }
        if let Some(sig) = signals.wait(owner.policy.irq_watch_interval)? {
            log::info(&format!("watch: {sig}: stopping"));
            return Ok(());
        }
    }
}

/// What tells that the policy file changed: modification time, size, inode.
fn policy_stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}
