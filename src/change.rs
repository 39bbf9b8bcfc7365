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
            } => Change::UnitProperty {
                unit,
                property,
                before: after,
                after: before,
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
            } => write!(f, "{unit} {property}: {} -> {}", show(before), show(after)),
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
