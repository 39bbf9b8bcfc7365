//! `kvmtune balance`: one pass gathers the snapshot (host memory through `HostFs`, each running
//! VM through `Libvirt`), asks the rule, and sets the new targets; the daemon repeats it every
//! `balance.interval` until SIGTERM or SIGINT. What the balancer says about a VM that it
//! leaves alone is said once, and again only when the reason changes.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::rule::{self, Bounds, Decision, HostLevel, HostMem, LastChange, VmState};
use super::virsh::Libvirt;
use super::vm::{self, Candidate};
use crate::error::{Error, Result};
use crate::host::HostFs;
use crate::log;
use crate::policy::balance::BalancePolicy;
use crate::size::human;
use crate::stop::StopSignals;

/// What one pass found or did, for the log (see `report`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The host crossed a mark (and on the first pass).
    Level {
        level: HostLevel,
        free: u64,
        low: u64,
        high: u64,
    },
    /// A VM is balanced from now on, within these bounds.
    Balanced { vm: String, bounds: Bounds },
    /// A running VM is left alone, and why.
    Skipped { vm: String, reason: String },
    /// A new balloon target was set.
    Changed(Decision),
    /// `--dry-run`: the target that would have been set.
    WouldChange(Decision),
    /// libvirt refused or failed for one VM; the others went on.
    Failed { vm: String, error: String },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Level {
                level,
                free,
                low,
                high,
            } => {
                let what = match level {
                    HostLevel::Short => "short: VMs with unused memory give some back",
                    HostLevel::Steady => "between the marks: nothing moves for the host",
                    HostLevel::Comfortable => "comfortable: VMs get memory back up to their max",
                };
                write!(
                    f,
                    "host free {} (low mark {}, high mark {}): {what}",
                    human(*free),
                    human(*low),
                    human(*high)
                )
            }
            Event::Balanced { vm, bounds } => write!(
                f,
                "VM {vm:?}: balanced within {} .. {}",
                human(bounds.min),
                human(bounds.max)
            ),
            Event::Skipped { vm, reason } => write!(f, "VM {vm:?}: not balanced: {reason}"),
            Event::Changed(d) => write!(f, "{d}"),
            Event::WouldChange(d) => write!(f, "would set {d}"),
            Event::Failed { vm, error } => write!(f, "VM {vm:?}: {error}"),
        }
    }
}

/// The balancer's memory between passes.
pub struct Balancer {
    policy: BalancePolicy,
    dry_run: bool,
    /// By UUID: the domain id the change was made under, and the change.
    history: HashMap<String, (Option<u32>, LastChange)>,
    /// By UUID: what was last said about the VM (skip reason or "balanced within").
    said: HashMap<String, String>,
    level: Option<HostLevel>,
}

impl Balancer {
    pub fn new(policy: BalancePolicy, dry_run: bool) -> Balancer {
        Balancer {
            policy,
            dry_run,
            history: HashMap::new(),
            said: HashMap::new(),
            level: None,
        }
    }

    /// One pass at Unix time `now`. Fails only when the host or the list of VMs cannot be
    /// read; a problem with one VM is an event and the others go on.
    pub fn pass(&mut self, lv: &mut dyn Libvirt, fs: &dyn HostFs, now: u64) -> Result<Vec<Event>> {
        let host = read_host(fs)?;
        let uuids = lv.running()?;
        let mut events = Vec::new();
        let mut states = Vec::new();
        let mut by_name: HashMap<String, String> = HashMap::new();
        for uuid in &uuids {
            let looked = self.look(lv, uuid, now);
            let (name, said) = match &looked {
                Ok(c) => (
                    c.vm.name.clone(),
                    Event::Balanced {
                        vm: c.vm.name.clone(),
                        bounds: c.vm.bounds,
                    },
                ),
                Err((name, ev)) => (name.clone(), ev.clone()),
            };
            self.say_once(uuid, said, &mut events);
            let Ok(c) = looked else { continue };
            // A restarted VM (new domain id) starts without history.
            let last = match self.history.get(uuid) {
                Some((id, last)) if *id == c.vm.id => Some(*last),
                _ => None,
            };
            by_name.insert(name.clone(), uuid.clone());
            states.push((
                c.vm.id,
                VmState {
                    name,
                    actual: c.actual,
                    unused: c.unused,
                    stats_at: c.stats_at,
                    bounds: c.vm.bounds,
                    last,
                },
            ));
        }
        // Forget VMs that stopped: if they come back, they are introduced again.
        let running: HashSet<&String> = uuids.iter().collect();
        self.said.retain(|u, _| running.contains(u));
        self.history.retain(|u, _| running.contains(u));

        let vms: Vec<VmState> = states.iter().map(|(_, s)| s.clone()).collect();
        let verdict = rule::decide(host, &vms, &self.policy, now);
        if self.level != Some(verdict.level) {
            self.level = Some(verdict.level);
            // First: it explains the changes that follow.
            events.insert(
                0,
                Event::Level {
                    level: verdict.level,
                    free: verdict.free,
                    low: verdict.low,
                    high: verdict.high,
                },
            );
        }
        for d in verdict.decisions {
            if self.dry_run {
                events.push(Event::WouldChange(d));
                continue;
            }
            let uuid = &by_name[&d.vm];
            let id = states
                .iter()
                .find(|(_, s)| s.name == d.vm)
                .and_then(|(id, _)| *id);
            match lv.set_target_kib(uuid, d.new / 1024) {
                Ok(()) => {
                    let last = LastChange {
                        at: now,
                        target: d.new,
                    };
                    self.history.insert(uuid.clone(), (id, last));
                    events.push(Event::Changed(d));
                }
                Err(e) => {
                    // Retried after vm_interval, not on every pass.
                    let last = LastChange {
                        at: now,
                        target: d.old,
                    };
                    self.history.insert(uuid.clone(), (id, last));
                    events.push(Event::Failed {
                        vm: d.vm,
                        error: e.to_string(),
                    });
                }
            }
        }
        Ok(events)
    }

