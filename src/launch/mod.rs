//! `kvmtune run`: the hook's lifecycle around a QEMU that runs without libvirt.
//!
//! prepare (the hook's plan, journal and apply, for a domain read from QEMU's own arguments or
//! from `--xml`) → spawn QEMU → the `started` actions once QEMU has mapped its memory and opened
//! its devices (`ready`) → wait, passing signals on → release. QEMU's exit status becomes
//! kvmtune's. If kvmtune itself is killed, QEMU is told to stop (parent-death signal) and the
//! journal and ledger let `kvmtune recover` release what the VM held.
//!
//! The emulator mode (`emulator`) is the other way to wrap QEMU: libvirt runs kvmtune in its
//! place, for what only the QEMU process can carry.

pub mod emulator;
pub mod opts;
pub mod placement;
pub mod process;
pub mod qemu_args;
pub mod ready;
pub mod spawn;
pub mod supervise;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::apply::{self, Context};
use crate::assemble::Roots;
use crate::domain::metadata::{IrqChoice, IsolateChoice, Reserve};
use crate::domain::Domain;
use crate::error::{BadValue, Error, Result};
use crate::host::hugepages::default_page_kib;
use crate::host::tasks::read_task;
use crate::host::HostFs;
use crate::log;
use crate::plan::Plan;
use crate::privilege::Privilege;
use process::Settings;
use qemu_args::{Hugetlbfs, QemuArgs};
use ready::{Expect, Ready};
use supervise::Signals;

/// How long QEMU may take to map its memory and open its devices before the `started` actions
/// run anyway (preallocating a large VM's memory takes a while; the pages are reserved first).
const STARTED_WAIT: Duration = Duration::from_secs(60);
/// How often QEMU is looked at until then, at most.
const POLL_MAX: Duration = Duration::from_millis(200);

/// `kvmtune run`'s options.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub name: Option<String>,
    pub xml: Option<PathBuf>,
    pub hugepages: Option<Reserve>,
    pub isolate: Option<IsolateChoice>,
    pub irq: Option<IrqChoice>,
    /// The QEMU program and its arguments.
    pub command: Vec<String>,
}

/// clap's parser for `--hugepages`, `--isolate` and `--irq`: the metadata's words through the
/// metadata's parsers (`Reserve`, `IsolateChoice`, `IrqChoice`). clap names the option and the
/// value; this says what is accepted.
pub fn option_word<T: FromStr<Err = BadValue>>(value: &str) -> Result<T, String> {
    value.parse().map_err(|e: BadValue| e.reason())
}

/// Run QEMU under kvmtune; returns kvmtune's exit status (QEMU's, once QEMU ran).
pub fn run(roots: &Roots, privilege: &Privilege, options: &RunOptions) -> i32 {
    let signals = Signals::block();
    match run_vm(roots, privilege, options, &signals) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvmtune: {e}");
            e.exit_code()
        }
    }
}

fn run_vm(
    roots: &Roots,
    privilege: &Privilege,
    options: &RunOptions,
    signals: &Signals,
) -> Result<i32> {
    let (program_arg, args) = options.command.split_first().ok_or_else(|| {
        Error::Usage("run needs a QEMU program: kvmtune run -- QEMU [ARGS…]".into())
    })?;
    let program = find_program(program_arg)?;
    let parsed = qemu_args::parse(args).map_err(Error::Usage)?;
    if parsed.query {
        // -version, -help, -device help: QEMU prints and exits; there is no VM to tune.
        return Err(spawn::exec(
            &program,
            &options.command,
            Some(&signals.original),
        ));
    }
    if parsed.daemonize {
        return Err(Error::Usage(
            "kvmtune run supervises QEMU and cannot follow it into the background: remove -daemonize (run kvmtune itself in the background)".into(),
        ));
    }
    privilege.require_root("run")?;
    let owner = roots.context(privilege)?;
    let ctx = Context {
        kvmtune_run: true,
        ..owner.context()
    };
    let mut domain = match &options.xml {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
            Domain::parse(&text).map_err(|e| Error::Domain(format!("{}: {e}", path.display())))?
        }
        None => domain_from_args(ctx.fs, &parsed)?,
    };
    if let Some(r) = options.hugepages {
        domain.tune.hugepages = Some(r);
    }
    if let Some(i) = &options.isolate {
        domain.tune.isolate = Some(i.clone());
    }
    if let Some(i) = &options.irq {
        domain.tune.irq = Some(i.clone());
    }
    let name = vm_name(options, &domain, &parsed)?;
    let mut argv = options.command.clone();
    if parsed.name.is_none() {
        // `kvmtune recover` tells a running VM by its QEMU's -name.
        argv.extend([
            "-name".to_string(),
            format!("guest={}", name.replace(',', ",,")),
        ]);
    }
    refuse_if_running(ctx.fs, &name)?;

    let plan = apply::prepare(&ctx, &name, &domain)?;
    for g in plan.hugepages.iter().filter(|g| g.grow > 0) {
        log::info(&format!(
            "VM '{name}': {} grown by {} page(s) for it",
            g.pool, g.grow
        ));
    }
    // From here on the VM may hold resources: every way out releases them.
    let outcome = launch(&ctx, &name, &domain, &plan, &program, &argv, signals);
    if let Err(e) = apply::release(&ctx, &name) {
        log::error(&format!("release of VM '{name}' failed: {e}"));
        eprintln!("kvmtune: releasing VM '{name}': {e} (`kvmtune recover` finishes it)");
    }
    outcome
}

