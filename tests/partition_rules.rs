//! The fake kernel's isolated cpuset partitions, checked directly against the rules of
//! Documentation/admin-guide/cgroup-v2.rst: what the writes refuse, how an invalid partition
//! reads back, and where the CPUs of a valid one go.

mod common;

use common::cgroupfs::{Layout, TaskModel, PF_KTHREAD, V2_MOUNT};
use common::partition::{NOT_PARTITION, NO_CPUS};
use common::{kernel, FakeKernel, GIB};
use kvmtune::cpulist::CpuSet;
use kvmtune::host::HostFs;

/// Four CPUs, cgroup v2 without systemd, cpuset enabled below the root, partitions offered.
fn host() -> FakeKernel {
    let k = kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")])
        .with_cgroups(Layout::V2)
        .with_partitions();
    k.write(&format!("{V2_MOUNT}/cgroup.subtree_control"), "+cpuset")
        .unwrap();
    k
}

fn read(k: &FakeKernel, rel: &str) -> String {
    k.read(&format!("{V2_MOUNT}/{rel}"))
        .unwrap()
        .trim()
        .to_string()
}

fn write(k: &FakeKernel, rel: &str, value: &str) -> kvmtune::error::Result<()> {
    k.write(&format!("{V2_MOUNT}/{rel}"), value)
}

fn errno(result: kvmtune::error::Result<()>) -> Option<i32> {
    match result {
        Err(kvmtune::error::Error::Io { source, .. }) => source.raw_os_error(),
        _ => None,
    }
}

fn mkdir(k: &FakeKernel, rel: &str) {
    k.create_dir(&format!("{V2_MOUNT}/{rel}")).unwrap();
}

#[test]
fn a_top_level_isolated_partition_takes_its_cpus_from_every_other_cgroup() {
    let k = host();
    mkdir(&k, "part");
    write(&k, "part/cpuset.cpus", "3").unwrap();
    write(&k, "part/cpuset.cpus.exclusive", "3").unwrap();
    write(&k, "part/cpuset.cpus.partition", "isolated").unwrap();

    assert_eq!(read(&k, "part/cpuset.cpus.partition"), "isolated");
    assert_eq!(read(&k, "part/cpuset.cpus.effective"), "3");
    assert_eq!(read(&k, "part/cpuset.cpus.exclusive.effective"), "3");
    assert_eq!(read(&k, "cpuset.cpus.isolated"), "3");
    assert_eq!(read(&k, "cpuset.cpus.effective"), "0-2");
    assert_eq!(read(&k, "machine.slice/cpuset.cpus.effective"), "0-2");
    // sshd (a process of the root cgroup) leaves CPU 3 without being moved.
    k.cgroups(|c| assert_eq!(c.allowed(100), CpuSet::parse("0-2").unwrap()));
}

#[test]
fn per_cpu_kernel_threads_keep_their_cpu_and_unbound_ones_lose_the_partitions() {
    let k = host();
    mkdir(&k, "part");
    write(&k, "part/cpuset.cpus.exclusive", "3").unwrap();
    write(&k, "part/cpuset.cpus.partition", "isolated").unwrap();
    assert_eq!(read(&k, "part/cpuset.cpus.partition"), "isolated");
    k.cgroups(|c| {
        // kworker/last:0 (pid 5) is bound to CPU 3; kswapd0 (pid 4) is unbound.
        assert_eq!(c.allowed(5), CpuSet::parse("3").unwrap());
        assert_eq!(c.allowed(4), CpuSet::parse("0-2").unwrap());
        // The unbound workqueues are not the cpuset's business (before 6.8).
        assert_eq!(c.workqueue, CpuSet::parse("0-3").unwrap());
    });
}

