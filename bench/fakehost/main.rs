//! Benchmarks of kvmtune's hook on a fake root (sections 1 and 4 of BENCHMARKS.md), driven by
//! `bench/run.sh` (built with `cargo build --release --example fakehost`). Nothing here is a test: it measures and writes JSON; the report is made by
//! `bench/report.py`.
//!
//!   fakehost run --out FILE --kvmtune BIN --noop BIN --shell DIR --workdir DIR [--quick]
//!   fakehost setup DIR NODES CPUS IRQS TASKS [KERNEL]  (lay out a host and DIR/vm.xml, for profiling)
//!   fakehost hook NAME OP SUBOP [EXTRA]     (the hook role, see below)
//!   fakehost run-vm NAME OP SUBOP [EXTRA]   (the same calls with `kvmtune run`'s context: the
//!                                            VM is one kvmtune started, not libvirt)
//!   fakehost watch-cost [--passes N] [--out FILE] [--workdir DIR]  (the watcher's idle cost,
//!                                            see watchcost.rs)
//!
//! Hook overhead (section 1): every hook call is a fresh process, as libvirt runs it. A full
//! prepare → start → started → stopped → release cycle of a VM with hugepages, isolation and a
//! passthrough device runs kvmtune's library code in this executable's `hook` role: the same
//! calls as `kvmtune`'s hook mode (`hook::run`), on `model::ModelFs`, which gives the fake
//! root's cgroup, pool and IRQ files the kernel's behaviour (a plain tree cannot create a
//! cgroup's files on mkdir, and kvmtune never creates files). The events with nothing to do
//! run the real `kvmtune` binary; so does this executable once, to show that its start-up
//! costs what the real binary's does. Side by side, in the same loop: a bash dispatcher with
//! per-VM scripts in the style users paste (bench/shell), on an identical fake root, and the
//! floor, `exec` of a static program that does nothing.
//!
//! Scale (section 4): one large host (16 nodes, 1024 CPUs, 8192 IRQs, 5000 tasks) and sweeps
//! over CPUs, IRQs, tasks and VMs already running; and the same host with cgroup v2, no systemd
//! and a kernel with isolated partitions (`Shape::partitions`), where the VM is a `kvmtune run`
//! one (the `run-vm` role: `apply::prepare`/`started`/`release` with `Context::kvmtune_run`,
//! as `launch::run_vm` calls them) isolated by kvmtune's own partition `kvmtune.isolated`,
//! with a sweep over tasks. `run --only partition` measures only those points.

mod cgroup2;
mod layout;
mod model;
mod timing;
mod watchcost;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use kvmtune::apply::{self, Base, Context};
use kvmtune::cpulist::CpuSet;
use kvmtune::domain::Domain;
use kvmtune::error::{Error, Result};
use kvmtune::hook::HookCall;
use kvmtune::host::irqbalance::IrqbalanceSocket;
use kvmtune::host::systemctl::SystemctlCommand;
use kvmtune::state::StateDir;
use layout::{Shape, CPUSET, DEVICE};
use model::{FakeAffinity, ModelFs};
use timing::{both, Program, Sample, Series};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("hook") => std::process::exit(hook(&args[1..], false)),
        Some("run-vm") => std::process::exit(hook(&args[1..], true)),
        Some("run") => run(&args[1..]),
        Some("setup") => setup(&args[1..]),
        Some("watch-cost") => watchcost::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: fakehost run --out FILE --kvmtune BIN --noop BIN --shell DIR --workdir DIR [--quick] [--only hook|scale|partition]\n       fakehost setup DIR NODES CPUS IRQS TASKS [KERNEL [partitions]]   (a host to profile by hand)\n       fakehost hook NAME OP SUBOP [EXTRA]\n       fakehost run-vm NAME OP SUBOP [EXTRA]   (as kvmtune run calls them)\n       fakehost watch-cost [--passes N] [--out FILE] [--workdir DIR]   (the watcher's idle CPU per hour)"
            );
            std::process::exit(2);
        }
    }
}

// ------------------------------------------------------------------------------------------
// The hook role: kvmtune's hook mode on the modelled root.

