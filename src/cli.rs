//! Entry: argv[0] decides between libvirt's hook mode and the clap CLI; the roots
//! (`assemble::Roots`) come from flags over environment over defaults; errors become exit codes.

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::apply::planned::{preview, Preview};
use crate::apply::snapshot::Snapshot;
use crate::apply::{self, Base, Recover};
use crate::assemble::Roots;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::hook::{self, HookCall};
use crate::host::RootFs;
use crate::log;
use crate::policy::Policy;
use crate::privilege::Privilege;
use crate::size::page_size_name;
use crate::state::StateDir;
use crate::status;

#[derive(Debug, Parser)]
#[command(
    name = "kvmtune",
    version,
    about = "Tune a KVM host for each VM while it runs (hugepages on the right NUMA node), and restore it exactly"
)]
pub struct Cli {
    #[command(flatten)]
    pub roots: Roots,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as libvirt's QEMU hook: NAME OP SUBOP [EXTRA], the domain XML on stdin.
    Hook {
        /// Taken by position only (a domain may be called `--help`).
        #[arg(num_args = 3..=4, allow_hyphen_values = true, value_name = "NAME OP SUBOP [EXTRA]")]
        args: Vec<String>,
    },
    /// Show what `prepare` would do for a VM on this host now; changes nothing.
    Plan {
        /// Read the domain XML from FILE instead of libvirt's for the domain called NAME.
        #[arg(long, value_name = "FILE")]
        xml: Option<PathBuf>,
        /// The VM's name (default: the <name> in the XML).
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show what each VM holds, every hugepage pool, which CPUs are isolated, and whether every
    /// promise kvmtune made holds (first line). Exits 0 when all are kept, 1 when one is not.
    Status {
        /// The same as --format json.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// text (default), json, or prometheus (the metrics `kvmtune watch` writes for
        /// node_exporter's textfile collector).
        #[arg(long, value_enum, value_name = "FORMAT")]
        format: Option<StatusFormat>,
    },
    /// A daemon that keeps every promise kvmtune made for running VMs: pins device IRQs that
    /// appear late (VFIO vectors come when the guest enables MSI-X), sweeps host processes born
    /// on isolated CPUs, puts back what someone reset (an IRQ, a cgroup, a pool, a knob),
    /// releases VMs whose QEMU died while libvirtd was down, and writes kvmtune.prom for
    /// node_exporter. Takes the lock only to change something; each repair is one syslog line.
    Watch {
        /// Look once (and write the metrics), then exit.
        #[arg(long)]
        once: bool,
    },
    /// The old name of `watch`, kept for one release: pins device IRQs only, as before.
    #[command(hide = true)]
    IrqWatch {
        /// Look once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Move memory between running VMs through their balloons: give idle memory back to a
    /// host that runs short, and hand it out again when memory is plentiful, within each VM's
    /// <kvmtune:balloon min max> bounds. A daemon; SIGTERM ends it.
    Balance {
        /// One pass, then exit.
        #[arg(long)]
        once: bool,
        /// Print what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// libvirt connection URI.
        #[arg(long, value_name = "URI", default_value = "qemu:///system")]
        connect: String,
    },
    /// Run QEMU with the hook's tuning: prepare, start QEMU, started, wait, release. The VM's
    /// needs come from QEMU's arguments (-m, -smp, -numa, -object memory-backend-*,
    /// -mem-path, -device vfio-pci) or from --xml; QEMU's exit status becomes kvmtune's.
    Run(RunArgs),
    /// Judge a VM's design against this host: NUMA placement, pins, hugepages, memory,
    /// devices. Exits 1 when an error-level finding exists.
    Check {
        /// Read the domain XML from FILE instead of libvirt's for the domain called NAME.
        #[arg(long, value_name = "FILE")]
        xml: Option<PathBuf>,
        /// The VM's name (default: the <name> in the XML).
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the placement XML (<vcpu>, <cputune>, <numatune>, <cpu><numa>, <memoryBacking>)
    /// of a VM that fits this host now.
    Suggest {
        #[arg(long, value_name = "N")]
        vcpus: u32,
        /// e.g. 16G, 8192M.
        #[arg(long, value_name = "SIZE")]
        memory: String,
        /// Back the memory with hugepages of this size.
        #[arg(long, value_name = "2M|1G")]
        hugepages: Option<String>,
        /// The host node to use; auto: the node with room.
        #[arg(long, value_name = "auto|N", default_value = "auto")]
        node: String,
        /// Only isolatable CPUs, and ask kvmtune to isolate them (metadata).
        #[arg(long)]
        isolate: bool,
    },
    /// Finish or undo interrupted operations and release what stopped VMs still hold.
    Recover {
        /// Release every VM whose QEMU process no longer runs (default when no NAME is given).
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// Release this VM's holdings, running or not.
        name: Option<String>,
    },
}

/// How `kvmtune status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
    Prometheus,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The VM's name (default: the XML's <name>, else QEMU's -name, else qemu-PID).
    #[arg(long)]
    pub name: Option<String>,
    /// Take the VM's needs from this domain XML instead of QEMU's arguments.
    #[arg(long, value_name = "FILE")]
    pub xml: Option<PathBuf>,
    /// Reserve hugepages: auto (when the memory is hugepage-backed), on, off.
    #[arg(long, value_name = "auto|on|off", value_parser = crate::launch::option_word::<crate::domain::metadata::Reserve>)]
    pub hugepages: Option<crate::domain::metadata::Reserve>,
    /// Isolate CPUs while QEMU runs (QEMU runs on them): a CPU list, vcpus (--xml), off.
    #[arg(long, value_name = "LIST|vcpus|off", value_parser = crate::launch::option_word::<crate::domain::metadata::IsolateChoice>)]
    pub isolate: Option<crate::domain::metadata::IsolateChoice>,
    /// Where the IRQs of -device vfio-pci devices go: a CPU list, housekeeping, vcpus, off.
    #[arg(long, value_name = "LIST|housekeeping|vcpus|off", value_parser = crate::launch::option_word::<crate::domain::metadata::IrqChoice>)]
    pub irq: Option<crate::domain::metadata::IrqChoice>,
    /// The QEMU program and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "QEMU [ARGS]")]
    pub command: Vec<String>,
}

/// Run kvmtune with these arguments; returns the exit status.
pub fn main(argv: Vec<OsString>) -> i32 {
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if is_hook_name(args.first().map(String::as_str).unwrap_or("")) {
        return hook_mode(&args[1..], &Roots::from_env());
    }
    if crate::launch::emulator::is_emulator_name(args.first().map(String::as_str).unwrap_or("")) {
        return crate::launch::emulator::main(&argv);
    }
    // `kvmtune [ROOT FLAGS] hook …` is parsed by position too, before clap can see a `--help`.
    if let Some((roots, rest)) = split_hook_args(&args[1..]) {
        return hook_mode(&rest, &roots);
    }
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    log::init(&cli.roots.root);
    let privilege = match cli.roots.privilege() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kvmtune: {e}");
            return e.exit_code();
        }
    };
    if let Command::Run(run) = &cli.command {
        return crate::launch::run(
            &cli.roots,
            &privilege,
            &crate::launch::RunOptions {
                name: run.name.clone(),
                xml: run.xml.clone(),
                hugepages: run.hugepages,
                isolate: run.isolate.clone(),
                irq: run.irq.clone(),
                command: run.command.clone(),
            },
        );
    }
    match run_command(&cli, &privilege) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvmtune: {e}");
            e.exit_code()
        }
    }
}

