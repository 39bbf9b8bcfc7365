//! The QEMU of an isolating VM started by `kvmtune run` on the kernel-modelling fake root: it
//! sits in the root cgroup (not in libvirt's), so only its PID in the ledger keeps the sweeps of
//! host tasks from confining it to the housekeeping CPUs, with cgroup v1 and cgroup v2.

mod common;

use common::cgroupfs::{Layout, TaskModel, V1_MOUNT, V2_MOUNT};
use common::{diff, kernel, Bench, GIB};
use kvmtune::cpulist::CpuSet;

const QEMU: u32 = 400;

fn host(layout: Layout) -> Bench {
    Bench::new(kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")]).with_cgroups(layout))
}

/// A QEMU that kvmtune run started after prepare: in the root cgroup, on the CPU it isolates.
fn start_qemu(b: &Bench, layout: Layout) {
    let root = match layout {
        Layout::V1 => V1_MOUNT,
        _ => V2_MOUNT,
    };
    b.kernel.cgroups(|c| {
        c.tasks.insert(
            QEMU,
            TaskModel {
                comm: "qemu-system-x86".into(),
                flags: 0x400100,
                mask: CpuSet::from_ids([3]),
                cgroup: root.to_string(),
            },
        )
    });
}

const VM: &str = "<domain><name>run1</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
    <metadata><k:tune xmlns:k='urn:kvmtune:1'><k:isolate cpus='3'/></k:tune></metadata></domain>";

/// Record QEMU's PID in the VM's hold, as `kvmtune run` does between fork and exec.
fn record_pid(b: &Bench, pid: u32) {
    let state = b.state();
    let mut ledger = state.load_ledger().unwrap();
    ledger.vms.get_mut("run1").unwrap().pid = Some(pid);
    state.save_ledger(&ledger).unwrap();
}

fn check(layout: Layout) {
    let b = host(layout);
    b.prepare("run1", VM).unwrap();
    start_qemu(&b, layout);
    record_pid(&b, QEMU);
    let root = b.kernel.cgroups(|c| c.tasks[&QEMU].cgroup.clone());
    b.started("run1").unwrap();
    b.kernel.cgroups(|c| {
        assert_eq!(c.tasks[&QEMU].cgroup, root, "{layout:?}: QEMU was moved");
        assert_eq!(c.allowed(QEMU), CpuSet::from_ids([3]), "{layout:?}");
        assert_eq!(
            c.allowed(100),
            CpuSet::parse("0-2").unwrap(),
            "{layout:?}: sshd confined"
        );
    });
    b.release("run1").unwrap();
    assert_eq!(b.state_files(), Vec::<String>::new());
}

#[test]
fn a_recorded_qemu_stays_on_its_isolated_cpu_with_cgroup_v1() {
    check(Layout::V1);
}

#[test]
fn a_recorded_qemu_stays_on_its_isolated_cpu_with_cgroup_v2() {
    check(Layout::V2);
}

#[test]
fn an_unrecorded_process_in_the_root_cgroup_is_confined_and_all_is_restored() {
    let b = host(Layout::V1);
    let start = b.snapshot();
    b.prepare("run1", VM).unwrap();
    start_qemu(&b, Layout::V1);
    b.started("run1").unwrap();
    b.kernel.cgroups(|c| {
        assert_eq!(c.tasks[&QEMU].cgroup, format!("{V1_MOUNT}/kvmtune"));
        assert_eq!(
            c.allowed(QEMU),
            CpuSet::parse("0-2").unwrap(),
            "without its PID in the ledger a QEMU is a host task"
        );
    });
    b.release("run1").unwrap();
    b.kernel.cgroups(|c| c.tasks.remove(&QEMU));
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
}
