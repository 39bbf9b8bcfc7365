//! Emulator mode: libvirt runs kvmtune in QEMU's place (a domain's `<emulator>` names
//! `/usr/libexec/kvmtune/qemu-system-x86_64`, or kvmtune runs as `kvmtune-qemu`), and kvmtune
//! `exec`s the real QEMU named by the policy (`[emulator] qemu`).
//!
//! - libvirt's capability probes (`-S -no-user-config -nodefaults -nographic -machine none
//!   … -qmp unix:… -daemonize`), `-version`, `-help`, `-device help`: everything that is not a
//!   VM's launch goes straight to the real QEMU, arguments and environment untouched. A launch
//!   is told apart by its `-name` (libvirt names every VM; probes have none).
//! - A VM's launch first gets what only the process can carry: the memory policy of the VM's
//!   nodes (`set_mempolicy`, kept across `exec`: QEMU's own allocations become node-local, not
//!   only guest RAM, which QEMU binds itself) and, for `<locked/>`, RLIMIT_MEMLOCK.
//!
//! Where the VM's settings come from: QEMU's arguments. libvirt runs the emulator as its QEMU
//! user (`libvirt-qemu`, without capabilities), which cannot read the domain XML
//! (`/run/libvirt/qemu/NAME.xml` and `/etc/libvirt/qemu/NAME.xml` are root's, mode 0600). The
//! arguments are also exactly what this QEMU will run with: libvirt writes `<numatune>` into
//! the memory backends (`"host-nodes":[0],"policy":"bind"`), `<locked/>` as `-overcommit
//! mem-lock=on`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::process::{self, Settings};
use super::{domain_from_args, qemu_args, spawn};
use crate::assemble::Roots;
use crate::error::{Error, Result};
use crate::host::RootFs;
use crate::log;
use crate::policy::Policy;

/// The name kvmtune answers to as an emulator, besides a `qemu-system-*` it is installed as.
pub const EMULATOR_NAME: &str = "kvmtune-qemu";

/// Emulator mode when argv[0]'s file name is `kvmtune-qemu` or `qemu-system-*`.
pub fn is_emulator_name(argv0: &str) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == EMULATOR_NAME || n.starts_with("qemu-system-"))
}

/// Run as the emulator; returns only when the real QEMU could not be run (its status). The
/// arguments are passed on byte for byte.
pub fn main(argv: &[OsString]) -> i32 {
    let roots = Roots::from_env();
    let err = emulate(&roots, argv);
    eprintln!("kvmtune: {err}");
    err.exit_code()
}

fn emulate(roots: &Roots, argv: &[OsString]) -> Error {
    let argv0 = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| EMULATOR_NAME.to_string());
    let args = argv.get(1..).unwrap_or_default();
    let text: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // Decided once, here: the emulator is an entry of its own (libvirt runs it in QEMU's place).
    let privilege = match roots.privilege() {
        Ok(p) => p,
        Err(e) => return e,
    };
    let policy = match roots.policy(&privilege) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let qemu = match real_qemu(&policy, &argv0) {
        Ok(q) => q,
        Err(e) => return e,
    };
    if is_launch(&text) {
        if let Err(e) = prepare_launch(roots, &text) {
            return e;
        }
    }
    let mut real_argv = vec![qemu.clone().into_os_string()];
    real_argv.extend_from_slice(args);
    spawn::exec(&qemu, &real_argv, None)
}

/// A VM's launch names the VM; probes and queries do not, or ask QEMU to print and exit.
fn is_launch(args: &[String]) -> bool {
    args.iter().any(|a| a == "-name" || a == "--name")
}

