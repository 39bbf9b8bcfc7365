//! Crash safety across a whole VM: hugepages, CPU isolation and a passthrough device's IRQs,
//! beside another VM that keeps running. kvmtune is killed at every point where it changes
//! something (each kernel write, mkdir, rmdir, affinity and irqbalance call, and each write of
//! a journal or the ledger, including between a temp file and its rename) of `prepare`,
//! `started`, `release` and a `reconnect` that repairs drift; then the next hook call or
//! `kvmtune recover` runs, and the host must be exactly as before the VM (or as the completed
//! operation leaves it), the ledger must hold only the other VM, and no state file may be left.

mod common;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use common::cgroupfs::Layout;
use common::{bound, diff, huge_vm, kernel, Bench, GIB};
use kvmtune::state::holds::Method;
use kvmtune::state::Ledger;

type Snapshot = BTreeMap<PathBuf, Vec<u8>>;

/// The hosts every test runs on: the three cgroup layouts with libvirt's VMs (isolated by
/// confining host tasks), cgroup v2 with isolated partitions with VMs `kvmtune run` starts
/// (kvmtune's partition), and systemd on cgroup v2 with isolated partitions with libvirt's VMs
/// (a partition per vCPU in libvirt's cgroups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    V1,
    V2,
    Systemd,
    Partition,
    LibvirtPartition,
}

const HOSTS: [Host; 5] = [
    Host::V1,
    Host::V2,
    Host::Systemd,
    Host::Partition,
    Host::LibvirtPartition,
];

/// Two nodes (CPUs 0-1 and 2-3), cgroup v1 or v2, IRQs with a passthrough device; KSM runs,
/// isolated VMs stop it and hold a sysctl, VMs that ask get THP `never` (host knobs).
fn host(kind: Host) -> Bench {
    let layout = match kind {
        Host::V1 => Layout::V1,
        Host::V2 | Host::Partition => Layout::V2,
        Host::Systemd | Host::LibvirtPartition => Layout::Systemd,
    };
    let kernel = kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")])
        .with_cgroups(layout)
        .with_irqs();
    let b = match kind {
        Host::Partition => Bench::new(kernel.with_partitions()).under_kvmtune_run(),
        Host::LibvirtPartition => Bench::new(kernel.with_partitions().with_cpuset_unused()),
        _ => Bench::new(kernel),
    }
    .with_policy(
        "[ksm]\nstop_for = [\"isolated\"]\n[sysctl]\nvalues = { \"vm.stat_interval\" = 120 }\n\
         [thp]\nenabled = \"never\"\ndefrag = \"never\"\n",
    );
    b.kernel.knobs(|k| k.ksm().run = 1);
    b
}

/// A hugepage-backed VM on node 1 with its vCPU pinned to `cpu`, isolated; `device` adds the
/// passthrough device 0000:06:00.0 with its IRQs on the vCPU's CPU, and THP set for it.
fn vm_xml(name: &str, mib: u64, cpu: u32, device: bool) -> String {
    let (irq, hostdev) = if device {
        (
            "<k:irq cpus='vcpus'/><k:thp apply='on'/>",
            "<devices><hostdev mode='subsystem' type='pci' managed='yes'><source>\
             <address domain='0x0000' bus='0x06' slot='0x00' function='0x0'/></source></hostdev></devices>",
        )
    } else {
        ("", "")
    };
    huge_vm(
        name,
        mib,
        &format!(
            "{}<cputune><vcpupin vcpu='0' cpuset='{cpu}'/></cputune>\
             <metadata><k:tune xmlns:k='urn:kvmtune:1'><k:isolate cpus='vcpus'/>{irq}</k:tune></metadata>{hostdev}",
            bound("strict", "1")
        ),
    )
}

const BG_PAGES: u64 = 64; // 128 MiB of 2 MiB pages
const VM_PAGES: u64 = 128; // 256 MiB

/// The QEMU of `vm` runs (libvirt names it in its command line) and holds its pages. On a
/// systemd host with partitions, libvirt's cgroups for it are made too, its vCPU pinned to its
/// isolated CPU.
fn qemu_runs(b: &Bench, pid: u32, vm: &str, pages: u64) {
    b.kernel.consume(1, 2048, pages);
    if libvirt_layout(b) {
        let cpu = b.ledger().vms[vm].isolate.to_string();
        b.kernel
            .cgroups(|c| c.libvirt_starts(vm, pid, &[cpu.as_str()]));
        return;
    }
    b.kernel.cgroups(|c| {
        let t = c.tasks[&300].clone();
        c.tasks.insert(pid, t);
        c.cmdlines.insert(
            pid,
            format!("/usr/bin/qemu-system-x86_64\0-name\0guest={vm},debug-threads=on\0"),
        );
    });
}

