//! Carrying out a `Change` on the host, or its undo. Files go through `HostFs`; systemd and
//! task affinity through their traits, so tests can hand in fakes.

use crate::change::{Change, DropIn};
use crate::cpulist::CpuSet;
use crate::error::Result;
use crate::host::irqbalance::IrqBalancer;
use crate::host::knobs::KSM_MERGE_ACROSS_NODES;
use crate::host::systemctl::Systemctl;
use crate::host::tasks::{read_stat, Known, TaskAffinity, PF_KTHREAD, UNCONFINED_DAEMONS};
use crate::host::HostFs;
use crate::isolation::partition::{self, PARTITION_FILE};
use crate::log;

fn is_irq_file(change: &Change) -> bool {
    matches!(change, Change::File { path, .. } if path.starts_with("proc/irq/"))
}

/// Whether writing `value` to the cgroup file `path`, which could not be opened, is done
/// already: its cgroup no longer exists, or `value` is the default of a cpuset file whose
/// controller the cgroup lost (systemd takes cpuset from machine.slice once no VM needs it,
/// often between the release hook's read and its write). A cgroup without the controller
/// has none of its state; given the controller back it starts from the defaults.
///
/// An exclusive list is done whatever its value: a cgroup without the controller reserves no
/// CPUs, and the partitions that need one (a VM's, at `started`, once systemd has given
/// machine.slice the controller back for its scope) write it again; one that did not happen
/// fails their read-back. Seen in the model: VM b prepared, not started, while a stops; a's
/// release narrows machine.slice's list to b's CPUs just as systemd takes the controller.
fn cgroup_file_gone(fs: &dyn HostFs, path: &str, value: &str) -> bool {
    let Some((dir, file)) = path
        .strip_prefix("sys/fs/cgroup/")
        .and_then(|_| path.rsplit_once('/'))
    else {
        return false;
    };
    if !fs.exists(dir) {
        return true;
    }
    if file == "cpuset.cpus.exclusive" {
        return !fs.exists(path);
    }
    let default = match file {
        "cpuset.cpus" | "cpuset.mems" => "",
        "cpuset.cpus.partition" => "member",
        _ => return false,
    };
    !fs.exists(path) && value.trim() == default
}

/// Passes over a cgroup's processes before giving up on one that keeps forking.
const MAX_PASSES: usize = 50;

/// Everything a change may need to touch.
pub struct Effects<'a> {
    pub fs: &'a dyn HostFs,
    pub systemctl: &'a dyn Systemctl,
    pub affinity: &'a dyn TaskAffinity,
    pub irqbalance: &'a dyn IrqBalancer,
    /// Processes the caller has just read (a large host's root cgroup holds thousands of
    /// kernel threads: moving processes need not read each again). Others are read.
    pub known: Option<&'a Known>,
    /// A runtime drop-in was removed and systemd has not re-read its units yet: one
    /// `daemon-reload` for the whole batch (`finish`), not one per unit (each costs seconds
    /// on a busy host, and libvirt waits for the hook).
    pub reload_pending: std::cell::Cell<bool>,
}

impl<'a> Effects<'a> {
    /// Effects through these ports, with nothing read yet and nothing pending.
    pub fn new(
        fs: &'a dyn HostFs,
        systemctl: &'a dyn Systemctl,
        affinity: &'a dyn TaskAffinity,
        irqbalance: &'a dyn IrqBalancer,
    ) -> Self {
        Effects {
            fs,
            systemctl,
            affinity,
            irqbalance,
            known: None,
            reload_pending: std::cell::Cell::new(false),
        }
    }

    /// End a batch of changes: reload systemd if a change left that for the end.
    pub fn finish(&self) -> Result<()> {
        if self.reload_pending.replace(false) {
            self.systemctl.daemon_reload()?;
        }
        Ok(())
    }
}

impl Drop for Effects<'_> {
    /// A batch cut short by an error still gets its reload, so systemd never keeps listing a
    /// drop-in that is gone (a failure here is logged: the error that ended the batch wins).
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            log::error(&format!("systemctl daemon-reload failed: {e}"));
        }
    }
}

