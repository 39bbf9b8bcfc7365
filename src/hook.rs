//! libvirt's QEMU hook: `NAME OP SUBOP EXTRA`, the domain XML on stdin.
//! Which operations act, which may fail the start, which always exit 0.

use std::io::{Read, Write};

use crate::apply::{self, Base, Context};
use crate::domain::xml::MAX_XML_BYTES;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::log;
use crate::policy::Policy;

/// What libvirt asked, taken by position only (a domain may be called `--help`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCall {
    pub vm: String,
    pub op: String,
    pub subop: String,
    /// `-`, or since libvirt 10.5 the shutoff reason for `release`.
    pub extra: String,
}

impl HookCall {
    pub fn from_args(args: &[String]) -> Result<HookCall> {
        match args {
            [vm, op, subop, rest @ ..] if rest.len() <= 1 => Ok(HookCall {
                vm: vm.clone(),
                op: op.clone(),
                subop: subop.clone(),
                extra: rest.first().cloned().unwrap_or_else(|| "-".into()),
            }),
            _ => Err(Error::Usage(format!(
                "hook takes NAME OP SUBOP [EXTRA], got {} argument(s)",
                args.len()
            ))),
        }
    }

    /// Operations whose failure aborts the VM start; for every other one libvirt ignores the
    /// exit status or (for `reconnect`) kills the running VM, so those always exit 0.
    pub fn may_fail(&self) -> bool {
        // `migrate` fails only when a VM asked to be remapped and nothing fits (see
        // `migrate_begin`); libvirt then refuses the incoming migration.
        matches!(
            self.op.as_str(),
            "prepare" | "start" | "started" | "migrate"
        )
    }
}

/// What the hook's operations work with, built only when an operation needs it (most need
/// nothing). `cli` gives the real host; tests give the kernel-modelling fake.
pub trait Env {
    /// The host policy, read now.
    fn policy(&self) -> Result<Policy>;
    /// Run `f` with the host's ports, the state directory (opened and checked) and the
    /// privilege.
    fn with_base(&self, f: &mut dyn FnMut(&Base) -> Result<()>) -> Result<()>;
}

/// Run one hook call. `stdout` is written only by `migrate begin`, with a rewritten domain XML.
pub fn run(
    call: &HookCall,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    env: &dyn Env,
) -> Result<()> {
    match (call.op.as_str(), call.subop.as_str()) {
        ("prepare", "begin") => {
            let xml = read_xml(stdin)?;
            let domain =
                Domain::parse(&xml).map_err(|e| Error::Domain(format!("VM '{}': {e}", call.vm)))?;
            let policy = env.policy()?;
            env.with_base(&mut |base| {
                let ctx = Context {
                    base: *base,
                    policy: &policy,
                    kvmtune_run: false,
                };
                let plan = apply::prepare(&ctx, &call.vm, &domain)?;
                for g in plan.hugepages.iter().filter(|g| g.grow > 0) {
                    log::info(&format!(
                        "VM '{}': {} grown by {} page(s) for it",
                        call.vm, g.pool, g.grow
                    ));
                }
                Ok(())
            })
        }
        ("started", "begin") | ("reconnect", "begin") => {
            drain(stdin);
            let policy = env.policy()?;
            env.with_base(&mut |base| {
                apply::started(
                    &Context {
                        base: *base,
                        policy: &policy,
                        kvmtune_run: false,
                    },
                    &call.vm,
                )
            })
        }
        ("release", "end") => {
            drain(stdin);
            // SPEC: release works from the journal and the ledger only. A policy broken while
            // the VM ran is said (the next prepare fails on it), and the VM's holdings go back
            // all the same.
            if let Err(e) = env.policy() {
                log::warn(&format!(
                    "{e} (VM '{}' is released from the ledger all the same)",
                    call.vm
                ));
            }
            env.with_base(&mut |base| apply::release(base, &call.vm))
        }
        ("migrate", "begin") => migrate_begin(call, stdin, stdout, env),
        _ => {
            // start, stopped, restore, attach, and operations of future libvirt versions:
            // nothing to do. restore reads our stdout as a replacement XML: nothing is printed.
            drain(stdin);
            Ok(())
        }
    }
}