/// What `kvmtune`'s hook mode does (`cli::hook_mode` → `hook::run`), with `ModelFs` and a
/// recording task affinity in place of the real root and `sched_setaffinity`. `kvmtune_run`:
/// the calls `kvmtune run` makes around its QEMU instead (`launch::run_vm`: the same
/// `apply::prepare`, `started`, `release`, with `Context::kvmtune_run`).
fn hook(args: &[String], kvmtune_run: bool) -> i32 {
    let roots = kvmtune::assemble::Roots::from_env();
    let call = match HookCall::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kvmtune: {e}");
            return e.exit_code();
        }
    };
    kvmtune::log::init(&roots.root);
    let mut stdin = std::io::stdin().lock();
    let fs = ModelFs::new(&roots.root);
    let result = dispatch(&call, &mut stdin, &fs, &roots, kvmtune_run);
    fs.save();
    if let Some(path) = std::env::var_os("FAKEHOST_OPS") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("FAKEHOST_OPS file");
        let _ = writeln!(f, "{} {}", call.op, fs.ops_line());
    }
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kvmtune: {e}");
            if call.may_fail() {
                e.exit_code()
            } else {
                0
            }
        }
    }
}

fn dispatch(
    call: &HookCall,
    stdin: &mut dyn Read,
    fs: &ModelFs,
    roots: &kvmtune::assemble::Roots,
    kvmtune_run: bool,
) -> Result<()> {
    let acts = matches!(
        (call.op.as_str(), call.subop.as_str()),
        ("prepare", "begin") | ("started", "begin") | ("reconnect", "begin") | ("release", "end")
    );
    let mut xml = String::new();
    stdin
        .read_to_string(&mut xml)
        .map_err(|e| Error::io("read domain XML from", "stdin", e))?;
    if !acts {
        return Ok(());
    }
    let privilege = roots.privilege()?;
    let policy = roots.policy(&privilege)?;
    let state = StateDir::open(&roots.state_dir, &privilege)?;
    let irqbalance = IrqbalanceSocket::new(&roots.root);
    let affinity = FakeAffinity(fs);
    let ctx = Context {
        base: Base {
            fs,
            systemctl: &SystemctlCommand,
            affinity: &affinity,
            irqbalance: &irqbalance,
            state: &state,
            privilege: &privilege,
        },
        policy: &policy,
        kvmtune_run,
    };
    match call.op.as_str() {
        "prepare" => {
            let domain =
                Domain::parse(&xml).map_err(|e| Error::Domain(format!("VM '{}': {e}", call.vm)))?;
            apply::prepare(&ctx, &call.vm, &domain).map(drop)
        }
        "release" => apply::release(&ctx, &call.vm),
        _ => apply::started(&ctx, &call.vm),
    }
}

/// Lay out a scale host in DIR/root with the scale VM's XML in DIR/vm.xml, and print the
/// environment a hook call needs, e.g. to profile one call:
/// `env $(fakehost setup /tmp/h 16 1024 8192 5000) valgrind --tool=callgrind fakehost hook scale-vm prepare begin - < /tmp/h/vm.xml`
fn setup(args: &[String]) {
    let n = |i: usize| -> u32 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .expect("setup DIR NODES CPUS IRQS TASKS")
    };
    let dir = PathBuf::from(&args[0]);
    let shape = Shape {
        nodes: n(1),
        cpus: n(2),
        irqs: n(3),
        tasks: n(4),
        kernel: args
            .get(5)
            .map_or(layout::KERNEL, |k| Box::leak(k.clone().into_boxed_str())),
        partitions: args.get(6).is_some_and(|a| a == "partitions"),
    };
    let host = FakeHost::build(&dir, &shape);
    std::fs::write(dir.join("vm.xml"), scale_vm(&shape).0).unwrap();
    println!(
        "KVMTUNE_ROOT={} KVMTUNE_STATE_DIR={} KVMTUNE_CONFIG={}",
        host.root.display(),
        host.state.display(),
        host.config.display()
    );
}

// ------------------------------------------------------------------------------------------
// The driver.

struct Config {
    out: PathBuf,
    kvmtune: PathBuf,
    noop: PathBuf,
    shell: PathBuf,
    workdir: PathBuf,
    quick: bool,
    /// Only these sections ("hook", "scale", or "partition": the partition points of "scale").
    only: Vec<String>,
}

fn parse_config(args: &[String]) -> Config {
    let mut get = BTreeMap::new();
    let mut quick = false;
    let mut only = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--quick" => quick = true,
            "--only" => {
                only.push(args[i + 1].clone());
                i += 1;
            }
            flag => {
                let value = args
                    .get(i + 1)
                    .unwrap_or_else(|| panic!("{flag} needs a value"));
                get.insert(flag.trim_start_matches("--").to_string(), value.clone());
                i += 1;
            }
        }
        i += 1;
    }
    let path = |k: &str| -> PathBuf {
        PathBuf::from(
            get.get(k)
                .unwrap_or_else(|| panic!("--{k} is required"))
                .clone(),
        )
    };
    Config {
        out: path("out"),
        kvmtune: path("kvmtune"),
        noop: path("noop"),
        shell: path("shell"),
        workdir: path("workdir"),
        quick,
        only,
    }
}