/// The domain QEMU's arguments describe, with this host's hugetlbfs mounts.
pub fn domain_from_args(fs: &dyn HostFs, parsed: &QemuArgs) -> Result<Domain> {
    let default_kib = default_page_kib(fs)?;
    let mounts = Hugetlbfs::parse(&fs.read("proc/mounts").unwrap_or_default(), default_kib);
    qemu_args::to_domain(parsed, &mounts, default_kib).map_err(Error::Usage)
}

/// `--name`, else the XML's `<name>`, else QEMU's `-name`, else `qemu-PID`; it must agree
/// with QEMU's -name, by which `recover` finds the VM.
fn vm_name(options: &RunOptions, domain: &Domain, parsed: &QemuArgs) -> Result<String> {
    let name = options
        .name
        .clone()
        .or_else(|| (!domain.name.is_empty()).then(|| domain.name.clone()))
        .unwrap_or_else(|| format!("qemu-{}", std::process::id()));
    if name.is_empty() || name.contains('/') {
        return Err(Error::Usage(format!(
            "VM name '{name}' is not usable (empty, or contains '/')"
        )));
    }
    match &parsed.name {
        Some(q) if *q != name => Err(Error::Usage(format!(
            "the VM is called '{name}' but QEMU's -name is '{q}': give one name (kvmtune recover finds a VM by QEMU's -name)"
        ))),
        _ => Ok(name),
    }
}

/// Another process running this VM would share its holdings (and a libvirt domain of that
/// name would release them when it stops).
fn refuse_if_running(fs: &dyn HostFs, name: &str) -> Result<()> {
    let ours = ancestry(fs);
    let others: Vec<u32> = crate::host::process::processes_naming(fs, name)
        .into_iter()
        .filter(|pid| !ours.contains(pid))
        .collect();
    match others.first() {
        Some(pid) => Err(Error::Refused(format!(
            "VM '{name}' already runs (pid {pid} is named '{name}'). Nothing was changed."
        ))),
        None => Ok(()),
    }
}

