//! Where every entry gets what it works with: the roots (`--root`, `--state-dir`, `--config`:
//! flags over environment over defaults), the privilege (decided once, `Roots::privilege`, the
//! only caller of `Privilege::detect`), the policy, the state directory and the host's ports,
//! assembled into the owners of an `apply::Base` (`BaseOwner`, no policy: `release` and
//! `recover`) or an `apply::Context` (`ContextOwner`). Used by `cli`, `launch` and `watch`.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::apply::{Base, Context};
use crate::error::{Error, Result};
use crate::host::irqbalance::IrqbalanceSocket;
use crate::host::systemctl::SystemctlCommand;
use crate::host::tasks::SchedAffinity;
use crate::host::RootFs;
use crate::policy::Policy;
use crate::privilege::{Privilege, MODEL_VAR};
use crate::state::StateDir;

#[derive(Debug, Clone, Args)]
pub struct Roots {
    /// Resolve every path under /sys, /proc, /dev and /run/systemd under DIR (for tests).
    #[arg(
        long,
        global = true,
        env = "KVMTUNE_ROOT",
        default_value = "/",
        value_name = "DIR"
    )]
    pub root: PathBuf,
    /// Journals, ledger and lock.
    #[arg(
        long,
        global = true,
        env = "KVMTUNE_STATE_DIR",
        default_value = "/run/kvmtune",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,
    /// Host policy; a missing file means the built-in defaults.
    #[arg(
        long,
        global = true,
        env = "KVMTUNE_CONFIG",
        default_value = "/etc/kvmtune/kvmtune.toml",
        value_name = "FILE"
    )]
    pub config: PathBuf,
}

impl Roots {
    /// Environment over defaults (for hook mode, where there are no flags).
    pub fn from_env() -> Roots {
        let var = |name: &str, default: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        Roots {
            root: var("KVMTUNE_ROOT", "/"),
            state_dir: var("KVMTUNE_STATE_DIR", "/run/kvmtune"),
            config: var("KVMTUNE_CONFIG", "/etc/kvmtune/kvmtune.toml"),
        }
    }

    /// Who this process is, decided once for the whole run: the kernel's answer, or with a
    /// test root (`--root` other than `/`) the model in `KVMTUNE_PRIVILEGE`, if set.
    pub fn privilege(&self) -> Result<Privilege> {
        let real = Privilege::detect();
        let Some(model) = std::env::var_os(MODEL_VAR).filter(|v| !v.is_empty()) else {
            return Ok(real);
        };
        if self.root == Path::new("/") {
            return Err(Error::Usage(format!(
                "{MODEL_VAR} models the privilege for a test root only (KVMTUNE_ROOT or --root other than /)"
            )));
        }
        Privilege::model(&model.to_string_lossy(), real.uid).map_err(Error::Usage)
    }

    /// The host policy, trusted as `privilege` trusts it.
    pub fn policy(&self, privilege: &Privilege) -> Result<Policy> {
        Policy::load(&self.config, privilege)
    }

    /// The policy (read first: a broken one is a configuration error before anything else),
    /// the host's ports and the state directory, for the operations that read the policy.
    pub fn context(&self, privilege: &Privilege) -> Result<ContextOwner> {
        let policy = self.policy(privilege)?;
        let BaseOwner {
            fs,
            irqbalance,
            state,
            privilege,
        } = self.base(privilege)?;
        Ok(ContextOwner {
            fs,
            irqbalance,
            state,
            privilege,
            policy,
        })
    }

    /// The host's ports and the state directory, opened for changes: what `release` and
    /// `recover` work with (no policy).
    pub fn base(&self, privilege: &Privilege) -> Result<BaseOwner> {
        Ok(BaseOwner {
            state: StateDir::open(&self.state_dir, privilege)?,
            fs: RootFs::new(&self.root),
            irqbalance: IrqbalanceSocket::new(&self.root),
            privilege: privilege.clone(),
        })
    }
}

/// The ports of the host under `--root`: its files, systemctl, sched_setaffinity, irqbalance.
fn real_host<'a>(
    fs: &'a RootFs,
    irqbalance: &'a IrqbalanceSocket,
    state: &'a StateDir,
    privilege: &'a Privilege,
) -> Base<'a> {
    Base {
        fs,
        systemctl: &SystemctlCommand,
        affinity: &SchedAffinity,
        irqbalance,
        state,
        privilege,
    }
}

/// Owns what a `Base` borrows on the host under `--root`.
pub struct BaseOwner {
    pub fs: RootFs,
    pub irqbalance: IrqbalanceSocket,
    pub state: StateDir,
    pub privilege: Privilege,
}

impl BaseOwner {
    pub fn base(&self) -> Base<'_> {
        real_host(&self.fs, &self.irqbalance, &self.state, &self.privilege)
    }
}

/// Owns what a `Context` borrows: a `BaseOwner` and the policy (for the operations and daemons
/// that read it; `release` and `recover` take a `BaseOwner` alone).
pub struct ContextOwner {
    pub fs: RootFs,
    pub irqbalance: IrqbalanceSocket,
    pub state: StateDir,
    pub privilege: Privilege,
    pub policy: Policy,
}

impl ContextOwner {
    pub fn context(&self) -> Context<'_> {
        Context {
            base: self.base(),
            policy: &self.policy,
            kvmtune_run: false,
        }
    }

    pub fn base(&self) -> Base<'_> {
        real_host(&self.fs, &self.irqbalance, &self.state, &self.privilege)
    }
}