fn run(args: &[String]) {
    let cfg = parse_config(args);
    std::fs::create_dir_all(&cfg.workdir).unwrap();
    let wanted = |s: &str| cfg.only.is_empty() || cfg.only.iter().any(|o| o == s);
    let mut out = serde_json::Map::new();
    out.insert("quick".into(), json!(cfg.quick));
    if wanted("hook") {
        out.insert("hook".into(), hook_section(&cfg));
    }
    if wanted("scale") {
        out.insert("scale".into(), scale_section(&cfg));
    } else if wanted("partition") {
        let base = Shape {
            nodes: 16,
            cpus: 1024,
            irqs: 8192,
            tasks: 5000,
            kernel: layout::KERNEL,
            partitions: false,
        };
        out.insert("scale".into(), partition_section(&cfg, &base));
    }
    let text = serde_json::to_string_pretty(&Value::Object(out)).unwrap();
    std::fs::write(&cfg.out, text + "\n").unwrap();
    eprintln!("fakehost: wrote {}", cfg.out.display());
}

/// A VM as libvirt hands it to the hook: memory on hugepages bound to `node`, one vCPU per
/// entry of `cpus` pinned there, isolation and device IRQ placement asked in the metadata,
/// the passthrough device when `device`, and the devices a typical VM has besides.
pub fn vm_xml(name: &str, mib: u64, node: u32, cpus: &[u32], device: bool) -> String {
    let pins: String = cpus
        .iter()
        .enumerate()
        .map(|(i, c)| format!("    <vcpupin vcpu='{i}' cpuset='{c}'/>\n"))
        .collect();
    let hostdev = if device {
        let bus = &DEVICE[5..7];
        format!(
            "    <hostdev mode='subsystem' type='pci' managed='yes'>\n      <driver name='vfio'/>\n      <source>\n        <address domain='0x0000' bus='0x{bus}' slot='0x00' function='0x0'/>\n      </source>\n      <alias name='hostdev0'/>\n      <address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/>\n    </hostdev>\n"
        )
    } else {
        String::new()
    };
    let kib = mib * 1024;
    let n = cpus.len();
    format!(
        "<domain type='kvm' id='7'>
  <name>{name}</name>
  <uuid>0e0c7a52-1111-4000-8000-00000000be{n:02}</uuid>
  <metadata>
    <kvmtune:tune xmlns:kvmtune='urn:kvmtune:1'>
      <kvmtune:isolate cpus='vcpus'/>
      <kvmtune:irq cpus='vcpus'/>
    </kvmtune:tune>
  </metadata>
  <memory unit='KiB'>{kib}</memory>
  <currentMemory unit='KiB'>{kib}</currentMemory>
  <memoryBacking>
    <hugepages/>
  </memoryBacking>
  <vcpu placement='static'>{n}</vcpu>
  <cputune>
{pins}    <emulatorpin cpuset='{}'/>
  </cputune>
  <numatune>
    <memory mode='strict' nodeset='{node}'/>
  </numatune>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/{name}_VARS.fd</nvram>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <kvm><hidden state='on'/></kvm>
  </features>
  <cpu mode='host-passthrough' check='none' migratable='on'>
    <topology sockets='1' dies='1' cores='{n}' threads='1'/>
  </cpu>
  <clock offset='localtime'>
    <timer name='rtc' tickpolicy='catchup'/>
    <timer name='pit' tickpolicy='delay'/>
    <timer name='hpet' present='no'/>
  </clock>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='/var/lib/libvirt/images/{name}.qcow2' index='1'/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='qemu-xhci' ports='15'>
      <alias name='usb'/>
      <address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>
    </controller>
    <controller type='pci' index='0' model='pcie-root'>
      <alias name='pcie.0'/>
    </controller>
    <interface type='network'>
      <mac address='52:54:00:12:34:56'/>
      <source network='default' portid='5e0e0e0e-0000-4000-8000-000000000001' bridge='virbr0'/>
      <target dev='vnet3'/>
      <model type='virtio'/>
      <alias name='net0'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <serial type='pty'>
      <source path='/dev/pts/3'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
      <alias name='serial0'/>
    </serial>
    <console type='pty' tty='/dev/pts/3'>
      <source path='/dev/pts/3'/>
      <target type='serial' port='0'/>
      <alias name='serial0'/>
    </console>
{hostdev}    <memballoon model='none'/>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+64055</label>
    <imagelabel>+64055:+64055</imagelabel>
  </seclabel>
</domain>
",
        cpus[0]
    )
}