/// Whether libvirt's own cgroups are modelled (systemd with partitions).
fn libvirt_layout(b: &Bench) -> bool {
    b.kernel
        .cgroups(|c| c.partitions && c.layout == Layout::Systemd)
}

/// That QEMU exits: its pages are free again.
fn qemu_exits(b: &Bench, pid: u32, pages: u64) {
    if libvirt_layout(b) {
        b.kernel.cgroups(|c| c.libvirt_stops(pid));
        b.kernel.give_back(1, 2048, pages);
        return;
    }
    b.kernel.cgroups(|c| {
        c.cmdlines.remove(&pid);
        c.tasks.remove(&pid)
    });
    b.kernel.give_back(1, 2048, pages);
}

/// A host where VM `bg` runs (CPU 1 isolated, 64 pages on node 1).
fn with_background(layout: Host) -> Bench {
    let b = host(layout);
    b.prepare("bg", &vm_xml("bg", 128, 1, false)).unwrap();
    qemu_runs(&b, 400, "bg", BG_PAGES);
    b.started("bg").unwrap();
    // The partition host is isolated with a partition, and only it.
    let method = b.ledger().isolation.unwrap().method;
    assert_eq!(
        method == Method::Partition,
        matches!(layout, Host::Partition | Host::LibvirtPartition),
        "{layout:?}: {method}"
    );
    b
}

/// What must hold after recovery: the tree as `expected`, the ledger as `ledger`, and nothing
/// in the state directory but the ledger (no journal, no temp file of a torn write).
fn assert_recovered(b: &Bench, expected: &Snapshot, ledger: &Ledger, what: &str) {
    assert_eq!(
        diff(expected, &b.snapshot()),
        Vec::<String>::new(),
        "{what}"
    );
    assert_eq!(holdings(&b.ledger()), holdings(ledger), "{what}: ledger");
    assert_eq!(
        b.state_files(),
        vec!["ledger.json".to_string()],
        "{what}: state files"
    );
}

/// What the ledger says VMs hold. The isolation baseline is left out: it keeps the first value
/// of everything isolation ever changed while any VM stays isolated, so a VM that came and went
/// leaves an entry whose value is the current one (given back with the last isolated VM).
fn holdings(l: &Ledger) -> String {
    let iso = l
        .isolation
        .as_ref()
        .map(|h| format!("{} on {}", h.method, h.housekeeping));
    format!("{:?} {:?} {:?} {iso:?}", l.vms, l.pools, l.irq)
}

/// Run `op` with a crash at point `n`; it must panic (the crash happened).
fn crash_at(b: &Bench, n: usize, op: impl FnOnce(&Bench) -> kvmtune::error::Result<()>) {
    common::quiet_injected_crashes();
    b.kernel.crash_at_point(Some(n));
    let crashed = catch_unwind(AssertUnwindSafe(|| op(b)));
    b.kernel.crash_at_point(None);
    assert!(crashed.is_err(), "point {n}: no crash injected");
}

/// How many points `op` passes on a bench set up by `setup`.
fn points_of(setup: &dyn Fn() -> Bench, op: &dyn Fn(&Bench)) -> (usize, Vec<String>) {
    let b = setup();
    let from = b.kernel.points();
    op(&b);
    let names = b.kernel.point_names(from);
    (names.len(), names)
}

/// Names of the kinds of points seen (kernel files by their last component), for the report.
fn kinds(names: &[String]) -> Vec<String> {
    let mut k: Vec<String> = names
        .iter()
        .map(|n| {
            if n.starts_with("state: ") {
                n.clone()
            } else {
                n.rsplit('/').next().unwrap_or(n).to_string()
            }
        })
        .collect();
    k.sort();
    k.dedup();
    k
}

/// The point where an operation's first journal is renamed into place: a crash up to it
/// leaves no journal.
fn journaled_at(names: &[String]) -> usize {
    names
        .iter()
        .position(|n| n == "state: rename journal")
        .expect("a journal was written")
}

/// The point where an operation's journal is committed (the rename of the journal that
/// carries the resulting ledger): a crash after it leaves the operation done.
fn committed_at(names: &[String]) -> usize {
    names
        .iter()
        .rposition(|n| n == "state: rename journal")
        .expect("a journal was written")
}

fn prepare_full(b: &Bench) -> kvmtune::error::Result<()> {
    b.prepare("full", &vm_xml("full", 256, 3, true)).map(|_| ())
}

