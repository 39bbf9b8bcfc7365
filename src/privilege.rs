//! Who this process is and whether it may change the host, decided once where kvmtune starts
//! (`cli::main`, hook mode, the emulator) and passed down; nothing below asks the kernel again.
//!
//! Not root: libvirt's session daemon runs the hook as its user, and the hook does nothing;
//! the commands that change the host refuse. Root without the capabilities kvmtune needs (a
//! container, a daemon started with a reduced bounding set): writes would fail one by one
//! halfway through, so the first change refuses instead, in one line. The uid is also whose
//! state directory and policy are trusted (see `StateDir::open`, `Policy::load`).
//!
//! Tests do not depend on who runs them: they construct a `Privilege` for the library, and the
//! binary takes one from `KVMTUNE_PRIVILEGE` (`Privilege::model`), honoured only with a test
//! root (`--root` other than `/`), so the real host is only ever judged by the real process.

use std::fmt;

use caps::{CapSet, Capability};

use crate::error::{Error, Result};

/// What kvmtune's writes need beyond uid 0:
/// - CAP_SYS_NICE: setting the CPU affinity of threads of other users (QEMU's, whose pinned
///   masks kvmtune puts back) and of kernel threads;
/// - CAP_DAC_OVERRIDE: cgroup files delegated to other users (systemd's user slices), and
///   kernel files whose mode does not grant root write access by ownership alone.
pub const NEEDED: [Capability; 2] = [Capability::CAP_SYS_NICE, Capability::CAP_DAC_OVERRIDE];

/// The environment variable that models the privilege for a test root.
pub const MODEL_VAR: &str = "KVMTUNE_PRIVILEGE";

/// This process: its effective uid and what it may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privilege {
    /// The effective uid. State files must be owned by it; the policy by it or by root.
    pub uid: u32,
    pub access: Access,
}

/// Whether kvmtune may change the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Not root: nothing is changed (the hook exits 0, other commands refuse).
    User,
    /// Root with every capability of `NEEDED`.
    Root,
    /// Root without these capabilities of `NEEDED`.
    RootWithout(Vec<Capability>),
    /// Root, but the capabilities could not be read (why).
    RootUnknown(String),
}

impl Privilege {
    /// The running process, as the kernel sees it.
    pub fn detect() -> Privilege {
        let uid = nix::unistd::geteuid().as_raw();
        let effective = if uid == 0 {
            Some(caps::read(None, CapSet::Effective).map_err(|e| e.to_string()))
        } else {
            None
        };
        Privilege::of(uid, effective)
    }

    /// The decision itself: `effective` is the effective capability set (read only for root).
    pub fn of(uid: u32, effective: Option<Result<caps::CapsHashSet, String>>) -> Privilege {
        let access = match (uid, effective) {
            (0, Some(Ok(set))) => match missing_from(&set) {
                missing if missing.is_empty() => Access::Root,
                missing => Access::RootWithout(missing),
            },
            (0, Some(Err(why))) => Access::RootUnknown(why),
            (0, None) => Access::RootUnknown("not read".into()),
            _ => Access::User,
        };
        Privilege { uid, access }
    }

    /// Root with everything kvmtune needs, as uid `uid` (tests of the library).
    pub fn root_as(uid: u32) -> Privilege {
        Privilege {
            uid,
            access: Access::Root,
        }
    }

    /// A modelled privilege (`KVMTUNE_PRIVILEGE`), for a test root: `root`, `user` or
    /// `root-without=CAP_A,CAP_B`, optionally followed by ` uid=N` (default `uid`, the real one).
    pub fn model(text: &str, uid: u32) -> Result<Privilege, String> {
        let expected = "expected root, user or root-without=CAP,… and optionally uid=N";
        let mut words = text.split_whitespace();
        let access = match words.next() {
            Some("root") => Access::Root,
            Some("user") => Access::User,
            Some(w) if w.starts_with("root-without=") => {
                let list = &w["root-without=".len()..];
                let caps = list
                    .split(',')
                    .map(|c| {
                        c.parse::<Capability>()
                            .map_err(|_| format!("{MODEL_VAR} '{text}': '{c}' is not a capability"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Access::RootWithout(caps)
            }
            _ => return Err(format!("{MODEL_VAR} '{text}': {expected}")),
        };
        let mut privilege = Privilege { uid, access };
        for word in words {
            match word.strip_prefix("uid=").map(str::parse::<u32>) {
                Some(Ok(n)) => privilege.uid = n,
                _ => return Err(format!("{MODEL_VAR} '{text}': {expected}")),
            }
        }
        Ok(privilege)
    }

    /// Root, whatever its capabilities.
    pub fn is_root(&self) -> bool {
        !matches!(self.access, Access::User)
    }

    /// `Ok` when kvmtune may make changes: root with every capability of `NEEDED`.
    pub fn may_change(&self) -> Result<()> {
        match &self.access {
            Access::Root => Ok(()),
            Access::User => Err(Error::Refused(format!(
                "runs as uid {}, not root: changing the host needs root. Nothing was changed.",
                self.uid
            ))),
            Access::RootWithout(missing) => {
                let names: Vec<String> = missing.iter().map(|c| c.to_string()).collect();
                Err(Error::Refused(format!(
                    "runs as root without the capabilities {} that changing the host needs (a reduced capability bounding set?). Nothing was changed.",
                    names.join(", ")
                )))
            }
            Access::RootUnknown(why) => Err(Error::Refused(format!(
                "cannot read this process's capabilities ({why}). Nothing was changed."
            ))),
        }
    }

    /// A command that changes the host refuses to run as another user (exit 2).
    pub fn require_root(&self, what: &str) -> Result<()> {
        if self.is_root() {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "{what} changes the host and must run as root"
            )))
        }
    }
}

impl fmt::Display for Privilege {
    /// The model's syntax: `Privilege::model` reads it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.access {
            Access::User => f.write_str("user")?,
            Access::Root | Access::RootUnknown(_) => f.write_str("root")?,
            Access::RootWithout(missing) => {
                let names: Vec<String> = missing.iter().map(|c| c.to_string()).collect();
                write!(f, "root-without={}", names.join(","))?
            }
        }
        write!(f, " uid={}", self.uid)
    }
}