/// A VM that asks for nothing (no hugepages, no metadata).
fn plain_xml(name: &str) -> String {
    vm_xml(name, 4096, 0, &[2, 3], false)
        .replace(
            "  <memoryBacking>\n    <hugepages/>\n  </memoryBacking>\n",
            "",
        )
        .replace(
            "      <kvmtune:isolate cpus='vcpus'/>\n      <kvmtune:irq cpus='vcpus'/>\n",
            "",
        )
}

const EVENTS: [(&str, &str); 5] = [
    ("prepare", "begin"),
    ("start", "begin"),
    ("started", "begin"),
    ("stopped", "end"),
    ("release", "end"),
];

/// One fake host with a state dir, driven through a hook program.
struct FakeHost {
    root: PathBuf,
    state: PathBuf,
    config: PathBuf,
}

impl FakeHost {
    fn build(dir: &Path, shape: &Shape) -> FakeHost {
        let _ = std::fs::remove_dir_all(dir);
        let root = dir.join("root");
        layout::build(&root, shape);
        FakeHost {
            state: dir.join("state"),
            config: dir.join("kvmtune.toml"), // absent: the built-in policy
            root,
        }
    }

    /// The hook program with our roots in its environment.
    fn hook(&self, bin: &Path, prefix: &[&str]) -> Program {
        let mut p = Program::new(bin);
        for a in prefix {
            p = p.arg(*a);
        }
        p.env("KVMTUNE_ROOT", self.root.as_os_str())
            .env("KVMTUNE_STATE_DIR", self.state.as_os_str())
            .env("KVMTUNE_CONFIG", self.config.as_os_str())
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// What a VM cycle must leave as it found: pools, the cpuset tree and its memberships,
    /// every IRQ's affinity, the workqueue masks, every task's allowed CPUs.
    fn fingerprint(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut walk = vec![PathBuf::from("sys/devices/system/node")];
        // Every cgroup hierarchy (v1's cpuset, or v2's), files and directories.
        walk.push(PathBuf::from(layout::CGROUP2));
        walk.push(PathBuf::from("proc/irq"));
        walk.push(PathBuf::from("sys/devices/virtual/workqueue"));
        while let Some(rel) = walk.pop() {
            for e in std::fs::read_dir(self.root.join(&rel)).unwrap() {
                let e = e.unwrap();
                let r = rel.join(e.file_name());
                if e.file_type().unwrap().is_dir() {
                    walk.push(r);
                } else if e.file_name() != "effective_affinity_list" {
                    // (Where an IRQ is delivered within its affinity is the kernel's choice.)
                    out.insert(
                        r.display().to_string(),
                        std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    );
                }
            }
        }
        out.insert(model::MEMBERS.into(), self.read(model::MEMBERS));
        for e in std::fs::read_dir(self.root.join("proc")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.parse::<u32>().is_ok() {
                let rel = format!("proc/{name}/status");
                out.insert(rel.clone(), self.read(&rel));
            }
        }
        out
    }
}

fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => d.push(format!("{k}: gone")),
            Some(w) if w != v => d.push(format!("{k}: {:?} -> {:?}", v.trim(), w.trim())),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        d.push(format!("{k}: new"));
    }
    d
}

fn must(cond: bool, what: String) {
    if !cond {
        panic!("benchmark check failed: {what}");
    }
}

// ------------------------------------------------------------------------------------------
// Section 1: hook overhead.

