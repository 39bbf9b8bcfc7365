//! Hook mode: libvirt's call (`NAME OP SUBOP [EXTRA]`, the domain XML on stdin) by argv[0] or
//! by `kvmtune [ROOT FLAGS] hook …`, parsed by position; the exit status libvirt acts on, a
//! panic included; one line on stderr, the detail in syslog.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::apply::Base;
use crate::assemble::Roots;
use crate::error::Result;
use crate::hook::{self, HookCall};
use crate::log;
use crate::policy::Policy;
use crate::privilege::Privilege;

/// Hook mode when argv[0] is called `qemu`, or lies in a directory called `qemu.d`.
pub(super) fn is_hook_name(argv0: &str) -> bool {
    let path = Path::new(argv0);
    path.file_name().is_some_and(|n| n == "qemu")
        || path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "qemu.d")
}

pub(super) fn hook_mode(args: &[String], roots: &Roots) -> i32 {
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
pub(super) fn split_hook_args(args: &[String]) -> Option<(Roots, Vec<String>)> {
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