/// The capabilities of `NEEDED` missing from `effective`.
pub fn missing_from(effective: &caps::CapsHashSet) -> Vec<Capability> {
    NEEDED
        .iter()
        .filter(|c| !effective.contains(c))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(caps: &[Capability]) -> Option<Result<caps::CapsHashSet, String>> {
        Some(Ok(caps.iter().copied().collect()))
    }

    #[test]
    fn missing_capabilities_are_named() {
        let mut set = caps::CapsHashSet::new();
        set.insert(Capability::CAP_SYS_NICE);
        assert_eq!(missing_from(&set), vec![Capability::CAP_DAC_OVERRIDE]);
        set.insert(Capability::CAP_DAC_OVERRIDE);
        assert!(missing_from(&set).is_empty());
    }

    #[test]
    fn uid_0_with_both_capabilities_may_change_the_host() {
        let p = Privilege::of(0, set(&NEEDED));
        assert_eq!(p.access, Access::Root);
        assert!(p.is_root());
        p.may_change().unwrap();
        p.require_root("recover").unwrap();
    }

    #[test]
    fn uid_0_without_a_capability_is_root_but_refuses_to_change_naming_it() {
        let p = Privilege::of(0, set(&[Capability::CAP_SYS_NICE]));
        assert!(p.is_root());
        let err = p.may_change().unwrap_err();
        assert!(err.to_string().contains("CAP_DAC_OVERRIDE"), "{err}");
        assert_eq!(err.exit_code(), 1);
        let p = Privilege::of(0, Some(Err("EPERM".into())));
        assert!(p.may_change().unwrap_err().to_string().contains("EPERM"));
    }

    #[test]
    fn another_uid_is_a_user_whatever_its_capabilities() {
        let p = Privilege::of(1000, set(&NEEDED));
        assert_eq!(
            p,
            Privilege {
                uid: 1000,
                access: Access::User
            }
        );
        assert!(!p.is_root());
        assert!(p.may_change().is_err());
        assert_eq!(p.require_root("recover").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn detect_agrees_with_the_kernel_for_whoever_runs_the_tests() {
        let p = Privilege::detect();
        let euid = nix::unistd::geteuid();
        assert_eq!(p.uid, euid.as_raw());
        assert_eq!(p.is_root(), euid.is_root());
    }

    #[test]
    fn models_are_read_and_printed_back() {
        for (text, want) in [
            ("root", Privilege::root_as(7)),
            (
                "user",
                Privilege {
                    uid: 7,
                    access: Access::User,
                },
            ),
            (
                "root-without=CAP_SYS_NICE,CAP_DAC_OVERRIDE uid=0",
                Privilege {
                    uid: 0,
                    access: Access::RootWithout(NEEDED.to_vec()),
                },
            ),
            ("  root   uid=65534 ", Privilege::root_as(65534)),
        ] {
            let p = Privilege::model(text, 7).unwrap();
            assert_eq!(p, want, "{text}");
            assert_eq!(Privilege::model(&p.to_string(), 1).unwrap(), p);
        }
        for bad in [
            "",
            "admin",
            "root uid=x",
            "root-without=CAP_NONSENSE",
            "user extra",
        ] {
            let err = Privilege::model(bad, 7).unwrap_err();
            assert!(err.contains(MODEL_VAR), "{bad}: {err}");
        }
    }
}