fn hook_section(cfg: &Config) -> Value {
    let me = std::env::current_exe().unwrap();
    let shape = Shape {
        nodes: 2,
        cpus: 32,
        irqs: 256,
        tasks: 600,
        kernel: layout::KERNEL,
        partitions: false,
    };
    let vm = "bench-vm";
    let vm_cpus: Vec<u32> = (8..16).collect();
    let xml = vm_xml(vm, 8192, 0, &vm_cpus, true);
    let plain = plain_xml("plain-vm");
    let pages = 8192 / 2;
    let k = FakeHost::build(&cfg.workdir.join("hook-kvmtune"), &shape);
    let s = FakeHost::build(&cfg.workdir.join("hook-shell"), &shape);
    let noop_host = FakeHost::build(&cfg.workdir.join("hook-noop"), &shape);
    let shell_state = cfg.workdir.join("hook-shell/scripts-state");
    std::fs::create_dir_all(&shell_state).unwrap();
    let dispatcher = Program::new(&cfg.shell.join("qemu"))
        .env("BENCH_ROOT", s.root.as_os_str())
        .env("BENCH_STATE", shell_state.as_os_str());

    // One checked cycle each before timing: the numbers are of work that was really done.
    let before = k.fingerprint();
    let pool = "sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages";
    let cycle = |p: &Program, prefix: &[&str], check: bool| -> Vec<Sample> {
        EVENTS
            .iter()
            .map(|(op, sub)| {
                let mut prog = p.clone();
                prog.args.clear();
                for a in prefix {
                    prog = prog.arg(*a);
                }
                let ms = prog
                    .arg(vm)
                    .arg(*op)
                    .arg(*sub)
                    .arg("-")
                    .time(xml.as_bytes());
                if check && *op == "prepare" {
                    must(
                        k.read(pool) == pages.to_string(),
                        format!("pool after prepare: {}", k.read(pool)),
                    );
                    must(
                        k.read(&format!("{CPUSET}/kvmtune/cpuset.cpus")) == "0-7,16-31",
                        "host tasks confined to 0-7,16-31 after prepare".into(),
                    );
                }
                if check && *op == "started" {
                    let irq = shape.irqs - 1;
                    must(
                        k.read(&format!("proc/irq/{irq}/smp_affinity_list")) == "8-15",
                        format!("device IRQ {irq} on 8-15 after started"),
                    );
                }
                ms
            })
            .collect()
    };
    let kvm = k.hook(&me, &["hook"]);
    cycle(&kvm, &["hook"], true);
    let after = k.fingerprint();
    let d = diff(&before, &after);
    must(
        d.is_empty(),
        format!("kvmtune cycle left changes: {:?}", &d[..d.len().min(5)]),
    );
    // One call of the bash dispatcher, as libvirt makes it.
    let shell = |op: &str, sub: &str| {
        dispatcher
            .clone()
            .arg(vm)
            .arg(op)
            .arg(sub)
            .arg("-")
            .time(xml.as_bytes())
    };
    let shell_pool = "proc/sys/vm/nr_hugepages";
    shell("prepare", "begin");
    must(
        s.read(shell_pool) == pages.to_string(),
        format!("shell pool {}", s.read(shell_pool)),
    );
    for (op, sub) in &EVENTS[1..] {
        shell(op, sub);
    }
    must(s.read(shell_pool) == "0", "shell released its pool".into());

    let reps = if cfg.quick { 20 } else { 300 };
    let noop_reps = if cfg.quick { 3 } else { 4 };
    let mut series = Series::default();
    let real_noop = noop_host.hook(&cfg.kvmtune, &["hook"]);
    let bench_noop = noop_host.hook(&me, &["hook"]);
    let floor = Program::new(&cfg.noop);
    for _ in 0..reps {
        let t = cycle(&kvm, &["hook"], false);
        for ((op, _), ms) in EVENTS.iter().zip(&t) {
            series.push(&format!("kvmtune {op}"), *ms);
        }
        series.push("kvmtune cycle", t.iter().copied().sum());
        let t: Vec<Sample> = EVENTS.iter().map(|(op, sub)| shell(op, sub)).collect();
        for ((op, _), ms) in EVENTS.iter().zip(&t) {
            series.push(&format!("shell {op}"), *ms);
        }
        series.push("shell cycle", t.iter().copied().sum());
        // Events with nothing to do, several per cycle (they are most of libvirt's calls).
        for _ in 0..noop_reps {
            series.push(
                "noop kvmtune start",
                real_noop
                    .clone()
                    .arg(vm)
                    .arg("start")
                    .arg("begin")
                    .arg("-")
                    .time(xml.as_bytes()),
            );
            series.push(
                "noop kvmtune prepare plain VM",
                real_noop
                    .clone()
                    .arg("plain-vm")
                    .arg("prepare")
                    .arg("begin")
                    .arg("-")
                    .time(plain.as_bytes()),
            );
            series.push(
                "noop fakehost start",
                bench_noop
                    .clone()
                    .arg(vm)
                    .arg("start")
                    .arg("begin")
                    .arg("-")
                    .time(xml.as_bytes()),
            );
            series.push("floor static exec", floor.time(xml.as_bytes()));
        }
    }
    let summary = series.summary();
    let ratio = summary["shell cycle"].wall.median / summary["kvmtune cycle"].wall.median;
    let cpu_ratio = summary["shell cycle"].cpu.median / summary["kvmtune cycle"].cpu.median;
    eprintln!(
        "hook: kvmtune cycle {:.2} ms, shell cycle {:.2} ms ({ratio:.1}x, CPU {cpu_ratio:.1}x), no-op {:.2} ms (p99 {:.2}), floor {:.2} ms",
        summary["kvmtune cycle"].wall.median,
        summary["shell cycle"].wall.median,
        summary["noop kvmtune start"].wall.median,
        summary["noop kvmtune start"].wall.p99,
        summary["floor static exec"].wall.median
    );
    json!({
        "shape": shape,
        "vm": { "memory_mib": 8192, "pages_2m": pages, "cpus": "8-15", "device": DEVICE },
        "reps": reps,
        "stats": summary,
        "ratio_shell_over_kvmtune": ratio,
        "cpu_ratio_shell_over_kvmtune": cpu_ratio,
    })
}