impl Effects<'_> {
    /// Write `value` to `path`. A partition that reads invalid is made a member first: the
    /// kernel (6.12) does not make an invalid remote partition valid again when its mode is
    /// written again, and keeps its CPUs until it is a member (`partition::set_mode`).
    fn write_file(&self, path: &str, value: &str) -> Result<()> {
        if path.ends_with(&format!("/{PARTITION_FILE}")) && value.trim() != "member" {
            if let Ok(state) = self.fs.read(path) {
                if partition::is_invalid(&state) {
                    self.fs.write(path, "member")?;
                }
            }
        }
        self.fs.write(path, value)
    }

    /// Make the change.
    pub fn apply(&self, change: &Change) -> Result<()> {
        match change {
            Change::File { path, after, .. } if path == KSM_MERGE_ACROSS_NODES => {
                super::knobs::write_merge_across_nodes(self.fs, after)
            }
            Change::File { path, after, .. } => match self.write_file(path, after) {
                // An IRQ that went away (a VFIO vector freed with its VM): nothing to set.
                Err(e) if path.starts_with("proc/irq/") && !self.fs.exists(path) => {
                    log::info(&format!("/{path} is gone ({e})"));
                    Ok(())
                }
                // A cgroup that went with its VM (libvirt removes a VM's vCPU cgroups before
                // the release hook), or its cpuset controller with machine.slice's last VM:
                // nothing to give back there.
                Err(e) if cgroup_file_gone(self.fs, path, after) => {
                    log::info(&format!("/{path} went with its cgroup or controller ({e})"));
                    Ok(())
                }
                other => other,
            },
            Change::IrqBalance { after, .. } => self.irqbalance.set_banned(after),
            Change::CreateCgroup { path, settings, .. } => {
                if !self.fs.exists(path) {
                    self.fs.create_dir(path)?;
                }
                for (name, value) in settings {
                    self.fs.write(&format!("{path}/{name}"), value)?;
                }
                Ok(())
            }
            Change::RemoveCgroup { path, parent } => self.remove_cgroup(path, parent),
            Change::MoveProcesses { from, to, keep } => {
                self.move_processes(from, to, keep);
                Ok(())
            }
            Change::Controller {
                cgroup,
                controller,
                enable,
            } => {
                let sign = if *enable { '+' } else { '-' };
                self.fs.write(
                    &format!("{cgroup}/cgroup.subtree_control"),
                    &format!("{sign}{controller}"),
                )
            }
            Change::UnitProperty {
                unit,
                property,
                after,
                drop_in,
                ..
            } => {
                self.set_unit_property(unit, property, after)?;
                match drop_in {
                    DropIn::Removes(path) => self.remove_drop_in(path),
                    DropIn::Kept | DropIn::Creates(_) => Ok(()),
                }
            }
            Change::Affinity {
                pid, comm, after, ..
            } => self.set_affinity(*pid, comm, after),
        }
    }

    /// Undo the change (for an interrupted or failed prepare).
    pub fn undo(&self, change: &Change) -> Result<()> {
        let Some(back) = change.restore() else {
            return Ok(());
        };
        match self.apply(&back) {
            // A managed IRQ refuses every write: the change never happened, nothing to undo.
            Err(e)
                if is_irq_file(change)
                    && matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EPERM)) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    fn remove_cgroup(&self, path: &str, parent: &str) -> Result<()> {
        // Processes fork while we move them; a child born in the cgroup after our read of
        // cgroup.procs keeps it busy (EBUSY): drain and retry a bounded number of times.
        let mut attempt = 0;
        loop {
            if !self.fs.exists(path) {
                return Ok(());
            }
            self.move_all(path, parent);
            match self.fs.remove_dir(path) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < MAX_PASSES => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Move every process of `from` to `to` (giving back: nothing is excluded), pass after
    /// pass until `from` is empty or stops shrinking.
    fn move_all(&self, from: &str, to: &str) {
        for _ in 0..MAX_PASSES {
            let procs = self
                .fs
                .read(&format!("{from}/cgroup.procs"))
                .unwrap_or_default();
            let pids: Vec<&str> = procs
                .lines()
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // A process may exit meanwhile (ESRCH): nothing to give back then.
                let _ = self.fs.write(&format!("{to}/cgroup.procs"), pid);
            }
        }
    }

    /// Move host processes of `from` into `to`: not kernel threads (their cgroup cannot change
    /// or they are not ours to move), not the virtualization daemons, not ourselves, not the
    /// VM processes in `keep`. Passes repeat until one finds nothing new: processes fork while
    /// they are being moved.
    fn move_processes(&self, from: &str, to: &str, keep: &[u32]) {
        let me = std::process::id();
        let mut seen = std::collections::BTreeSet::new();
        let mut moved = 0;
        let mut failed = 0;
        for _ in 0..MAX_PASSES {
            let procs = self
                .fs
                .read(&format!("{from}/cgroup.procs"))
                .unwrap_or_default();
            let fresh: Vec<u32> = procs
                .lines()
                .filter_map(|p| p.trim().parse::<u32>().ok())
                .filter(|pid| seen.insert(*pid))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for pid in fresh {
                let seen = self.known.and_then(|k| k.get(&pid).cloned());
                let Some((comm, flags)) = seen.or_else(|| read_stat(self.fs, pid)) else {
                    continue;
                };
                if pid == me
                    || keep.contains(&pid)
                    || flags & PF_KTHREAD != 0
                    || UNCONFINED_DAEMONS.contains(&comm.as_str())
                {
                    continue;
                }
                match self
                    .fs
                    .write(&format!("{to}/cgroup.procs"), &pid.to_string())
                {
                    Ok(()) => moved += 1,
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => {
                        failed += 1;
                        if failed == 1 {
                            log::warn(&format!("cannot move pid {pid} ({comm}): {e}"));
                        }
                    }
                }
            }
        }
        log::info(&format!(
            "moved {moved} host processes from /{from} to /{to}{}",
            if failed > 0 {
                format!(", {failed} refused")
            } else {
                String::new()
            }
        ));
    }

    fn set_unit_property(&self, unit: &str, property: &str, value: &str) -> Result<()> {
        if value.is_empty() {
            // An empty AllowedCPUs removes the limit from the unit's settings but may leave
            // the live cpuset as it was: widen it to every online CPU first, then clear it.
            let online = self.fs.read("sys/devices/system/cpu/online")?;
            self.systemctl.set_property(unit, property, online.trim())?;
        }
        self.systemctl.set_property(unit, property, value)
    }

    /// Remove a runtime drop-in systemd wrote for kvmtune, and its unit's `UNIT.d` directory if
    /// that is left empty (never systemd's own `system.control` or `transient`); systemd is
    /// reloaded at the end of the batch (`finish`), so that the unit no longer lists it. A
    /// drop-in already gone (a release redone after a crash) needs only the reload.
    fn remove_drop_in(&self, path: &str) -> Result<()> {
        if self.fs.exists(path) {
            self.fs.remove_file(path)?;
        }
        if let Some((unit_dir, _)) = path.rsplit_once('/') {
            if unit_dir.ends_with(".d")
                && self.fs.exists(unit_dir)
                && self.fs.list(unit_dir)?.is_empty()
            {
                // Another drop-in may appear meanwhile (systemctl from elsewhere): then it stays.
                let _ = self.fs.remove_dir(unit_dir);
            }
        }
        self.reload_pending.set(true);
        Ok(())
    }

    fn set_affinity(&self, pid: u32, comm: &str, cpus: &CpuSet) -> Result<()> {
        match read_stat(self.fs, pid) {
            Some((now, _)) if now == comm => match self.affinity.set_affinity(pid, cpus) {
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
                other => other,
            },
            // Gone, or the PID now belongs to another task: nothing of ours to set.
            _ => Ok(()),
        }
    }
}