/// Set the VM's memory policy and memory-lock limit on this process, before it becomes QEMU.
fn prepare_launch(roots: &Roots, args: &[String]) -> Result<()> {
    let parsed = qemu_args::parse(args).map_err(Error::Usage)?;
    if parsed.query {
        return Ok(());
    }
    log::init(&roots.root);
    let fs = RootFs::new(&roots.root);
    let domain = domain_from_args(&fs, &parsed)?;
    let settings = Settings::for_domain(&domain, process::may_raise_memlock());
    if settings.is_empty() {
        return Ok(());
    }
    let name = parsed.name.as_deref().unwrap_or_default();
    if let Err((step, errno)) = settings.raw().apply() {
        return Err(Error::Refused(format!(
            "VM '{name}': {}",
            settings.describe(step, errno)
        )));
    }
    let mut done = Vec::new();
    if let Some(p) = &settings.mempolicy {
        done.push(format!("memory policy {p}"));
    }
    if let Some(l) = &settings.memlock {
        done.push(if l.soft == libc::RLIM_INFINITY {
            "RLIMIT_MEMLOCK unlimited".to_string()
        } else {
            format!("RLIMIT_MEMLOCK {} KiB (its hard limit)", l.soft / 1024)
        });
    }
    log::info(&format!(
        "VM '{name}': QEMU starts with {}",
        done.join(", ")
    ));
    Ok(())
}

/// The real QEMU: the policy's, else `/usr/bin/` + the name we run as. Never kvmtune itself.
fn real_qemu(policy: &Policy, argv0: &str) -> Result<PathBuf> {
    let path = match &policy.emulator_qemu {
        Some(p) => p.clone(),
        None => {
            let name = Path::new(argv0)
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| n.starts_with("qemu-system-"))
                .unwrap_or("qemu-system-x86_64");
            Path::new("/usr/bin").join(name)
        }
    };
    let real = std::fs::canonicalize(&path).map_err(|e| {
        Error::Config(format!(
            "the real QEMU {} (emulator.qemu) cannot be found: {e}",
            path.display()
        ))
    })?;
    let me = std::env::current_exe().and_then(std::fs::canonicalize).ok();
    if me.as_deref() == Some(real.as_path()) {
        return Err(Error::Config(format!(
            "emulator.qemu names {}, which is kvmtune itself; set it to the real QEMU",
            path.display()
        )));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_select_emulator_mode() {
        for name in [
            "kvmtune-qemu",
            "/usr/libexec/kvmtune/qemu-system-x86_64",
            "qemu-system-aarch64",
        ] {
            assert!(is_emulator_name(name), "{name}");
        }
        for name in ["kvmtune", "/etc/libvirt/hooks/qemu", "qemu", "qemu-img"] {
            assert!(!is_emulator_name(name), "{name}");
        }
    }

    #[test]
    fn probes_and_queries_are_not_launches() {
        let probe: Vec<String> = "-S -no-user-config -nodefaults -nographic -machine none,accel=kvm:tcg -qmp unix:/x,server=on,wait=off -pidfile /p -daemonize"
            .split(' ')
            .map(String::from)
            .collect();
        assert!(!is_launch(&probe));
        assert!(!is_launch(&["-version".to_string()]));
        assert!(is_launch(&[
            "-name".to_string(),
            "guest=vm,debug-threads=on".to_string()
        ]));
    }

    #[test]
    fn auto_takes_the_name_we_run_as_and_a_policy_path_wins() {
        let auto = Policy::default();
        // Not kvmtune: /usr/bin/qemu-system-x86_64 on this machine, or an error naming it.
        match real_qemu(&auto, "/usr/libexec/kvmtune/qemu-system-x86_64") {
            Ok(p) => assert_eq!(p, Path::new("/usr/bin/qemu-system-x86_64")),
            Err(e) => assert!(e.to_string().contains("/usr/bin/qemu-system-x86_64"), "{e}"),
        }
        let own = Policy {
            emulator_qemu: Some(std::env::current_exe().unwrap()),
            ..Policy::default()
        };
        let err = real_qemu(&own, "kvmtune-qemu").unwrap_err();
        assert!(err.to_string().contains("kvmtune itself"), "{err}");
    }
}