// ------------------------------------------------------------------------------------------
// Section 4: scale.

/// The measured VM on a scale host: 16 GiB on node 1, 4 vCPUs on node 1's CPUs after its
/// first (housekeeping) one, isolated, with the passthrough device.
fn scale_vm(shape: &Shape) -> (String, Vec<u32>) {
    let first = shape.cpus_of_node(1).first().unwrap();
    let cpus: Vec<u32> = (first + 1..first + 5).collect();
    (vm_xml("scale-vm", 16384, 1, &cpus, true), cpus)
}

/// Another running VM: 1 GiB on node `node`, 4 isolated vCPUs there, no device.
fn other_vm(shape: &Shape, i: u32) -> (String, String) {
    let node = 2 + i;
    let first = shape.cpus_of_node(node).first().unwrap();
    let cpus: Vec<u32> = (first + 1..first + 5).collect();
    let name = format!("other-{i}");
    (vm_xml(&name, 1024, node, &cpus, false), name)
}

struct Point {
    /// prepare then release, no started (a start that stops before QEMU runs): the target.
    prepare_release: Vec<Sample>,
    /// The full cycle's calls: prepare, started (IRQs), release.
    prepare: Vec<Sample>,
    started: Vec<Sample>,
    release: Vec<Sample>,
    cycle: Vec<Sample>,
    /// File operations per call, by call.
    ops: serde_json::Map<String, Value>,
    /// Microseconds per small-file read on this root.
    read_us: f64,
}

