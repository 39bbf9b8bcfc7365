//! `Change`: one edit of the host, as data. The plan produces them, the journal records them
//! before they are made, and undo/redo replay them. Each knows how to be made, undone and
//! named; `apply::effects` carries them out.

use serde::{Deserialize, Serialize};

use crate::cpulist::CpuSet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// Set a kernel file (path relative to the root) from `before` to `after`.
    File {
        path: String,
        before: String,
        after: String,
    },
    /// Create a cgroup directory and write its settings in order (a v1 cpuset needs `mems`
    /// before it can take a task). Undone by moving its processes back to `parent` and
    /// removing it.
    CreateCgroup {
        path: String,
        parent: String,
        settings: Vec<(String, String)>,
    },
    /// Move the processes of a cgroup kvmtune created back to `parent`, and remove it.
    RemoveCgroup { path: String, parent: String },
    /// Move the host's processes from cgroup `from` into `to`, except kernel threads, the
    /// virtualization daemons and the VM processes in `keep`. Nothing to undo on its own:
    /// undoing the `CreateCgroup` of `to` moves everything back.
    MoveProcesses {
        from: String,
        to: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keep: Vec<u32>,
    },
    /// Enable (or disable) a controller for a cgroup's children (`cgroup.subtree_control`).
    Controller {
        cgroup: String,
        controller: String,
        enable: bool,
    },
    /// A systemd unit's runtime property (`systemctl set-property --runtime`).
    UnitProperty {
        unit: String,
        property: String,
        before: String,
        after: String,
        /// The runtime drop-in systemd keeps the property in, when the change creates it or its
        /// undo removes it (see `DropIn`).
        #[serde(default, skip_serializing_if = "DropIn::is_kept")]
        drop_in: DropIn,
    },
    /// The CPUs irqbalance is banned from (told through its socket).
    IrqBalance { before: CpuSet, after: CpuSet },
    /// A task's CPU affinity; `comm` guards against a reused PID.
    Affinity {
        pid: u32,
        comm: String,
        before: CpuSet,
        after: CpuSet,
    },
}

/// What becomes of the runtime drop-in (`/run/systemd/system.control/UNIT.d/50-PROP.conf`)
/// that `systemctl set-property --runtime` writes. Setting the property back leaves the file in
/// place (holding the old value, or an empty one), so a unit kvmtune found without one gets
/// its drop-in removed, and systemd reloaded, when the change is undone: /run/systemd is then
/// exactly as before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropIn {
    /// The drop-in existed before (an operator's runtime property): it stays.
    #[default]
    Kept,
    /// The change creates this drop-in (path relative to the root).
    Creates(String),
    /// After setting the value, remove this drop-in and reload systemd.
    Removes(String),
}

impl DropIn {
    pub fn is_kept(&self) -> bool {
        *self == DropIn::Kept
    }

    /// The same file seen from the other direction (what the undo does with it).
    fn reversed(self) -> DropIn {
        match self {
            DropIn::Kept => DropIn::Kept,
            DropIn::Creates(path) => DropIn::Removes(path),
            DropIn::Removes(path) => DropIn::Creates(path),
        }
    }
}

impl Change {
    /// What this change is about, the same for every change of one thing: used to keep only
    /// the first value kvmtune found (the one to restore).
    pub fn target(&self) -> Option<String> {
        Some(match self {
            Change::File { path, .. } => format!("file {path}"),
            Change::CreateCgroup { path, .. } | Change::RemoveCgroup { path, .. } => {
                format!("cgroup {path}")
            }
            Change::MoveProcesses { .. } => return None,
            Change::Controller {
                cgroup, controller, ..
            } => format!("controller {cgroup} {controller}"),
            Change::UnitProperty { unit, property, .. } => format!("unit {unit} {property}"),
            Change::Affinity { pid, comm, .. } => format!("task {pid} {comm}"),
            Change::IrqBalance { .. } => "irqbalance banned CPUs".to_string(),
        })
    }

    /// The change that takes the host from `self`'s result back to its state before, with
    /// `now` as the value found now (for value changes). `None`: nothing to give back.
    pub fn restore(&self) -> Option<Change> {
        Some(match self.clone() {
            Change::File {
                path,
                before,
                after,
            } => Change::File {
                path,
                before: after,
                after: before,
            },
            Change::CreateCgroup { path, parent, .. } => Change::RemoveCgroup { path, parent },
            Change::RemoveCgroup { .. } | Change::MoveProcesses { .. } => return None,
            Change::Controller {
                cgroup,
                controller,
                enable,
            } => Change::Controller {
                cgroup,
                controller,
                enable: !enable,
            },
            Change::UnitProperty {
                unit,
                property,
                before,
                after,
                drop_in,
            } => Change::UnitProperty {
                unit,
                property,
                before: after,
                after: before,
                drop_in: drop_in.reversed(),
            },
            Change::Affinity {
                pid,
                comm,
                before,
                after,
            } => Change::Affinity {
                pid,
                comm,
                before: after,
                after: before,
            },
            Change::IrqBalance { before, after } => Change::IrqBalance {
                before: after,
                after: before,
            },
        })
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::File {
                path,
                before,
                after,
            } => {
                write!(f, "/{path}: {} -> {}", show(before), show(after))
            }
            Change::CreateCgroup { path, settings, .. } => {
                write!(f, "create cgroup /{path}")?;
                for (name, value) in settings {
                    write!(f, ", {name} = {value}")?;
                }
                Ok(())
            }
            Change::RemoveCgroup { path, parent } => {
                write!(f, "move processes of /{path} back to /{parent}, remove it")
            }
            Change::MoveProcesses { from, to, .. } => {
                write!(f, "move host processes from /{from} to /{to}")
            }
            Change::Controller {
                cgroup,
                controller,
                enable,
            } => write!(
                f,
                "{} {controller} for the children of /{cgroup}",
                if *enable { "enable" } else { "disable" }
            ),
            Change::UnitProperty {
                unit,
                property,
                before,
                after,
                drop_in,
            } => {
                write!(f, "{unit} {property}: {} -> {}", show(before), show(after))?;
                match drop_in {
                    DropIn::Kept => Ok(()),
                    DropIn::Creates(path) => write!(f, " (creates /{path})"),
                    DropIn::Removes(path) => write!(f, " (removes /{path}, reloads systemd)"),
                }
            }
            Change::Affinity {
                pid,
                comm,
                before,
                after,
            } => write!(f, "task {pid} ({comm}) CPUs {before} -> {after}"),
            Change::IrqBalance { before, after } => write!(
                f,
                "irqbalance banned CPUs: {} -> {}",
                show(&before.to_string()),
                show(&after.to_string())
            ),
        }
    }
}

fn show(value: &str) -> &str {
    if value.is_empty() {
        "(empty)"
    } else {
        value
    }
}