#[test]
fn a_crash_at_any_point_of_prepare_is_undone_by_release_or_recover() {
    let mut tried = 0;
    for layout in HOSTS {
        let setup = || with_background(layout);
        let (total, names) = points_of(&setup, &|b| prepare_full(b).unwrap());
        // A batch of changes is journaled in one write, so there are fewer points than writes.
        assert!(total >= 12, "{layout:?}: only {total} points: {names:?}");
        if layout == Host::Partition {
            assert!(
                names
                    .iter()
                    .any(|n| n.ends_with("kvmtune.isolated/cpuset.cpus.exclusive")),
                "kvmtune's partition widens at prepare: {names:?}"
            );
        }
        for k in [
            "nr_hugepages",
            "state: rename journal",
            "state: save ledger",
        ] {
            assert!(kinds(&names).contains(&k.to_string()), "{k}: {names:?}");
        }
        for n in 0..total {
            // The next call, or recover, at alternate points.
            let next = ["release", "recover"][n % 2];
            {
                let b = setup();
                let (start, ledger) = (b.snapshot(), b.ledger());
                crash_at(&b, n, prepare_full);
                match next {
                    // libvirt saw prepare fail: it calls release of the VM.
                    "release" => b.release("full").unwrap(),
                    // Or libvirtd restarted and `kvmtune recover` ran: it undoes the interrupted
                    // prepare, or releases the VM it completed (no QEMU runs for it).
                    _ => {
                        let released = b.recover_all().unwrap();
                        let done = n > committed_at(&names);
                        assert_eq!(released, if done { vec!["full"] } else { vec![] }, "{n}");
                    }
                }
                let what = format!(
                    "{layout:?} prepare, crash at {n} ({}), then {next}",
                    names[n]
                );
                assert_recovered(&b, &start, &ledger, &what);
                tried += 1;
            }
        }
    }
    eprintln!("prepare: killed at each of {tried} points (V1, V2, systemd, partition, libvirt partition), recovered every time");
}

#[test]
fn a_crash_at_any_point_of_started_is_undone_and_release_restores() {
    let mut tried = 0;
    for layout in HOSTS {
        // With libvirt's cgroups modelled, QEMU runs (in them) before `started`, as under
        // libvirt: the vCPU partitions are made then.
        let libvirt = layout == Host::LibvirtPartition;
        let setup = || {
            let b = with_background(layout);
            prepare_full(&b).unwrap();
            if libvirt {
                qemu_runs(&b, 401, "full", VM_PAGES);
            }
            b
        };
        let (total, names) = points_of(&setup, &|b| b.started("full").unwrap());
        let started = {
            let b = setup();
            b.started("full").unwrap();
            b.snapshot()
        };
        assert!(total >= 10, "{layout:?}: only {total} points: {names:?}");
        assert!(kinds(&names).contains(&"smp_affinity_list".to_string()));
        if layout == Host::LibvirtPartition {
            // libvirt's vCPU cgroups exist from started on: their partitions are made there.
            for k in ["cpuset.cpus.exclusive", "cpuset.cpus.partition"] {
                assert!(kinds(&names).contains(&k.to_string()), "{k}: {names:?}");
            }
        }
        for n in 0..total {
            let next = ["release", "recover"][n % 2];
            {
                let b = with_background(layout);
                let (start, ledger) = (b.snapshot(), b.ledger());
                prepare_full(&b).unwrap();
                if libvirt {
                    qemu_runs(&b, 401, "full", VM_PAGES);
                }
                let prepared = b.snapshot();
                crash_at(&b, n, |b| b.started("full"));
                let what = format!("{layout:?} started, crash at {n} ({})", names[n]);
                if next == "release" {
                    // The interrupted `started` is undone by the next call (or finished, when
                    // the crash came after its journal was committed); libvirt, which saw it
                    // fail, then releases the VM.
                    b.recover_one("none").unwrap();
                    let expected = if n > committed_at(&names) {
                        &started
                    } else {
                        &prepared
                    };
                    assert_eq!(
                        diff(expected, &b.snapshot()),
                        Vec::<String>::new(),
                        "{what}: as prepared, or as started once committed"
                    );
                    if libvirt {
                        qemu_exits(&b, 401, VM_PAGES);
                    }
                    b.release("full").unwrap();
                } else {
                    if libvirt {
                        qemu_exits(&b, 401, VM_PAGES);
                    }
                    assert_eq!(b.recover_all().unwrap(), vec!["full".to_string()]);
                }
                assert_recovered(&b, &start, &ledger, &format!("{what}, then {next}"));
                tried += 1;
            }
        }
    }
    eprintln!("started: killed at each of {tried} points (V1, V2, systemd, partition, libvirt partition), recovered every time");
}

