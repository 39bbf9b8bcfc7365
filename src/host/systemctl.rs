//! systemd units' runtime properties through `systemctl`, behind a trait so tests record calls.
//! Runtime properties (`--runtime`) live in /run: they survive `daemon-reload` (direct writes
//! to a unit's cgroup files do not) and are gone after a reboot, like the rest of our state.

use std::process::Command;

use crate::error::{Error, Result};

pub trait Systemctl {
    /// The unit's current value of `property` (`systemctl show -p P --value UNIT`).
    fn property(&self, unit: &str, property: &str) -> Result<String>;
    /// `systemctl set-property --runtime -- UNIT P=VALUE`.
    fn set_property(&self, unit: &str, property: &str, value: &str) -> Result<()>;
    /// `systemctl daemon-reload`: systemd reads the units' files and drop-ins again.
    fn daemon_reload(&self) -> Result<()>;
}

/// The runtime drop-in `systemctl set-property --runtime UNIT PROPERTY=…` writes (systemd
/// 246 and later), relative to the root: under `system.control/` for units with a unit file
/// (`system.slice`, `user.slice`), under `transient/` for transient units, which on systemd 257
/// includes the perpetual `init.scope` (seen on Debian 13).
pub fn runtime_drop_in(systemctl: &dyn Systemctl, unit: &str, property: &str) -> Result<String> {
    let dir = if systemctl.property(unit, "Transient")? == "yes" {
        "transient"
    } else {
        "system.control"
    };
    Ok(format!("run/systemd/{dir}/{unit}.d/50-{property}.conf"))
}

/// The real `systemctl` from PATH.
pub struct SystemctlCommand;

impl Systemctl for SystemctlCommand {
    fn property(&self, unit: &str, property: &str) -> Result<String> {
        let out = run(&["show", "-p", property, "--value", "--", unit])?;
        Ok(out.trim().to_string())
    }

    fn set_property(&self, unit: &str, property: &str, value: &str) -> Result<()> {
        run(&[
            "set-property",
            "--runtime",
            "--",
            unit,
            &format!("{property}={value}"),
        ])
        .map(drop)
    }

    fn daemon_reload(&self) -> Result<()> {
        run(&["daemon-reload"]).map(drop)
    }
}

fn run(args: &[&str]) -> Result<String> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| Error::io("run", "systemctl", e))?;
    if !out.status.success() {
        return Err(Error::Subprocess {
            command: format!("systemctl {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', " "),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