/// Hook mode when argv[0] is called `qemu`, or lies in a directory called `qemu.d`.
fn is_hook_name(argv0: &str) -> bool {
    let path = Path::new(argv0);
    path.file_name().is_some_and(|n| n == "qemu")
        || path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "qemu.d")
}

fn hook_mode(args: &[String], roots: &Roots) -> i32 {
    log::init(&roots.root);
    let call = match HookCall::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            say(&e.to_string());
            return e.exit_code();
        }
    };
    exit_on_panic(if call.may_fail() { 1 } else { 0 });
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let privilege = match roots.privilege() {
        Ok(p) => p,
        Err(e) => {
            let _ = io::copy(&mut input, &mut io::sink());
            say(&e.to_string());
            return if call.may_fail() { e.exit_code() } else { 0 };
        }
    };
    // libvirt's session daemon runs the same hook as an unprivileged user: nothing to do.
    if !privilege.is_root() {
        let _ = io::copy(&mut input, &mut io::sink());
        return 0;
    }
    let env = HostEnv {
        roots,
        privilege: &privilege,
    };
    let mut out = io::stdout().lock();
    match hook::run(&call, &mut input as &mut dyn Read, &mut out, &env) {
        Ok(()) => 0,
        Err(e) => {
            // syslog gets the context; stderr (which libvirt shows to whoever ran `virsh
            // start`) gets the one line.
            log::to_syslog_only(&format!(
                "{} {} of VM {:?} failed: {e}",
                call.op, call.subop, call.vm
            ));
            say(&e.to_string());
            if call.may_fail() {
                e.exit_code()
            } else {
                0
            }
        }
    }
}

/// The one line libvirt shows. A closed or broken stderr is no reason to fail (eprintln!
/// would panic): the detail is in syslog.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(io::stderr(), "kvmtune: {}", line.replace(['\n', '\r'], " "));
}