/// Build a host of `shape`, start `running` other VMs, then time `reps` rounds of the scale VM:
/// prepare + release, and prepare + started + release. On a host with partitions the VM is a
/// `kvmtune run` one (the `run-vm` role), isolated by kvmtune's own partition.
fn scale_point(cfg: &Config, label: &str, shape: &Shape, running: u32, reps: usize) -> Point {
    let me = std::env::current_exe().unwrap();
    let t0 = std::time::Instant::now();
    let host = FakeHost::build(&cfg.workdir.join(format!("scale-{label}")), shape);
    let role = if shape.partitions { "run-vm" } else { "hook" };
    let hook = host.hook(&me, &[role]);
    for i in 0..running {
        let (xml, name) = other_vm(shape, i);
        for (op, sub) in [("prepare", "begin"), ("started", "begin")] {
            hook.clone()
                .arg(&name)
                .arg(op)
                .arg(sub)
                .arg("-")
                .time(xml.as_bytes());
        }
    }
    let read_us = read_cost_us(&host.root);
    let (xml, cpus) = scale_vm(shape);
    let vm_cpus = CpuSet::from_ids(cpus.clone());
    let before = host.fingerprint();
    let ops_file = cfg.workdir.join(format!("ops-{label}"));
    let counted = hook.clone().env("FAKEHOST_OPS", ops_file.as_os_str());
    let ops = std::cell::RefCell::new(serde_json::Map::new());
    // The first round counts kvmtune's file operations per call (reads, writes, lists,
    // existence checks, mkdir/rmdir): the part of the cost that does not depend on the load.
    let call_n = |op: &str, sub: &str, rep: usize, key: &str| {
        let p = if rep == 0 { &counted } else { &hook };
        let t = p
            .clone()
            .arg("scale-vm")
            .arg(op)
            .arg(sub)
            .arg("-")
            .time(xml.as_bytes());
        if rep == 0 {
            let text = std::fs::read_to_string(&ops_file).unwrap_or_default();
            let _ = std::fs::remove_file(&ops_file);
            let n: Vec<u64> = text
                .split_whitespace()
                .skip(1)
                .filter_map(|w| w.parse().ok())
                .collect();
            ops.borrow_mut().insert(
                key.to_string(),
                json!({"reads": n[0], "writes": n[1], "lists": n[2], "exists": n[3], "dirs": n[4]}),
            );
        }
        t
    };
    // After prepare: the VM's CPUs are isolated as the layout's method does it.
    let check_isolated = || {
        if shape.partitions {
            let ours = format!("{}/kvmtune.isolated", layout::CGROUP2);
            let state = host.read(&format!("{ours}/cpuset.cpus.partition"));
            must(
                state == "isolated",
                format!("{label}: /{ours}/cpuset.cpus.partition reads '{state}'"),
            );
            let isolated = host.read(&format!("{}/cpuset.cpus.isolated", layout::CGROUP2));
            must(
                isolated == vm_cpus.to_string(),
                format!(
                    "{label}: the root's cpuset.cpus.isolated reads '{isolated}', not {vm_cpus}"
                ),
            );
            let host_cpus = host.read(&format!("{}/cpuset.cpus.effective", layout::CGROUP2));
            let host_cpus = CpuSet::parse(&host_cpus).unwrap_or_default();
            must(
                !host_cpus.is_empty() && host_cpus.intersection(&vm_cpus).is_empty(),
                format!("{label}: the root's tasks may run on {host_cpus}, not off {vm_cpus}"),
            );
        } else {
            let kt = host.read(&format!("{CPUSET}/kvmtune/cpuset.cpus"));
            let confined = CpuSet::parse(&kt).unwrap_or_default();
            must(
                !confined.is_empty() && confined.intersection(&vm_cpus).is_empty(),
                format!("{label}: host tasks confined to '{kt}', off {vm_cpus}"),
            );
        }
    };
    let check_restored = |what: &str| {
        let d = diff(&before, &host.fingerprint());
        must(
            d.is_empty(),
            format!("{label}: {what} left changes: {:?}", &d[..d.len().min(5)]),
        );
    };
    let mut p = Point {
        prepare_release: vec![],
        prepare: vec![],
        started: vec![],
        release: vec![],
        cycle: vec![],
        ops: serde_json::Map::new(),
        read_us: 0.0,
    };
    for rep in 0..reps {
        let a = call_n("prepare", "begin", rep, "prepare");
        if rep == 0 {
            check_isolated();
        }
        let b = call_n("release", "end", rep, "release after prepare");
        if rep == 0 {
            check_restored("prepare + release");
        }
        p.prepare_release.push(a + b);
        let a = call_n("prepare", "begin", rep, "prepare");
        if rep == 0 {
            check_isolated();
        }
        let b = call_n("started", "begin", rep, "started");
        if rep == 0 {
            let irq = shape.irqs - 1;
            let got = host.read(&format!("proc/irq/{irq}/smp_affinity_list"));
            must(
                got == vm_cpus.to_string(),
                format!("{label}: device IRQ {irq} on {got}, not {vm_cpus}"),
            );
        }
        let c = call_n("release", "end", rep, "release after started");
        if rep == 0 {
            check_restored("cycle");
        }
        p.prepare.push(a);
        p.started.push(b);
        p.release.push(c);
        p.cycle.push(a + b + c);
    }
    eprintln!(
        "scale {label}: prepare+release {:.1} ms (CPU {:.1}), full cycle {:.1} ms (CPU {:.1}); {:.0} s with set-up",
        both(&p.prepare_release).wall.median,
        both(&p.prepare_release).cpu.median,
        both(&p.cycle).wall.median,
        both(&p.cycle).cpu.median,
        t0.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(cfg.workdir.join(format!("scale-{label}")));
    p.ops = ops.into_inner();
    p.read_us = read_us;
    p
}

/// What one read of a small kernel file costs here: every /proc/PID/stat of the fake root read
/// the way kvmtune reads (`RootFs`), three times, the fastest pass, in microseconds per file.
fn read_cost_us(root: &Path) -> f64 {
    use kvmtune::host::HostFs;
    let fs = kvmtune::host::RootFs::new(root);
    let pids: Vec<String> = fs
        .list("proc")
        .unwrap()
        .into_iter()
        .filter(|n| n.parse::<u32>().is_ok())
        .collect();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        for pid in &pids {
            let _ = fs.read(&format!("proc/{pid}/stat"));
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / pids.len() as f64);
    }
    best
}

