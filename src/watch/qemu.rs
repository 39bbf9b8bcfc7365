//! Which processes run each VM's QEMU, remembered between looks: finding them means reading the
//! command line of every process of the host, so the watcher does it once per VM and then only
//! checks that the processes it found still name the VM (one read each).

use std::collections::HashMap;

use crate::host::process::{names_vm_at, processes_naming};
use crate::host::HostFs;

#[derive(Debug, Default)]
pub struct QemuPids(HashMap<String, Vec<u32>>);

impl QemuPids {
    /// The processes whose command line names `vm` (empty: none runs).
    pub fn of(&mut self, fs: &dyn HostFs, vm: &str) -> Vec<u32> {
        if let Some(pids) = self.0.get(vm) {
            let alive: Vec<u32> = pids
                .iter()
                .copied()
                .filter(|pid| names_vm_at(fs, *pid, vm))
                .collect();
            if !alive.is_empty() {
                self.0.insert(vm.to_string(), alive.clone());
                return alive;
            }
        }
        let found = processes_naming(fs, vm);
        if found.is_empty() {
            self.0.remove(vm);
        } else {
            self.0.insert(vm.to_string(), found.clone());
        }
        found
    }

    /// Forget VMs `keep` does not name (released since).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.0.retain(|vm, _| keep(vm));
    }
}