/// `full` prepared, its QEMU running with its pages, `started` done.
fn running(layout: Host) -> (Bench, Snapshot, Ledger) {
    let b = with_background(layout);
    let before = (b.snapshot(), b.ledger());
    prepare_full(&b).unwrap();
    qemu_runs(&b, 401, "full", VM_PAGES);
    b.started("full").unwrap();
    (b, before.0, before.1)
}

#[test]
fn a_crash_at_any_point_of_release_is_finished_by_recover_or_the_next_call() {
    let mut tried = 0;
    for layout in HOSTS {
        let setup = || {
            let (b, _, _) = running(layout);
            qemu_exits(&b, 401, VM_PAGES);
            b
        };
        let (total, names) = points_of(&setup, &|b| b.release("full").unwrap());
        assert!(total >= 10, "{layout:?}: only {total} points: {names:?}");
        for n in 0..total {
            let next = ["recover", "reconnect of bg"][n % 2];
            {
                let (b, start, ledger) = running(layout);
                // The model's snapshot of a host without `full` has no QEMU 401 and its pages
                // back in the pool: the state release must reach.
                qemu_exits(&b, 401, VM_PAGES);
                let held = b.snapshot();
                crash_at(&b, n, |b| b.release("full"));
                let what = format!(
                    "{layout:?} release, crash at {n} ({}), then {next}",
                    names[n]
                );
                match next {
                    "recover" => {
                        b.recover_all().unwrap();
                    }
                    _ => {
                        b.started("bg").unwrap();
                        if n <= journaled_at(&names) {
                            // Killed before its journal existed: nothing was given back, the
                            // host is whole, and only `recover` (no QEMU runs for `full`)
                            // knows the VM is gone; libvirt does not call release twice.
                            // (With partitions, the kernel gave the root's kernel threads the
                            // CPUs of `full`'s vCPU partition when libvirt removed it, and
                            // `bg`'s started confines them to the housekeeping CPUs again.)
                            let changed: Vec<String> = diff(&held, &b.snapshot())
                                .into_iter()
                                .filter(|line| !kernel_thread_confined_again(line))
                                .collect();
                            assert_eq!(changed, Vec::<String>::new(), "{what}");
                            assert_eq!(b.recover_all().unwrap(), vec!["full"], "{what}");
                        }
                    }
                }
                assert_recovered(&b, &start, &ledger, &what);
                // And once more: recover is idempotent.
                assert_eq!(b.recover_all().unwrap(), Vec::<String>::new(), "{what}");
                assert_recovered(&b, &start, &ledger, &format!("{what}, recovered twice"));
                tried += 1;
            }
        }
    }
    eprintln!("release: killed at each of {tried} points (V1, V2, systemd, partition, libvirt partition), recovered every time");
}

/// Someone shrinks `full`'s pool, resets a device IRQ and widens the housekeeping cpuset
/// while libvirtd is down.
fn drift(b: &Bench, layout: Host) {
    b.kernel.admin_set_pool(1, 2048, 0);
    b.kernel
        .irqs(|i| i.irqs.get_mut(&40).unwrap().affinity = i.online.clone());
    let ours = match layout {
        Host::V1 => "sys/fs/cgroup/cpuset/kvmtune",
        Host::V2 => "sys/fs/cgroup/kvmtune.housekeeping",
        // Someone turned a vCPU's partition back into a member.
        Host::LibvirtPartition => {
            b.kernel.cgroups(|c| {
                let vcpu = format!("{}/libvirt/vcpu0", common::libvirt::scope("full"));
                c.cgroups.get_mut(&vcpu).unwrap().partition =
                    common::cgroupfs::PartitionMode::Member;
            });
            return;
        }
        // Someone turned the partition back into a member: its CPUs went back to every cgroup.
        Host::Partition => {
            b.kernel.cgroups(|c| {
                c.cgroups
                    .get_mut("sys/fs/cgroup/kvmtune.isolated")
                    .unwrap()
                    .partition = common::cgroupfs::PartitionMode::Member;
            });
            return;
        }
        // Someone widened a slice with systemctl (a direct write would not outlive a reload).
        Host::Systemd => {
            b.kernel.cgroups(|c| {
                let online = c.online.to_string();
                c.systemctl_set("system.slice", "AllowedCPUs", &online)
                    .unwrap();
            });
            return;
        }
    };
    b.kernel.cgroups(|c| {
        let online = c.online.clone();
        c.cgroups.get_mut(ours).unwrap().cpus = online;
    });
}