fn point_json(shape: &Shape, running: u32, p: &Point) -> Value {
    json!({
        "shape": shape,
        "running_vms": running,
        "prepare_release": both(&p.prepare_release),
        "prepare": both(&p.prepare),
        "started": both(&p.started),
        "release": both(&p.release),
        "cycle": both(&p.cycle),
        "ops": p.ops,
        "read_us": p.read_us,
    })
}

fn scale_section(cfg: &Config) -> Value {
    let base = Shape {
        nodes: 16,
        cpus: 1024,
        irqs: 8192,
        tasks: 5000,
        kernel: layout::KERNEL,
        partitions: false,
    };
    let reps = if cfg.quick { 5 } else { 30 };
    let big = scale_point(cfg, "base", &base, 0, reps);
    let mut out = json!({ "base": point_json(&base, 0, &big) });
    let partitions = partition_section(cfg, &base);
    out["partition"] = partitions["partition"].clone();
    if cfg.quick {
        return out;
    }
    let sweep_reps = 8;
    let mut sweeps = serde_json::Map::new();
    // One dimension of the base host at a time.
    type Resize = fn(u32, Shape) -> Shape;
    let dimensions: [(&str, [u32; 4], Resize); 3] = [
        ("cpus", [128, 256, 512, 1024], |n, s| Shape { cpus: n, ..s }),
        ("irqs", [1024, 2048, 4096, 8192], |n, s| Shape {
            irqs: n,
            ..s
        }),
        ("tasks", [1250, 2500, 5000, 10000], |n, s| Shape {
            tasks: n,
            ..s
        }),
    ];
    for (name, values, shaped) in dimensions {
        let points = values
            .iter()
            .map(|&n| {
                let shape = shaped(n, base);
                let p = scale_point(cfg, &format!("{name}-{n}"), &shape, 0, sweep_reps);
                point_json(&shape, 0, &p)
            })
            .collect();
        sweeps.insert(name.into(), Value::Array(points));
    }
    // Before 6.2 the kernel drops a thread's own mask when its cpuset changes: kvmtune notes
    // every pinned thread of the processes it moves, and puts them back.
    let old = Shape {
        kernel: layout::OLD_KERNEL,
        ..base
    };
    let p = scale_point(cfg, "old-kernel", &old, 0, sweep_reps);
    out["old_kernel"] = point_json(&old, 0, &p);
    let mut vms = Vec::new();
    for n in [0, 1, 2, 4, 8, 14] {
        let p = scale_point(cfg, &format!("vms-{n}"), &base, n, sweep_reps);
        vms.push(point_json(&base, n, &p));
    }
    sweeps.insert("running_vms".into(), Value::Array(vms));
    sweeps.insert(
        "partition_tasks".into(),
        partitions["sweeps"]["partition_tasks"].clone(),
    );
    out["sweeps"] = Value::Object(sweeps);
    out
}

/// The base host with cgroup v2, no systemd and a kernel with isolated partitions, the VM a
/// `kvmtune run` one: `partition` (the base shape) and, unless quick, `sweeps.partition_tasks`,
/// with when, at which commit and under which load they were measured (`run --only partition`
/// may measure them apart from the rest).
fn partition_section(cfg: &Config, base: &Shape) -> Value {
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let modified = !git(&[
        "status",
        "--porcelain",
        "--",
        "src",
        "bench/fakehost",
        "Cargo.toml",
    ])
    .is_empty();
    let commit = git(&["rev-parse", "--short", "HEAD"]) + if modified { " (modified)" } else { "" };
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let load_start = load();
    let shape = Shape {
        partitions: true,
        ..*base
    };
    let reps = if cfg.quick { 5 } else { 30 };
    let p = scale_point(cfg, "partition", &shape, 0, reps);
    let mut out = json!({ "partition": point_json(&shape, 0, &p) });
    if !cfg.quick {
        let points: Vec<Value> = [1250, 2500, 5000, 10000]
            .iter()
            .map(|&n| {
                let shape = Shape { tasks: n, ..shape };
                let p = scale_point(cfg, &format!("partition-tasks-{n}"), &shape, 0, 8);
                point_json(&shape, 0, &p)
            })
            .collect();
        out["sweeps"] = json!({ "partition_tasks": points });
    }
    out["partition"]["measured"] = json!({
        "commit": commit,
        "date": date,
        "load_start": load_start,
        "load_end": load(),
    });
    out
}
