//! The watcher's idle cost (`fakehost watch-cost`): CPU time per hour of `kvmtune watch` on a
//! host where nothing needs repairing, with two isolated, hugepage-backed VMs running.
//!
//! The host is the hook section's fake root (2 nodes, 32 CPUs, 256 IRQs, 600 processes, cgroup
//! v1), through `ModelFs`; two VMs are prepared and started in this process by kvmtune's own
//! code (4 vCPUs each, isolated, 1 GiB of 2 MiB pages, one with the passthrough device), and a
//! QEMU process per VM, named as libvirt names it, with a `CPU N/KVM` thread per vCPU. Then the
//! watcher runs N passes with its clock advanced by the policy's watch interval each time, so
//! that the full look and the metrics come every `metrics.interval` as they would (one pass in
//! 30 by default) and the textfile is written each time. CPU time is this process's user +
//! system time (getrusage), before and after; an hour is 3600 s / watch interval passes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use kvmtune::apply::{self, Base, Context};
use kvmtune::cpulist::CpuSet;
use kvmtune::domain::Domain;
use kvmtune::host::irqbalance::NoIrqbalance;
use kvmtune::host::systemctl::SystemctlCommand;
use kvmtune::policy::Policy;
use kvmtune::privilege::Privilege;
use kvmtune::state::StateDir;
use kvmtune::watch::Watcher;

use crate::layout::{self, put, Shape};
use crate::model::{FakeAffinity, ModelFs};

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A QEMU process of `vm` as libvirt starts it: its command line names the VM, it runs in
/// libvirt's cpuset, and each vCPU has its thread (`CPU N/KVM`) with scheduler statistics.
fn qemu(root: &Path, pid: u32, vm: &str, cpus: &[u32]) {
    let list = CpuSet::from_ids(cpus.iter().copied());
    put(
        root,
        &format!("proc/{pid}/cmdline"),
        &format!("/usr/bin/qemu-system-x86_64\0-name\0guest={vm},debug-threads=on\0-S\0"),
    );
    put(
        root,
        &format!("proc/{pid}/stat"),
        &format!("{pid} (qemu-system-x86) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0\n"),
    );
    let status = format!("Name:\tqemu-system-x86\nPid:\t{pid}\nCpus_allowed_list:\t{list}\n");
    put(root, &format!("proc/{pid}/status"), &status);
    put(
        root,
        &format!("proc/{pid}/cgroup"),
        &format!("1:cpuset:/machine/qemu-{vm}.libvirt-qemu\n0::/\n"),
    );
    put(root, &format!("proc/{pid}/task/{pid}/status"), &status);
    put(
        root,
        &format!("proc/{pid}/task/{pid}/comm"),
        "qemu-system-x86\n",
    );
    for (i, _) in cpus.iter().enumerate() {
        let tid = pid + 1 + i as u32;
        let dir = format!("proc/{pid}/task/{tid}");
        put(root, &format!("{dir}/comm"), &format!("CPU {i}/KVM\n"));
        put(root, &format!("{dir}/schedstat"), "81234567 1234567 42\n");
        put(root, &format!("{dir}/status"), &status);
    }
}