/// As Debian 13's 6.12 did (a partition of 2-3 made and made a member again, no kvmtune): the
/// root's kernel threads get 0-1, and when it goes every CPU, within a taskset pin only, not
/// within the kernel's own binding (irq/9-acpi on CPU 1).
#[test]
fn kernel_threads_get_every_cpu_back_within_a_taskset_pin_not_within_the_kernels_binding() {
    let k = host();
    k.cgroups(|c| {
        c.set_affinity(4, &CpuSet::parse("3").unwrap()).unwrap(); // taskset -p -c 3
        let irq_thread = TaskModel {
            comm: "irq/9-acpi".into(),
            flags: PF_KTHREAD | 0x40,
            mask: CpuSet::parse("1").unwrap(), // bound by the kernel
            cgroup: V2_MOUNT.into(),
        };
        c.tasks.insert(62, irq_thread);
    });
    mkdir(&k, "part");
    write(&k, "part/cpuset.cpus.exclusive", "2-3").unwrap();
    write(&k, "part/cpuset.cpus.partition", "isolated").unwrap();
    k.cgroups(|c| {
        assert_eq!(c.allowed(4), CpuSet::parse("0-1").unwrap());
        assert_eq!(c.allowed(62), CpuSet::parse("0-1").unwrap());
    });

    write(&k, "part/cpuset.cpus.partition", "member").unwrap();

    k.cgroups(|c| {
        assert_eq!(c.allowed(4), CpuSet::parse("3").unwrap());
        assert_eq!(c.allowed(62), CpuSet::parse("0-3").unwrap());
    });
}

#[test]
fn member_again_gives_the_cpus_back() {
    let k = host();
    mkdir(&k, "part");
    write(&k, "part/cpuset.cpus.exclusive", "3").unwrap();
    write(&k, "part/cpuset.cpus.partition", "isolated").unwrap();
    write(&k, "part/cpuset.cpus.partition", "member").unwrap();
    assert_eq!(read(&k, "part/cpuset.cpus.partition"), "member");
    assert_eq!(read(&k, "cpuset.cpus.isolated"), "");
    assert_eq!(read(&k, "cpuset.cpus.effective"), "0-3");
}

#[test]
fn exclusive_cpus_outside_the_parents_are_refused() {
    let k = host();
    mkdir(&k, "machine.slice/vm");
    write(&k, "machine.slice/cgroup.subtree_control", "+cpuset").unwrap();
    write(&k, "machine.slice/cpuset.cpus.exclusive", "2").unwrap();
    let refused = write(&k, "machine.slice/vm/cpuset.cpus.exclusive", "3");
    assert_eq!(errno(refused), Some(libc::EINVAL));
    assert_eq!(read(&k, "machine.slice/vm/cpuset.cpus.exclusive"), "");
}

#[test]
fn exclusive_cpus_a_sibling_holds_are_refused() {
    let k = host();
    mkdir(&k, "a");
    mkdir(&k, "b");
    write(&k, "a/cpuset.cpus.exclusive", "2-3").unwrap();
    let refused = write(&k, "b/cpuset.cpus.exclusive", "3");
    assert_eq!(errno(refused), Some(libc::EINVAL));
    write(&k, "b/cpuset.cpus.exclusive", "1").unwrap();
    assert_eq!(read(&k, "b/cpuset.cpus.exclusive"), "1");
}

#[test]
fn a_remote_partition_without_exclusive_cpus_up_the_path_reads_back_invalid() {
    let k = host();
    mkdir(&k, "machine.slice/vm");
    write(&k, "machine.slice/cgroup.subtree_control", "+cpuset").unwrap();
    write(&k, "machine.slice/vm/cpuset.cpus", "3").unwrap();
    write(&k, "machine.slice/vm/cpuset.cpus.partition", "isolated").unwrap();
    assert_eq!(
        read(&k, "machine.slice/vm/cpuset.cpus.partition"),
        format!("isolated invalid ({NOT_PARTITION})")
    );
    assert_eq!(read(&k, "cpuset.cpus.isolated"), "");
    assert_eq!(read(&k, "cpuset.cpus.effective"), "0-3");
}

#[test]
fn a_remote_partition_is_valid_once_every_ancestor_lists_its_cpus_as_exclusive() {
    let k = host();
    mkdir(&k, "machine.slice/vm");
    write(&k, "machine.slice/cgroup.subtree_control", "+cpuset").unwrap();
    write(&k, "machine.slice/cpuset.cpus.exclusive", "3").unwrap();
    write(&k, "machine.slice/vm/cpuset.cpus.exclusive", "3").unwrap();
    write(&k, "machine.slice/vm/cpuset.cpus.partition", "isolated").unwrap();
    assert_eq!(
        read(&k, "machine.slice/vm/cpuset.cpus.partition"),
        "isolated"
    );
    assert_eq!(read(&k, "machine.slice/vm/cpuset.cpus.effective"), "3");
    assert_eq!(read(&k, "machine.slice/cpuset.cpus.effective"), "0-2");
    assert_eq!(read(&k, "cpuset.cpus.isolated"), "3");
}