/// A bug must not change the exit status libvirt acts on: a failed `reconnect` makes libvirt
/// kill a running VM. A panic exits with `code` (0 for the operations that always exit 0)
/// after one line; what it was doing is journaled and finished or undone by the next call,
/// exactly as after a `kill -9`.
fn exit_on_panic(code: i32) {
    std::panic::set_hook(Box::new(move |info| {
        let what = info.to_string();
        log::to_syslog_only(&format!("internal error: {what}"));
        say(&format!("internal error: {what}"));
        std::process::exit(code);
    }));
}

/// Parse `[--root D] [--state-dir D] [--config F] hook ARGS…` by hand.
fn split_hook_args(args: &[String]) -> Option<(Roots, Vec<String>)> {
    let mut roots = Roots::from_env();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "hook" {
            return Some((roots, args[i + 1..].to_vec()));
        }
        let (flag, value) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let slot = match flag {
            "--root" => &mut roots.root,
            "--state-dir" => &mut roots.state_dir,
            "--config" => &mut roots.config,
            _ => return None,
        };
        let value = match value {
            Some(v) => v,
            None => {
                i += 1;
                args.get(i)?.clone()
            }
        };
        *slot = PathBuf::from(value);
        i += 1;
    }
    None
}

/// The hook's operations on the host under the roots.
struct HostEnv<'a> {
    roots: &'a Roots,
    privilege: &'a Privilege,
}

impl hook::Env for HostEnv<'_> {
    fn policy(&self) -> Result<Policy> {
        self.roots.policy(self.privilege)
    }

    fn with_base(&self, f: &mut dyn FnMut(&Base) -> Result<()>) -> Result<()> {
        let owner = self.roots.base(self.privilege)?;
        f(&owner.base())
    }
}

/// Run a command; its exit status (0, or 1 for a status whose promises are not all kept).
fn run_command(cli: &Cli, privilege: &Privilege) -> Result<i32> {
    let roots = &cli.roots;
    if let Command::Status { json, format } = &cli.command {
        let format = match (json, format) {
            (true, _) => StatusFormat::Json,
            (false, f) => f.unwrap_or(StatusFormat::Text),
        };
        return status(roots, privilege, format);
    }
    run_other(cli, privilege).map(|()| 0)
}

/// `kvmtune status`: the verdict decides the exit status, whatever the format.
fn status(roots: &Roots, privilege: &Privilege, format: StatusFormat) -> Result<i32> {
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

fn run_other(cli: &Cli, privilege: &Privilege) -> Result<()> {
    let roots = &cli.roots;
    match &cli.command {
        Command::Hook { .. } => unreachable!("hook is parsed by position before clap"),
        Command::Run(_) => unreachable!("run returns QEMU's status, handled in main"),
        Command::Plan { xml, name, json } => {
            let policy = roots.policy(privilege)?;
            let (text, vm) = domain_xml(xml.as_deref(), name.as_deref())?;
            let domain = Domain::parse(&text)?;
            let vm = vm.unwrap_or_else(|| domain.name.clone());
            let ledger = match StateDir::peek(&roots.state_dir, privilege)? {
                Some(s) => s.load_ledger()?,
                None => Default::default(),
            };
            let (fs, irqbalance) = (
                RootFs::new(&roots.root),
                crate::host::irqbalance::IrqbalanceSocket::new(&roots.root),
            );
            let systemctl = crate::host::systemctl::SystemctlCommand;
            let snapshot = Snapshot::new(&fs, &systemctl, &irqbalance);
            let preview = preview(&snapshot.probe(), &policy, &domain, &vm, &ledger)?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&preview).expect("plan serializes")
                );
            } else {
                print!("{}", render_plan(&preview, &snapshot));
            }
            Ok(())
        }
        Command::Status { .. } => unreachable!("status is handled in run_command"),
        Command::Watch { once } => watch(roots, privilege, crate::watch::Watcher::new(), *once),
        Command::IrqWatch { once } => {
            watch(roots, privilege, crate::watch::Watcher::irqs_only(), *once)
        }
        Command::Balance {
            once,
            dry_run,
            connect,
        } => {
            let policy = roots.policy(privilege)?;
            let fs = RootFs::new(&roots.root);
            let mut virsh = crate::host::virsh::Virsh::new(Some(connect));
            crate::balance::run(&mut virsh, &fs, &policy.balance, *once, *dry_run)
        }
        Command::Check { xml, name, json } => {
            let policy = roots.policy(privilege)?;
            let (text, vm) = domain_xml(xml.as_deref(), name.as_deref())?;
            crate::advisor::run_check(
                &RootFs::new(&roots.root),
                &policy,
                &text,
                vm.as_deref(),
                *json,
            )
        }
        Command::Suggest {
            vcpus,
            memory,
            hugepages,
            node,
            isolate,
        } => {
            let policy = roots.policy(privilege)?;
            let args = crate::advisor::suggest::SuggestArgs {
                vcpus: *vcpus,
                memory_bytes: crate::size::parse_size(memory)
                    .map_err(|e| Error::Usage(format!("--memory: {e}")))?,
                page_kib: hugepages
                    .as_deref()
                    .map(crate::advisor::suggest::parse_page_size)
                    .transpose()?,
                node: match node.as_str() {
                    "auto" => None,
                    n => Some(n.parse().map_err(|_| {
                        Error::Usage(format!("--node {n:?}: expected auto or a node number"))
                    })?),
                },
                isolate: *isolate,
            };
            crate::advisor::run_suggest(&RootFs::new(&roots.root), &policy, &args)
        }
        Command::Recover { all: _, name } => {
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
    }
}