/// `migrate begin` on the destination: a VM with `<kvmtune:migrate remap="on"/>` gets its pins
/// and node sets fitted to this host, printed as the whole rewritten XML. Anything else prints
/// nothing (libvirt keeps its XML) and exits 0: only a remap that was asked for and cannot be
/// done refuses the migration.
fn migrate_begin(
    call: &HookCall,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    env: &dyn Env,
) -> Result<()> {
    use crate::advisor::remap;
    let parsed = read_xml(stdin).and_then(|xml| {
        let (domain, design) = Domain::parse_with_design(&xml)?;
        Ok((xml, remap::wanted(&domain, &design)))
    });
    let xml = match parsed {
        Ok((xml, true)) => xml,
        Ok((_, false)) => return Ok(()),
        Err(e) => {
            log::warn(&format!("migrate of VM '{}': not remapped: {e}", call.vm));
            return Ok(());
        }
    };
    let policy = env.policy()?;
    env.with_base(&mut |base| {
        let held = base.state.load_ledger()?.isolated_except(&call.vm);
        if let Some(new) = remap::for_host(&call.vm, &xml, base.fs, &policy, &held)? {
            stdout
                .write_all(new.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| Error::io("write the remapped domain XML to", "stdout", e))?;
            log::info(&format!(
                "VM '{}': pins and node sets remapped for this host",
                call.vm
            ));
        }
        Ok(())
    })
}

/// Read the domain XML from stdin, refusing absurd sizes before they are held in memory.
fn read_xml(stdin: &mut dyn Read) -> Result<String> {
    let mut buf = Vec::new();
    stdin
        .take(MAX_XML_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read domain XML from", "stdin", e))?;
    if buf.len() > MAX_XML_BYTES {
        return Err(Error::Domain(format!(
            "domain XML on stdin is larger than {MAX_XML_BYTES} bytes"
        )));
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Domain("no domain XML on stdin".into()));
    }
    String::from_utf8(buf).map_err(|_| Error::Domain("domain XML on stdin is not UTF-8".into()))
}

/// Read and discard stdin, so libvirt's writer never meets a closed pipe.
fn drain(stdin: &mut dyn Read) {
    let _ = std::io::copy(stdin, &mut std::io::sink());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_are_positional_even_when_they_look_like_flags() {
        let call = HookCall::from_args(&args(&["--help", "prepare", "begin", "-"])).unwrap();
        assert_eq!(call.vm, "--help");
        assert_eq!(call.op, "prepare");
    }

    #[test]
    fn release_reason_is_accepted_and_extra_is_optional() {
        let call = HookCall::from_args(&args(&["db1", "release", "end", "destroyed"])).unwrap();
        assert_eq!(call.extra, "destroyed");
        let call = HookCall::from_args(&args(&["db1", "release", "end"])).unwrap();
        assert_eq!(call.extra, "-");
    }

    #[test]
    fn too_few_or_many_arguments_are_usage_errors() {
        assert_eq!(
            HookCall::from_args(&args(&["db1", "prepare"]))
                .unwrap_err()
                .exit_code(),
            2
        );
        assert!(HookCall::from_args(&args(&["a", "b", "c", "d", "e"])).is_err());
    }

    #[test]
    fn only_start_path_operations_may_fail() {
        for (op, fails) in [
            ("prepare", true),
            ("started", true),
            ("migrate", true),
            ("release", false),
            ("reconnect", false),
            ("stopped", false),
        ] {
            let call = HookCall::from_args(&args(&["vm", op, "begin"])).unwrap();
            assert_eq!(call.may_fail(), fails, "{op}");
        }
    }

    /// An environment that must never be asked for anything.
    struct Never;

    impl Env for Never {
        fn policy(&self) -> Result<Policy> {
            panic!("policy read")
        }
        fn with_base(&self, _: &mut dyn FnMut(&Base) -> Result<()>) -> Result<()> {
            panic!("context built")
        }
    }

    #[test]
    fn operations_with_nothing_to_do_never_build_a_context() {
        for op in [
            "start",
            "stopped",
            "migrate",
            "restore",
            "attach",
            "future-op",
        ] {
            let call = HookCall::from_args(&args(&["vm", op, "begin", "-"])).unwrap();
            let mut out = Vec::new();
            run(&call, &mut "<domain/>".as_bytes(), &mut out, &Never).unwrap();
            assert!(out.is_empty(), "{op} printed something");
        }
    }

    #[test]
    fn prepare_without_xml_is_a_clear_error() {
        let call = HookCall::from_args(&args(&["vm", "prepare", "begin", "-"])).unwrap();
        let err = run(&call, &mut "".as_bytes(), &mut Vec::new(), &Never).unwrap_err();
        assert!(err.to_string().contains("no domain XML"), "{err}");
    }
}
