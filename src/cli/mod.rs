//! Entry: argv[0] decides between libvirt's hook mode (`hook_mode`), the emulator
//! (`launch::emulator`) and the clap CLI; the roots (`assemble::Roots`) come from flags over
//! environment over defaults; errors become exit codes. This file holds the clap types and the
//! dispatch; each group of commands has its file: `plan`, `advise` (`check`, `suggest`),
//! `state` (`status`, `recover`), `daemon` (`watch`, `irq-watch`, `balance`), and `xml` the
//! domain XML `plan` and `check` read. `kvmtune run` is `launch::run`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::assemble::Roots;
use crate::error::Result;
use crate::log;
use crate::privilege::Privilege;

mod advise;
mod daemon;
mod hook_mode;
mod plan;
mod state;
mod xml;

use hook_mode::{hook_mode, is_hook_name, split_hook_args};

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
    match run_command(&cli, &privilege) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvmtune: {e}");
            e.exit_code()
        }
    }
}

/// Run a command; its exit status (0, 1 for a status whose promises are not all kept, or
/// QEMU's for `run`).
fn run_command(cli: &Cli, privilege: &Privilege) -> Result<i32> {
    let roots = &cli.roots;
    match &cli.command {
        Command::Hook { .. } => unreachable!("hook is parsed by position before clap"),
        // QEMU's exit status becomes kvmtune's.
        Command::Run(run) => Ok(crate::launch::run(
            roots,
            privilege,
            &crate::launch::RunOptions {
                name: run.name.clone(),
                xml: run.xml.clone(),
                hugepages: run.hugepages,
                isolate: run.isolate.clone(),
                irq: run.irq.clone(),
                command: run.command.clone(),
            },
        )),
        Command::Status { json, format } => {
            let format = match (json, format) {
                (true, _) => StatusFormat::Json,
                (false, f) => f.unwrap_or(StatusFormat::Text),
            };
            state::status(roots, privilege, format)
        }
        Command::Plan { xml, name, json } => {
            plan::plan(roots, privilege, xml.as_deref(), name.as_deref(), *json).map(|()| 0)
        }
        Command::Watch { once } => {
            daemon::watch(roots, privilege, crate::watch::Watcher::new(), *once).map(|()| 0)
        }
        Command::IrqWatch { once } => {
            daemon::watch(roots, privilege, crate::watch::Watcher::irqs_only(), *once).map(|()| 0)
        }
        Command::Balance {
            once,
            dry_run,
            connect,
        } => daemon::balance(roots, privilege, connect, *once, *dry_run).map(|()| 0),
        Command::Check { xml, name, json } => {
            advise::check(roots, privilege, xml.as_deref(), name.as_deref(), *json).map(|()| 0)
        }
        Command::Suggest {
            vcpus,
            memory,
            hugepages,
            node,
            isolate,
        } => {
            let asked = advise::Asked {
                vcpus: *vcpus,
                memory,
                hugepages: hugepages.as_deref(),
                node,
                isolate: *isolate,
            };
            advise::suggest(roots, privilege, &asked).map(|()| 0)
        }
        Command::Recover { all: _, name } => {
            state::recover(roots, privilege, name.as_deref()).map(|()| 0)
        }
    }
}
