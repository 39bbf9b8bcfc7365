//! libvirt's cgroups for a running VM on a systemd host with cgroup v2, as a real libvirt 11
//! makes them (FIELD-NOTES: Debian 13): `machine.slice/machine-qemu\x2dN\x2dNAME.scope/libvirt`
//! with `emulator` (QEMU's process) and one `vcpuN` per vCPU, whose `cpuset.cpus` is the
//! vCPU's pin and which holds that vCPU's thread. The cpuset controller is enabled down the
//! path. When the VM stops, libvirt and systemd remove the scope before the `release` hook.

use kvmtune::cpulist::CpuSet;

use super::cgroupfs::{CgroupModel, Errno, Layout, TaskModel, V2_MOUNT};

/// The scope systemd-machined makes for VM `name` (libvirt's first VM since its start).
pub fn scope(name: &str) -> String {
    format!("{V2_MOUNT}/machine.slice/machine-qemu\\x2d1\\x2d{name}.scope")
}

/// The thread of vCPU `n` of the QEMU `pid` (threads are tasks of the model).
pub fn vcpu_tid(pid: u32, n: usize) -> u32 {
    10_000 + pid * 10 + n as u32
}

impl CgroupModel {
    /// libvirt starts VM `name`: its QEMU `pid` (named after it) in `…/libvirt/emulator`, one
    /// vCPU thread per entry of `pins` in `…/libvirt/vcpuN`, pinned there.
    pub fn libvirt_starts(&mut self, name: &str, pid: u32, pins: &[&str]) {
        assert_eq!(
            self.layout,
            Layout::Systemd,
            "libvirt's v2 layout under systemd"
        );
        let scope = scope(name);
        let libvirt = format!("{scope}/libvirt");
        let machine = format!("{V2_MOUNT}/machine.slice");
        for dir in [&scope, &libvirt] {
            self.cgroups.insert(dir.to_string(), Default::default());
        }
        // systemd enables cpuset down to the scope it delegates to libvirt, the root's too.
        for dir in [V2_MOUNT, &machine, &scope, &libvirt] {
            self.cgroups
                .get_mut(dir)
                .unwrap()
                .subtree
                .insert("cpuset".into());
        }
        let online = self.online.clone();
        let task = |comm: String, mask: CpuSet, cgroup: String| TaskModel {
            comm,
            flags: 0x400040,
            mask,
            cgroup,
        };
        self.cgroups
            .insert(format!("{libvirt}/emulator"), Default::default());
        self.tasks.insert(
            pid,
            task(
                "qemu-system-x86".into(),
                online,
                format!("{libvirt}/emulator"),
            ),
        );
        self.cmdlines.insert(
            pid,
            format!("/usr/bin/qemu-system-x86_64\0-name\0guest={name},debug-threads=on\0-S\0"),
        );
        for (n, pin) in pins.iter().enumerate() {
            self.libvirt_plugs_vcpu(pid, n, pin);
        }
    }

    /// The VM whose QEMU is `pid` stops: its threads end, libvirt and systemd remove its cgroups
    /// (children first). systemd realizes the tree again soon after (at the next write to the
    /// fake kernel, or `systemd_realizes`): the release hook may read machine.slice's cpuset
    /// files and find them gone when it writes, as on Debian 13.
    pub fn libvirt_stops(&mut self, pid: u32) {
        let emulator = &self.tasks[&pid].cgroup;
        let scope = emulator
            .strip_suffix("/libvirt/emulator")
            .expect("a QEMU libvirt started")
            .to_string();
        self.tasks
            .retain(|_, t| !t.cgroup.starts_with(&format!("{scope}/")));
        self.cmdlines.remove(&pid);
        let mut dirs: Vec<String> = self
            .cgroups
            .keys()
            .filter(|k| **k == scope || k.starts_with(&format!("{scope}/")))
            .cloned()
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
        for dir in dirs {
            self.remove(&dir).unwrap().unwrap();
        }
        self.systemd_realizes_soon = true;
    }

    /// systemd realizes the cgroup tree again: a cgroup keeps the cpuset controller for its
    /// children only while one of them needs it (a VM's scope, which systemd delegates to
    /// libvirt; a unit with AllowedCPUs), removed bottom up. On Debian 13 no unit needs it
    /// while no VM runs: the root's `cgroup.subtree_control` reads `memory pids`, and
    /// machine.slice has no cpuset files. kvmtune's own cgroups are no units: systemd takes
    /// the controller from them too.
    pub fn systemd_realizes(&mut self) {
        self.following_partitions(Self::realize);
    }

    fn realize(&mut self) {
        self.systemd_realizes_soon = false;
        if !self.systemd_owns_cpuset {
            return;
        }
        let machine = format!("{V2_MOUNT}/machine.slice");
        let vms = self.cgroups.contains_key(&machine) && !self.children(&machine).is_empty();
        if vms {
            return;
        }
        if self.cgroups.contains_key(&machine) {
            self.disable_controller(&machine, "cpuset").unwrap();
        }
        if self.units.values().any(|cpus| !cpus.is_empty()) {
            return;
        }
        for child in self.children(V2_MOUNT) {
            if self.cgroups[&child].subtree.contains("cpuset") {
                self.disable_controller(&child, "cpuset").unwrap();
            }
        }
        self.disable_controller(V2_MOUNT, "cpuset").unwrap();
    }
}

impl CgroupModel {
    /// libvirt plugs vCPU `n` into the running QEMU `pid` (`virsh setvcpus --live`), pinned to
    /// `pin`: a new `vcpuN` cgroup beside the others, holding the new thread.
    pub fn libvirt_plugs_vcpu(&mut self, pid: u32, n: usize, pin: &str) {
        let emulator = self.tasks[&pid].cgroup.clone();
        let libvirt = emulator.strip_suffix("/emulator").unwrap().to_string();
        let pin = CpuSet::parse(pin).unwrap();
        let dir = format!("{libvirt}/vcpu{n}");
        self.cgroups.insert(
            dir.clone(),
            super::cgroupfs::Cgroup {
                cpus: pin.clone(),
                ..Default::default()
            },
        );
        self.tasks.insert(
            vcpu_tid(pid, n),
            TaskModel {
                comm: format!("CPU {n}/KVM"),
                flags: 0x400040,
                mask: pin,
                cgroup: dir,
            },
        );
    }

    /// `virsh emulatorpin --live` (`group` = "emulator") or `vcpupin --live` ("vcpuN") on the
    /// running QEMU `pid`: libvirt writes the cgroup's `cpuset.cpus`, then sets the affinity of
    /// each thread there. A refusal (EINVAL: the CPUs are another partition's) fails the
    /// command, and libvirt 11.3 leaves the list it wrote (seen on Debian 13).
    pub fn libvirt_pins_live(&mut self, pid: u32, group: &str, pin: &str) -> Result<(), Errno> {
        let emulator = self.tasks[&pid].cgroup.clone();
        let dir = format!("{}/{group}", emulator.strip_suffix("/emulator").unwrap());
        self.write(&format!("{dir}/cpuset.cpus"), pin).unwrap()?;
        let cpus = CpuSet::parse(pin).unwrap();
        let threads: Vec<u32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.cgroup == dir)
            .map(|(tid, _)| *tid)
            .collect();
        for tid in threads {
            self.set_affinity(tid, &cpus)?;
        }
        Ok(())
    }
}