#[test]
fn emptying_an_ancestors_exclusive_cpus_invalidates_the_partition_below() {
    let k = host();
    mkdir(&k, "machine.slice/vm");
    write(&k, "machine.slice/cgroup.subtree_control", "+cpuset").unwrap();
    write(&k, "machine.slice/cpuset.cpus.exclusive", "3").unwrap();
    write(&k, "machine.slice/vm/cpuset.cpus.exclusive", "3").unwrap();
    write(&k, "machine.slice/vm/cpuset.cpus.partition", "isolated").unwrap();
    write(&k, "machine.slice/cpuset.cpus.exclusive", "").unwrap();
    assert!(read(&k, "machine.slice/vm/cpuset.cpus.partition").starts_with("isolated invalid ("));
    assert_eq!(read(&k, "cpuset.cpus.isolated"), "");
}

#[test]
fn a_partition_that_would_take_every_cpu_reads_back_invalid() {
    let k = host();
    // machine.slice's own CPUs (0-3) would be all taken: the list is refused while it has them.
    mkdir(&k, "part");
    let err = write(&k, "part/cpuset.cpus.exclusive", "0-3").unwrap_err();
    assert!(err.to_string().contains("Invalid argument"), "{err}");
    write(&k, "machine.slice/cpuset.cpus", "").unwrap();
    write(&k, "part/cpuset.cpus.exclusive", "0-3").unwrap();
    write(&k, "part/cpuset.cpus.partition", "isolated").unwrap();
    assert_eq!(
        read(&k, "part/cpuset.cpus.partition"),
        format!("isolated invalid ({NO_CPUS})")
    );
    assert_eq!(read(&k, "cpuset.cpus.effective"), "0-3");
}

#[test]
fn an_unknown_partition_word_is_refused() {
    let k = host();
    mkdir(&k, "part");
    let refused = write(&k, "part/cpuset.cpus.partition", "exclusive");
    assert_eq!(errno(refused), Some(libc::EINVAL));
    assert_eq!(read(&k, "part/cpuset.cpus.partition"), "member");
}

#[test]
fn a_kernel_without_partitions_has_no_partition_files() {
    let k = kernel(&[(4 * GIB, "0-3")]).with_cgroups(Layout::V2);
    k.write(&format!("{V2_MOUNT}/cgroup.subtree_control"), "+cpuset")
        .unwrap();
    assert!(!k.exists(&format!("{V2_MOUNT}/cpuset.cpus.isolated")));
    assert!(!k.exists(&format!("{V2_MOUNT}/machine.slice/cpuset.cpus.partition")));
    assert!(k.exists(&format!("{V2_MOUNT}/machine.slice/cpuset.cpus")));
}

#[test]
fn removing_a_partition_gives_its_cpus_back() {
    let k = host();
    mkdir(&k, "part");
    write(&k, "part/cpuset.cpus.exclusive", "3").unwrap();
    write(&k, "part/cpuset.cpus.partition", "isolated").unwrap();
    k.remove_dir(&format!("{V2_MOUNT}/part")).unwrap();
    assert_eq!(read(&k, "cpuset.cpus.isolated"), "");
    assert_eq!(read(&k, "cpuset.cpus.effective"), "0-3");
}

#[test]
fn an_exclusive_list_may_not_take_every_cpu_of_a_siblings_own_list() {
    let k = host();
    mkdir(&k, "emulator");
    mkdir(&k, "vcpu0");
    write(&k, "emulator/cpuset.cpus", "3").unwrap();
    let err = write(&k, "vcpu0/cpuset.cpus.exclusive", "3").unwrap_err();
    assert!(err.to_string().contains("Invalid argument"), "{err}");
    write(&k, "emulator/cpuset.cpus", "2-3").unwrap();
    write(&k, "vcpu0/cpuset.cpus.exclusive", "3").unwrap();
}