    /// A running VM: a candidate, or its name and what to say about leaving it alone.
    fn look(
        &self,
        lv: &mut dyn Libvirt,
        uuid: &str,
        now: u64,
    ) -> std::result::Result<Candidate, (String, Event)> {
        let failed = |e: Error| {
            (
                uuid.to_string(),
                Event::Failed {
                    vm: uuid.to_string(),
                    error: e.to_string(),
                },
            )
        };
        let xml = lv.domain_xml(uuid).map_err(failed)?;
        let name = crate::domain::xml::parse(&xml)
            .ok()
            .and_then(|r| r.child("name").map(|n| n.text().to_string()))
            .unwrap_or_else(|| uuid.to_string());
        let skipped = |reason: vm::Skip| {
            (
                name.clone(),
                Event::Skipped {
                    vm: name.clone(),
                    reason: reason.to_string(),
                },
            )
        };
        let balloonable = vm::classify(&xml, &self.policy).map_err(skipped)?;
        let stats = lv.mem_stats(uuid).map_err(|e| {
            (
                name.clone(),
                Event::Failed {
                    vm: name.clone(),
                    error: e.to_string(),
                },
            )
        })?;
        balloonable.with_stats(&stats, now).map_err(skipped)
    }

    fn say_once(&mut self, uuid: &str, event: Event, events: &mut Vec<Event>) {
        let text = event.to_string();
        if self.said.get(uuid) != Some(&text) {
            self.said.insert(uuid.to_string(), text);
            events.push(event);
        }
    }
}

/// The host's MemTotal and MemAvailable (bytes), from `proc/meminfo` under the root.
pub fn read_host(fs: &dyn HostFs) -> Result<HostMem> {
    let text = fs.read("proc/meminfo")?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
            .map(|kib| kib * 1024)
            .ok_or_else(|| {
                Error::State(format!(
                    "{} has no '{name}:' line",
                    fs.display("proc/meminfo").display()
                ))
            })
    };
    Ok(HostMem {
        total: field("MemTotal")?,
        available: field("MemAvailable")?,
    })
}

/// How `report` shows events: `--once` and `--dry-run` runs print everything on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub print_all: bool,
}

/// Log each event as one line: changes, skips and level crossings to syslog (and to stdout when
/// there is no syslog, or when asked); what `--dry-run` would do to stdout only; failures as
/// warnings.
pub fn report(events: &[Event], out: Output) {
    for event in events {
        let line = format!("balance: {event}");
        match event {
            Event::WouldChange(_) => println!("{line}"),
            Event::Failed { .. } => {
                log::warn(&line);
                if out.print_all && log::has_syslog() {
                    println!("{line}");
                }
            }
            _ => {
                log::info(&line);
                if out.print_all || !log::has_syslog() {
                    println!("{line}");
                }
            }
        }
    }
}

/// Run the balancer: one pass with `once`, else until SIGTERM or SIGINT (a pass in progress
/// finishes first: a target is never left half-set). A pass that cannot read the host or the
/// list of VMs fails `--once`; the daemon says so (once per distinct error) and tries again.
pub fn run(
    lv: &mut dyn Libvirt,
    fs: &dyn HostFs,
    policy: &BalancePolicy,
    once: bool,
    dry_run: bool,
) -> Result<()> {
    let mut balancer = Balancer::new(policy.clone(), dry_run);
    let out = Output {
        print_all: once || dry_run,
    };
    if once {
        let events = balancer.pass(lv, fs, crate::host::unix_now())?;
        report(&events, out);
        return match events.iter().find(|e| matches!(e, Event::Failed { .. })) {
            Some(e) => Err(Error::Refused(e.to_string())),
            None => Ok(()),
        };
    }
    let signals = StopSignals::block()?;
    report_line(
        &format!(
            "balance: running every {} s{}",
            policy.interval.as_secs_f64(),
            if dry_run { " (dry run)" } else { "" }
        ),
        out,
    );
    let mut last_error: Option<String> = None;
    loop {
        match balancer.pass(lv, fs, crate::host::unix_now()) {
            Ok(events) => {
                if last_error.take().is_some() {
                    report_line("balance: libvirt and the host answer again", out);
                }
                report(&events, out);
            }
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(&text) {
                    log::warn(&format!("balance: {text}; trying again"));
                    last_error = Some(text);
                }
            }
        }
        if let Some(sig) = signals.wait(policy.interval)? {
            report_line(&format!("balance: {sig}: stopping"), out);
            return Ok(());
        }
    }
}

fn report_line(line: &str, out: Output) {
    log::info(line);
    if out.print_all || !log::has_syslog() {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests;