/// On systemd the last isolated VM's release also removes the runtime drop-ins and reloads
/// systemd: killed anywhere in it, `recover` leaves /run/systemd and every unit as before.
#[test]
fn a_crash_at_any_point_of_the_last_release_on_systemd_leaves_no_drop_in() {
    let setup = || {
        let b = host(Host::Systemd);
        prepare_full(&b).unwrap();
        qemu_runs(&b, 401, "full", VM_PAGES);
        b.started("full").unwrap();
        qemu_exits(&b, 401, VM_PAGES);
        b
    };
    let start = host(Host::Systemd).snapshot();
    let (_, names) = points_of(&setup, &|b| b.release("full").unwrap());
    assert!(
        names.iter().any(|n| n.contains("daemon-reload")),
        "{names:?}"
    );
    for (n, name) in names.iter().enumerate() {
        let b = setup();
        crash_at(&b, n, |b| b.release("full"));
        b.recover_all().unwrap();
        let what = format!("systemd last release, crash at {n} ({name}), then recover");
        assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new(), "{what}");
        assert!(b.kernel.cgroups(|c| c.drop_ins.is_empty()), "{what}");
        assert!(b.ledger().vms.is_empty(), "{what}: ledger");
        let files = b.state_files();
        assert!(
            files.iter().all(|f| f == "ledger.json"),
            "{what}: {files:?}"
        );
    }
}

#[test]
fn reconnect_puts_back_what_drifted_even_when_killed_at_any_point() {
    let mut tried = 0;
    for layout in HOSTS {
        let (b, _, _) = running(layout);
        let tuned = b.snapshot();
        drift(&b, layout);
        assert_ne!(diff(&tuned, &b.snapshot()), Vec::<String>::new());
        let from = b.kernel.points();
        b.started("full").unwrap(); // reconnect begin
        let names = b.kernel.point_names(from);
        assert_eq!(
            diff(&tuned, &b.snapshot()),
            Vec::<String>::new(),
            "{layout:?}: reconnect put everything back"
        );
        assert!(
            kinds(&names).contains(&"nr_hugepages".to_string()),
            "{names:?}"
        );
        for (n, name) in names.iter().enumerate() {
            let (b, start, ledger) = running(layout);
            drift(&b, layout);
            crash_at(&b, n, |b| b.started("full"));
            // libvirtd runs the reconnect again at its next start; the VM keeps running.
            b.started("full").unwrap();
            let what = format!("{layout:?} reconnect, crash at {n} ({name})");
            assert_eq!(diff(&tuned, &b.snapshot()), Vec::<String>::new(), "{what}");
            qemu_exits(&b, 401, VM_PAGES);
            b.release("full").unwrap();
            assert_recovered(&b, &start, &ledger, &format!("{what}, then release"));
            tried += 1;
        }
    }
    eprintln!(
        "reconnect: killed at each of {tried} points (V1, V2, systemd, partition, libvirt partition), recovered every time"
    );
}

/// On kernels that reset a task's own CPU mask when its process changes cpuset (before 6.2),
/// a host task someone pinned must get its pin back however prepare is interrupted. Once its
/// process has moved the pin no longer shows, so the journal carries it to `recover`.
#[test]
fn a_pinned_task_keeps_its_cpus_through_a_crash_at_any_point_of_prepare() {
    let pinned = kvmtune::cpulist::CpuSet::parse("1").unwrap();
    for layout in HOSTS {
        let setup = || {
            let b = host(layout);
            b.kernel.cgroups(|c| {
                c.resets_masks = true;
                c.tasks.get_mut(&101).unwrap().mask = pinned.clone();
            });
            b
        };
        let (_, names) = points_of(&setup, &|b| prepare_full(b).unwrap());
        for (n, name) in names.iter().enumerate() {
            let b = setup();
            crash_at(&b, n, prepare_full);
            b.recover_all().unwrap();
            assert_eq!(
                b.kernel.cgroups(|c| c.allowed(101)),
                pinned,
                "{layout:?} prepare, crash at {n} ({name}), then recover"
            );
        }
    }
}

/// A kernel thread (kthreadd, kswapd0 of the model) put back on the housekeeping CPUs 0,2.
fn kernel_thread_confined_again(line: &str) -> bool {
    ["proc/2/", "proc/4/"].iter().any(|p| line.starts_with(p))
        && line.ends_with("Cpus_allowed_list:\t0,2")
}