fn watch(
    roots: &Roots,
    privilege: &Privilege,
    watcher: crate::watch::Watcher,
    once: bool,
) -> Result<()> {
    privilege.require_root("watch")?;
    let mut owner = roots.context(privilege)?;
    crate::watch::run(&mut owner, &roots.config, watcher, once)
}

/// The XML from `--xml FILE` or, outside the hook, libvirt's for the domain called NAME.
fn domain_xml(xml: Option<&Path>, name: Option<&str>) -> Result<(String, Option<String>)> {
    if let Some(path) = xml {
        let text = if path == Path::new("-") {
            let mut s = String::new();
            io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::io("read", "stdin", e))?;
            s
        } else {
            std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?
        };
        return Ok((text, name.map(str::to_string)));
    }
    let name = name.ok_or_else(|| Error::Usage("give a VM NAME or --xml FILE".into()))?;
    // By its UUID: a VM called `7` is not the running domain with id 7.
    let text = crate::host::virsh::Virsh::new(None)
        .domain_xml(name)
        .map_err(|e| match e {
            // A name libvirt does not know is the caller's mistake (exit 2).
            Error::Domain(m) => Error::Usage(m),
            other => other,
        })?;
    Ok((text, Some(name.to_string())))
}

/// `kvmtune plan` as text: the decisions, then every change of `prepare` and of `started`,
/// one a line, as their journals will record them.
fn render_plan(preview: &Preview, fs: &dyn crate::host::HostFs) -> String {
    let plan = &preview.plan;
    let mut out = format!("VM {:?}:\n", plan.vm);
    if plan.hugepages.is_empty() {
        out.push_str("  hugepages: none reserved (not hugepage-backed, or reserve=off)\n");
    }
    for g in &plan.hugepages {
        out.push_str(&format!(
            "  hugepages: node {} {}: needs {} pages; {} free, {} promised to other VMs; grow by {}\n",
            g.pool.node,
            page_size_name(g.pool.page_kib),
            g.pages,
            g.before.free,
            g.promised,
            g.grow
        ));
    }
    if !plan.isolate.is_empty() {
        out.push_str(&format!(
            "  isolate: CPUs {}: host tasks move off them while the VM runs\n",
            plan.isolate
        ));
    }
    if let Some(irq) = plan.irq.as_ref().filter(|_| !plan.devices.is_empty()) {
        out.push_str(&format!(
            "  irq: IRQs of passthrough devices {} go to CPUs {irq} from started on\n",
            plan.devices
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for k in &plan.knobs {
        let now = crate::host::knobs::read_value(fs, &k.path)
            .ok()
            .flatten()
            .unwrap_or_default();
        out.push_str(&format!(
            "  knob: /{} = {} while the VM runs ({}; now {now})\n",
            k.path, k.value, k.why
        ));
    }
    if preview.releases_stale_hold {
        out.push_str("  note: the ledger still holds this VM from a run whose release never came; prepare gives that back first (not counted below)\n");
    }
    render_changes(
        &mut out,
        "prepare",
        "as its journal will record them",
        &preview.prepare,
    );
    render_changes(
        &mut out,
        "started",
        "once QEMU runs; its journal records them",
        &preview.started,
    );
    if !preview.prepare.is_empty() || !preview.started.is_empty() {
        // Said, not hidden: `tests/plan_journal.rs` shows each of these.
        out.push_str("  note: the journals differ from this only if the host changes first: a kernel thread born meanwhile is one more change (a new process is moved by the change shown), IRQ vectors a guest enables later are pinned when they appear, and an IRQ the kernel manages refuses to move (started tries it, then leaves it out)\n");
    }
    out
}

/// One operation's changes under a heading that counts them.
fn render_changes(
    out: &mut String,
    operation: &str,
    when: &str,
    changes: &[crate::change::Change],
) {
    match changes.len() {
        0 => out.push_str(&format!("  {operation}: no change\n")),
        1 => out.push_str(&format!("  {operation}: 1 change, {when}:\n")),
        n => out.push_str(&format!("  {operation}: {n} changes, {when}:\n")),
    }
    for c in changes {
        out.push_str(&format!("    change: {c}\n"));
    }
}