/// This process and its ancestors (`sudo kvmtune run -- qemu -name x` names the VM too).
fn ancestry(fs: &dyn HostFs) -> Vec<u32> {
    let mut out = vec![std::process::id()];
    while out.len() < 64 {
        let pid = out[out.len() - 1];
        let Ok(stat) = fs.read(&format!("proc/{pid}/stat")) else {
            break;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        match parent {
            Some(p) if p > 1 && !out.contains(&p) => out.push(p),
            _ => break,
        }
    }
    out
}

/// Where `program` is: as given when it holds a `/`, else the first executable in PATH.
pub fn find_program(program: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if executable(&p) {
            Ok(p)
        } else {
            Err(Error::Usage(format!(
                "QEMU program {program} does not exist or is not executable"
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| Error::Usage(format!("QEMU program '{program}' is not in PATH")))
}

/// Spawn QEMU, run `started` when it is up, wait for it. Returns its exit status.
fn launch(
    ctx: &Context,
    name: &str,
    domain: &Domain,
    plan: &Plan,
    program: &Path,
    argv: &[String],
    signals: &Signals,
) -> Result<i32> {
    if let Some(sig) = signals.take_pending() {
        log::info(&format!(
            "VM '{name}': signal {sig} before QEMU started; not starting it"
        ));
        return Ok(128 + sig);
    }
    let mut settings = Settings::for_domain(domain, process::may_raise_memlock());
    if let Some(lim) = settings.memlock.filter(|l| l.hard != libc::RLIM_INFINITY) {
        eprintln!(
            "kvmtune: warning: VM '{name}' locks its memory, but RLIMIT_MEMLOCK can only be raised to its hard limit, {} KiB (no CAP_SYS_RESOURCE)",
            lim.hard / 1024
        );
    }
    let isolating = !plan.isolate.is_empty();
    if isolating {
        settings.cpus = Some(plan.isolate.clone());
    }
    // For an isolating VM the child is recorded under the lock before it runs, so confining
    // host tasks (ours or another VM's) never takes it for one.
    let lock = if isolating {
        Some(ctx.state.lock()?)
    } else {
        None
    };
    let mut record = |pid: Pid| -> Result<()> {
        if !isolating {
            return Ok(());
        }
        let pid = pid.as_raw() as u32;
        let mut ledger = ctx.state.load_ledger()?;
        if let Some(hold) = ledger.vms.get_mut(name) {
            hold.pid = Some(pid);
            ctx.state.save_ledger(&ledger)?;
        }
        let partition = ledger
            .isolation
            .as_ref()
            .is_some_and(|h| crate::isolation::confiner(h.method).holds_run_qemu());
        if partition {
            placement::enter_partition(ctx.fs, pid)?;
        } else {
            placement::leave_housekeeping(ctx.fs, pid)?;
        }
        Ok(())
    };
    let pid = spawn::spawn(program, argv, &settings, &signals.original, &mut record)?;
    drop(lock);
    log::info(&format!("VM '{name}': QEMU runs as pid {pid}"));
    supervise(ctx, name, plan, pid, signals)
}

/// Wait for QEMU to end, running the `started` actions once it is up and passing signals on.
fn supervise(ctx: &Context, name: &str, plan: &Plan, pid: Pid, signals: &Signals) -> Result<i32> {
    let expect = Expect::new(ctx.fs, plan);
    let begun = Instant::now();
    let mut poll = Duration::from_millis(5);
    let mut started = false;
    let mut failure: Option<Error> = None;
    loop {
        let timeout = (!started).then_some(poll);
        if let Some(sig) = signals.next(timeout) {
            if sig != libc::SIGCHLD {
                supervise::forward(pid, sig);
            }
        }
        if let Some(code) = supervise::reap(pid) {
            return match failure {
                Some(e) => Err(e),
                None => Ok(code),
            };
        }
        if started {
            continue;
        }
        match ready::check(ctx.fs, pid.as_raw() as u32, &expect) {
            Ready::NotYet(_) if begun.elapsed() < STARTED_WAIT => {
                poll = (poll * 2).min(POLL_MAX);
                continue;
            }
            Ready::NotYet(why) => log::warn(&format!(
                "VM '{name}': QEMU (pid {pid}) is not fully up after {} s ({why}); running the started actions now",
                STARTED_WAIT.as_secs()
            )),
            Ready::Yes | Ready::Unobservable => {}
        }
        started = true;
        match apply::started(ctx, name) {
            Ok(()) => {
                check_placement(ctx.fs, name, plan, pid);
                leave_isolated_cpus(ctx);
            }
            Err(e) => {
                // As libvirt aborts a start whose `started` hook fails: QEMU is stopped.
                supervise::forward(pid, libc::SIGTERM);
                failure = Some(e);
            }
        }
    }
}

/// kvmtune run waits for QEMU as a host task: on the housekeeping CPUs while CPUs are isolated.
fn leave_isolated_cpus(ctx: &Context) {
    let isolating = ctx.state.load_ledger().is_ok_and(|l| l.isolation.is_some());
    if isolating {
        if let Err(e) = placement::join_housekeeping(ctx.fs, std::process::id()) {
            log::warn(&format!("kvmtune run stays where it is: {e}"));
        }
    }
}

/// An isolating VM's QEMU should run on its isolated CPUs; a cgroup the caller put kvmtune in
/// (a systemd unit, a container) may confine it elsewhere.
fn check_placement(fs: &dyn HostFs, name: &str, plan: &Plan, pid: Pid) {
    if plan.isolate.is_empty() {
        return;
    }
    let Some(task) = read_task(fs, pid.as_raw() as u32) else {
        return;
    };
    if task.allowed != plan.isolate {
        eprintln!(
            "kvmtune: warning: VM '{name}' isolates CPUs {}, but its QEMU (pid {pid}) may run on CPUs {}: the cgroup kvmtune runs in confines it",
            plan.isolate, task.allowed
        );
    }
}