/// What the kernel does when a process moves into a cpuset, and `ModelFs` does not model (the
/// hook benchmarks do not read it back): the process's threads may then run only on that
/// cpuset's CPUs, which /proc/PID/status shows. Without this the watcher's full look would find
/// every confined process still allowed everywhere.
fn confine_statuses(root: &Path, fs: &ModelFs) {
    fs.save();
    let members = std::fs::read_to_string(root.join(crate::model::MEMBERS)).unwrap();
    let ours = format!("{}/kvmtune", crate::layout::CPUSET);
    let cpus = std::fs::read_to_string(root.join(format!("{ours}/cpuset.cpus"))).unwrap();
    for line in members.lines() {
        let mut w = line.splitn(3, ' ');
        let (Some(pid), Some(_), Some(cgroup)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        if cgroup != ours {
            continue;
        }
        let Ok(tids) = std::fs::read_dir(root.join(format!("proc/{pid}/task"))) else {
            continue;
        };
        let mut files = vec![format!("proc/{pid}/status")];
        files.extend(tids.map(|t| {
            let tid = t.unwrap().file_name().to_string_lossy().into_owned();
            format!("proc/{pid}/task/{tid}/status")
        }));
        for rel in files {
            let path = root.join(&rel);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let new: String = text
                .lines()
                .map(|l| match l.strip_prefix("Cpus_allowed_list:") {
                    Some(_) => format!("Cpus_allowed_list:\t{}\n", cpus.trim()),
                    None => format!("{l}\n"),
                })
                .collect();
            std::fs::write(&path, new).unwrap();
        }
    }
}

pub fn run(args: &[String]) {
    let mut passes = 2400u32;
    let mut irq_watch = false;
    let mut out: Option<PathBuf> = None;
    let mut workdir = std::env::temp_dir().join("kvmtune-watch-cost");
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).expect("a value after the flag").clone();
        match args[i].as_str() {
            "--passes" => passes = value().parse().expect("--passes N"),
            "--out" => out = Some(value().into()),
            "--workdir" => workdir = value().into(),
            // The old `irq-watch` (IRQs only, every IRQ at every look), for comparison.
            "--irq-watch" => {
                irq_watch = true;
                i += 1;
                continue;
            }
            other => panic!("watch-cost: unknown argument {other}"),
        }
        i += 2;
    }
    let shape = Shape {
        nodes: 2,
        cpus: 32,
        irqs: 256,
        tasks: 600,
        kernel: layout::KERNEL,
        partitions: false,
    };
    let _ = std::fs::remove_dir_all(&workdir);
    let root = workdir.join("root");
    layout::build(&root, &shape);
    let textfile = root.join("var/lib/prometheus/node-exporter");
    std::fs::create_dir_all(&textfile).unwrap();
    let fs = ModelFs::new(&root);
    let affinity = FakeAffinity(&fs);
    let policy = std::env::var("WC_POLICY")
        .map(|p| Policy::parse(&p).unwrap())
        .unwrap_or_default();
    // Root with what kvmtune needs, as whoever runs the benchmark (the state dir is theirs).
    let privilege = Privilege::root_as(nix::unistd::geteuid().as_raw());
    let state = StateDir::open(&workdir.join("state"), &privilege).unwrap();
    let ctx = Context {
        base: Base {
            fs: &fs,
            systemctl: &SystemctlCommand,
            affinity: &affinity,
            irqbalance: &NoIrqbalance,
            state: &state,
            privilege: &privilege,
        },
        policy: &policy,
        kvmtune_run: false,
    };
    let vms = [
        ("watch-a", 0, vec![4, 5, 6, 7], true, 90001),
        ("watch-b", 1, vec![20, 21, 22, 23], false, 90101),
    ];
    for (name, node, cpus, device, pid) in &vms {
        let xml = crate::vm_xml(name, 1024, *node, cpus, *device);
        let domain = Domain::parse(&xml).unwrap();
        apply::prepare(&ctx, name, &domain).unwrap();
        qemu(&root, *pid, name, cpus);
        apply::started(&ctx, name).unwrap();
    }
    confine_statuses(&root, &fs);

    let mut watcher = if irq_watch {
        Watcher::irqs_only()
    } else {
        Watcher::new()
    };
    let mut clock = Instant::now();
    let first = watcher.pass(&ctx, clock).unwrap();
    // The fake root's PIDs are numbers this process's own PID may equal: the hooks' sweep then
    // leaves that fake process out as itself, and the watcher's first look moves it (as it
    // moves itself on a real host). Anything else to repair is a fault.
    let me = format!("pid {} ", std::process::id());
    crate::must(
        first.unrepaired.is_empty()
            && first.metrics != irq_watch
            && first.repairs.iter().all(|r| {
                r.kind == kvmtune::state::stats::RepairKind::Sweep && r.line.contains(&me)
            }),
        format!("watch-cost: the first look should find nothing to repair: {first:?}"),
    );
    confine_statuses(&root, &fs);
    let ledger = state.load_ledger().unwrap();
    // Cheap looks only (the metrics were just written), then the real mix.
    let cheap_n = passes.min(600);
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    for _ in 0..cheap_n {
        let pass = watcher.pass(&ctx, clock).unwrap();
        crate::must(!pass.metrics, "watch-cost: metrics due too early".into());
    }
    let cheap_cpu = (cpu_time() - cpu0).as_secs_f64() / f64::from(cheap_n);
    let cheap_wall = wall0.elapsed().as_secs_f64() / f64::from(cheap_n);
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    let mut metrics = 0u32;
    for _ in 0..passes {
        clock += policy.irq_watch_interval;
        let pass = watcher.pass(&ctx, clock).unwrap();
        crate::must(
            pass.repairs.is_empty() && pass.unrepaired.is_empty(),
            format!("watch-cost: an idle host needed a repair: {pass:?}"),
        );
        metrics += u32::from(pass.metrics);
    }
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    let wall = wall0.elapsed().as_secs_f64();
    crate::must(
        state.load_ledger().unwrap() == ledger,
        "watch-cost: the ledger changed".into(),
    );
    crate::must(
        irq_watch || textfile.join("kvmtune.prom").exists(),
        "watch-cost: no kvmtune.prom".into(),
    );
    let simulated = policy.irq_watch_interval.as_secs_f64() * f64::from(passes);
    let per_hour = cpu * 3600.0 / simulated;
    // What a pass with the full look and the metrics costs beyond a cheap one (none for
    // irq-watch, which writes no metrics).
    let metrics_extra = if metrics > 0 {
        (cpu - cheap_cpu * f64::from(passes)) / f64::from(metrics)
    } else {
        0.0
    };
    eprintln!(
        "watch-cost{}: {passes} passes ({simulated:.0} s of watching at {} ms, {metrics} with the full look and metrics): {:.3} s CPU, {:.3} s wall; {:.1} s CPU per hour ({:.3} % of one CPU); a cheap look {:.0} us CPU ({:.0} us wall), a full look + metrics {:.2} ms more",
        if irq_watch { " (irq-watch)" } else { "" },
        policy.irq_watch_interval.as_millis(),
        cpu,
        wall,
        per_hour,
        per_hour / 36.0,
        cheap_cpu * 1e6,
        cheap_wall * 1e6,
        metrics_extra * 1e3,
    );
    let result = json!({
        "watcher": if irq_watch { "irq-watch" } else { "watch" },
        "shape": shape,
        "vms": vms.iter().map(|(n, node, cpus, device, _)| json!({"name": n, "node": node, "vcpus": cpus, "device": device, "memory_mib": 1024})).collect::<Vec<_>>(),
        "watch_interval_ms": policy.irq_watch_interval.as_millis() as u64,
        "metrics_interval_s": policy.metrics_interval.as_secs(),
        "passes": passes,
        "metrics_passes": metrics,
        "simulated_s": simulated,
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_s_per_hour": per_hour,
        "cheap_look_cpu_us": cheap_cpu * 1e6,
        "cheap_look_wall_us": cheap_wall * 1e6,
        "full_look_extra_cpu_ms": metrics_extra * 1e3,
    });
    let text = serde_json::to_string_pretty(&result).unwrap() + "\n";
    match out {
        Some(path) => std::fs::write(&path, text).unwrap(),
        None => print!("{text}"),
    }
    let _ = std::fs::remove_dir_all(&workdir);
}
