//! The `partition` method: the isolated CPUs form cgroup v2 isolated partitions
//! (`cpuset.cpus.partition = isolated`) that hold the VMs' vCPU threads:
//! - a VM libvirt starts: each of its vCPU cgroups, `machine.slice/…scope/libvirt/vcpuN`, once
//!   they exist (at `started`), becomes a partition of the one CPU libvirt pinned that vCPU to,
//!   as the kernel documentation advises (tasks in a multi-CPU isolated partition are not
//!   balanced across its CPUs). They are "remote" partitions: their parent is no partition, so
//!   every ancestor below the root lists the CPUs in its `cpuset.cpus.exclusive`;
//! - a VM `kvmtune run` starts: kvmtune's own cgroup `kvmtune.isolated` under the root, into
//!   which its QEMU goes before it `exec`s (`launch::placement`).
//!
//! The kernel then takes those CPUs out of every other cgroup's effective set, and so from every
//! host task, now and later, and out of the scheduler's load balancing: no process is moved and
//! nothing needs watching. The unbound workqueues follow only from 6.8, and kernel threads a
//! kernel leaves where they are (per-CPU ones cannot move), so `confine` still moves the
//! unbound kernel threads and the workqueue masks (nothing to do where the kernel did it).
//!
//! kvmtune's partition sits directly under the root, a partition root, so it would be valid with
//! its `cpuset.cpus` alone; its `cpuset.cpus.exclusive` is set too: since 6.7 an exclusive list
//! wins over a sibling's `cpuset.cpus`, and a sibling's exclusive list that overlaps it is
//! refused at the write (EINVAL) instead of leaving an invalid partition behind.
//!
//! Chosen by what the kernel offers, never by its version (distributions backport): the root's
//! `cpuset.cpus.isolated` and, wherever cpuset is enabled below the root, the partition files.
//! The partitions' states are read back after the changes: the kernel reports a setup it cannot
//! honour as `isolated invalid (REASON)` instead of failing the write.
//!
//! `Partition` is the method's `Confiner`; the functions it is made of (`probe`, `changes`,
//! `check`, `read_back`, `touches_partitions`, `path`, `libvirt_cgroup`) are also called where
//! only partitions have anything to say (choosing the method, making changes, `kvmtune run`'s
//! placement).

use super::{Confiner, Inputs, Unconfined};
use crate::change::Change;
use crate::cpulist::CpuSet;
use crate::error::{Error, Result};
use crate::host::cgroup::{of_process, CgroupMounts};
use crate::host::process::{names_vm_at, processes_naming, LIBVIRT_RUN_DIR};
use crate::host::HostFs;
use crate::state::{Ledger, Phase};

/// kvmtune's isolated partition, under the cgroup v2 root.
pub const PARTITION: &str = "kvmtune.isolated";
/// The slice systemd-machined puts libvirt's VMs in.
const MACHINE_SLICE: &str = "machine.slice";
/// The root's list of CPUs in valid isolated partitions (6.7 and later, or a backport).
const ROOT_ISOLATED: &str = "cpuset.cpus.isolated";
pub const PARTITION_FILE: &str = "cpuset.cpus.partition";
pub const EXCLUSIVE_FILE: &str = "cpuset.cpus.exclusive";

/// The method; `isolation::confiner(Method::Partition)`.
pub struct Partition;

impl Confiner for Partition {
    /// The holders' partitions (the housekeeping CPUs are what no partition holds).
    fn changes(&self, input: &Inputs, _housekeeping: &CpuSet) -> Result<Vec<Change>> {
        changes(input.fs, &input.view.mounts, input.holders)
    }

    fn host_cpus(&self, fs: &dyn HostFs, mounts: &CgroupMounts) -> Option<CpuSet> {
        host_cpus(fs, mounts)
    }

    /// Every partition's own read-back (`check`): host tasks run on the root's effective CPUs,
    /// which other partitions may narrow too; what matters is that the isolated ones left.
    fn check(
        &self,
        fs: &dyn HostFs,
        mounts: &CgroupMounts,
        _housekeeping: &CpuSet,
        holders: &Holders,
    ) -> Result<(), Unconfined> {
        check(fs, mounts, holders).map_err(Unconfined::Failed)
    }

    fn reads_every_task(&self) -> bool {
        false
    }

    fn resets_kernel_threads(&self) -> bool {
        true
    }

    /// Partitions hold the other VMs' CPUs; a VM whose pins they cannot hold cannot join them.
    fn admits(&self, holders: &Holders) -> Result<()> {
        match holders.misfit() {
            Some(why) => Err(Error::Refused(format!(
                "{why}, and other VMs hold theirs with partitions. Nothing was changed."
            ))),
            None => Ok(()),
        }
    }

    /// Partitions take a VM libvirt starts only once its vCPU cgroups exist (`started`);
    /// `kvmtune run`'s VMs from `prepare`.
    fn isolated_now(&self, ledger: &Ledger) -> CpuSet {
        ledger
            .vms
            .values()
            .filter(|vm| vm.kvmtune_run || vm.phase == Phase::Running)
            .fold(CpuSet::new(), |all, vm| all.union(&vm.isolate))
    }

    /// Partitions hold the isolated CPUs, not the housekeeping ones: their state is what must
    /// still read as set (their CPU lists follow the VMs held, and a VM's vCPU partitions go
    /// with its cgroups when it stops).
    fn drift(&self, fs: &dyn HostFs, change: &Change) -> Option<Vec<String>> {
        if !part_of_partition(change) {
            return None;
        }
        let mut out = Vec::new();
        match change {
            Change::CreateCgroup { path, .. } => partition_differs(fs, path, &mut out),
            Change::File { path, after, .. } if after == "isolated" => {
                if let Some((dir, _)) = path.rsplit_once('/').filter(|(d, _)| fs.exists(d)) {
                    partition_differs(fs, dir, &mut out);
                }
            }
            _ => {}
        }
        Some(out)
    }

    /// Partitions the VMs held should have and do not: a vCPU libvirt plugged (or pinned to
    /// another isolated CPU) since the last VM event. The changes are worked out, not made.
    fn not_in_place(
        &self,
        fs: &dyn HostFs,
        mounts: &CgroupMounts,
        holders: &Holders,
    ) -> Vec<String> {
        match changes(fs, mounts, holders) {
            Ok(changes) => changes
                .iter()
                .map(|c| format!("partition not in place: {c}"))
                .collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    fn holds_run_qemu(&self) -> bool {
        true
    }
}

/// Whether `change` is about a partition: kvmtune's cgroup or one of its files, or a partition
/// or exclusive-CPUs file anywhere.
fn part_of_partition(change: &Change) -> bool {
    let suffix = format!("/{PARTITION}");
    match change {
        Change::CreateCgroup { path, .. } => path.ends_with(&suffix),
        Change::File { path, .. } => path.rsplit_once('/').is_some_and(|(dir, file)| {
            dir.ends_with(&suffix) || file == PARTITION_FILE || file == EXCLUSIVE_FILE
        }),
        _ => false,
    }
}

/// A partition kvmtune made is gone or no longer a valid isolated one.
fn partition_differs(fs: &dyn HostFs, dir: &str, out: &mut Vec<String>) {
    let path = format!("{dir}/{PARTITION_FILE}");
    match fs.read(&path) {
        Ok(state) if state.trim() == "isolated" => {}
        Ok(state) => out.push(format!(
            "/{path} reads '{}', kvmtune set isolated",
            state.trim()
        )),
        Err(_) if !fs.exists(dir) => out.push(format!("the partition /{dir} is gone")),
        Err(e) => out.push(e.to_string()),
    }
}

/// Where kvmtune's partition is (relative to the root), on a host with cgroup v2.
pub fn path(mounts: &CgroupMounts) -> Option<String> {
    mounts.v2.as_ref().map(|root| format!("{root}/{PARTITION}"))
}

/// Whether partitions can hold the CPUs of `holders` here: the kernel offers isolated
/// partitions with exclusive CPU lists, and the VMs' threads are where kvmtune makes them.
/// `Err` says what is missing, in words for `kvmtune status` and the log.
/// - libvirt's VMs: in the scopes systemd-machined makes (`machine.slice/…scope/libvirt`), so
///   systemd must run. Without it libvirt lays its cgroups out otherwise, where kvmtune makes
///   no partition.
/// - `kvmtune run`'s VMs: without systemd. systemd takes the cpuset controller from the root's
///   children once no unit needs it (Debian 13: whenever the last VM's scope goes), and
///   kvmtune's own cgroup is no unit: its partition would go with the controller.
pub fn probe(fs: &dyn HostFs, mounts: &CgroupMounts, holders: &Holders) -> Result<(), String> {
    if !holders.libvirt.is_empty() && !mounts.systemd {
        return Err(
            "libvirt's VMs are not in systemd-machined's scopes here (systemd does not run)".into(),
        );
    }
    if let Some(why) = holders.misfit() {
        return Err(why);
    }
    if !holders.kvmtune_run.is_empty() && mounts.systemd {
        return Err(
            "systemd runs, and would take the cpuset controller from kvmtune's own partition"
                .into(),
        );
    }
    kernel_offers(fs, mounts)
}

/// Whether the kernel offers isolated partitions with exclusive CPU lists.
fn kernel_offers(fs: &dyn HostFs, mounts: &CgroupMounts) -> Result<(), String> {
    let root = match &mounts.v2 {
        Some(root) if mounts.v2_has_cpuset => root,
        _ => return Err("no cgroup v2 hierarchy with the cpuset controller".into()),
    };
    if mounts.v1_cpuset.is_some() {
        return Err("the cpuset controller is bound to cgroup v1".into());
    }
    if !fs.exists(&format!("{root}/{ROOT_ISOLATED}")) {
        return Err(format!(
            "the kernel has no isolated partitions (no /{root}/{ROOT_ISOLATED})"
        ));
    }
    // A child that has cpuset files shows whether the partition files come with them.
    for child in fs.list(root).unwrap_or_default() {
        let dir = format!("{root}/{child}");
        if !fs.exists(&format!("{dir}/cpuset.cpus")) {
            continue;
        }
        for file in [PARTITION_FILE, EXCLUSIVE_FILE] {
            if !fs.exists(&format!("{dir}/{file}")) {
                return Err(format!("the kernel has no /{dir}/{file}"));
            }
        }
        break;
    }
    Ok(())
}

/// Who holds the isolated CPUs, and so where the partitions go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holders {
    /// The CPUs of the VMs `kvmtune run` placed: kvmtune's own partition.
    pub kvmtune_run: CpuSet,
    /// The VMs libvirt placed, by name, with their isolated CPUs.
    pub libvirt: Vec<(String, CpuSet)>,
    /// libvirt's VMs whose pins partitions cannot hold, with why (`plan::partition_fit`).
    pub misfits: Vec<(String, String)>,
}

impl Holders {
    /// The first VM whose pins partitions cannot hold, in one phrase.
    pub fn misfit(&self) -> Option<String> {
        self.misfits.first().map(|(vm, why)| {
            format!("isolated partitions cannot hold VM '{vm}''s isolated CPUs: {why}")
        })
    }
}

/// The changes that give the holders their partitions, from the host's state now.
pub fn changes(fs: &dyn HostFs, mounts: &CgroupMounts, holders: &Holders) -> Result<Vec<Change>> {
    let root = mounts
        .v2
        .clone()
        .ok_or_else(|| Error::Host("the cgroup v2 hierarchy is no longer mounted".into()))?;
    refuse_shared_cpus(holders)?;
    let mut changes = own_partition(fs, &root, &holders.kvmtune_run)?;
    changes.extend(vcpu_partitions(fs, mounts, &root, &holders.libvirt)?);
    Ok(changes)
}

/// A CPU is in one partition at most: two VMs may not isolate the same CPU with partitions,
/// even where the policy lets them overlap (`cpus.overlap = "allow"`).
fn refuse_shared_cpus(holders: &Holders) -> Result<()> {
    let mut seen: Vec<(String, &CpuSet)> = Vec::new();
    if !holders.kvmtune_run.is_empty() {
        seen.push(("the VMs kvmtune run started".into(), &holders.kvmtune_run));
    }
    for (vm, cpus) in &holders.libvirt {
        for (other, theirs) in &seen {
            let shared = cpus.intersection(theirs);
            if !shared.is_empty() {
                return Err(Error::Refused(format!(
                    "VM '{vm}' and {other} both isolate CPUs {shared}, and an isolated partition cannot share a CPU. Nothing was changed."
                )));
            }
        }
        seen.push((format!("VM '{vm}'"), cpus));
    }
    Ok(())
}

/// kvmtune's partition holding `cpus`; given up (a member again) while no VM needs it.
fn own_partition(fs: &dyn HostFs, root: &str, cpus: &CpuSet) -> Result<Vec<Change>> {
    let ours = format!("{root}/{PARTITION}");
    let mut changes = Vec::new();
    if cpus.is_empty() {
        if fs.exists(&ours) {
            changes.extend(set_mode(fs, &ours, "member")?);
            changes.extend(file(fs, &format!("{ours}/{EXCLUSIVE_FILE}"), cpus)?);
        }
        return Ok(changes);
    }
    let control = fs.read(&format!("{root}/cgroup.subtree_control"))?;
    if !control.split_whitespace().any(|c| c == "cpuset") {
        changes.push(Change::Controller {
            cgroup: root.to_string(),
            controller: "cpuset".into(),
            enable: true,
        });
    }
    let list = cpus.to_string();
    if !fs.exists(&ours) {
        changes.push(Change::CreateCgroup {
            path: ours,
            parent: root.to_string(),
            settings: vec![
                ("cpuset.cpus".into(), list.clone()),
                (EXCLUSIVE_FILE.into(), list),
                (PARTITION_FILE.into(), "isolated".into()),
            ],
        });
        return Ok(changes);
    }
    // Widening: the CPUs first, then the exclusive list; narrowing: the other way round, so
    // that the exclusive list never names a CPU `cpuset.cpus` lacks.
    let exclusive = read_cpus(fs, &format!("{ours}/{EXCLUSIVE_FILE}"))?;
    let mut files = vec![
        file(fs, &format!("{ours}/cpuset.cpus"), cpus)?,
        file(fs, &format!("{ours}/{EXCLUSIVE_FILE}"), cpus)?,
    ];
    if !exclusive.is_subset(cpus) {
        files.reverse();
    }
    changes.extend(files.into_iter().flatten());
    changes.extend(set_mode(fs, &ours, "isolated")?);
    Ok(changes)
}

/// One isolated partition per vCPU cgroup of the libvirt VMs that run, each of the one CPU
/// the vCPU is pinned to, with the exclusive lists their ancestors need: parents first.
/// `machine.slice`'s list is the union of the CPUs of every libvirt VM held, from prepare to
/// release (kvmtune holds it while the method does): it follows the ledger, not which VMs'
/// cgroups exist at the moment, so that one VM's operation never gives back another's. A VM
/// whose cgroups are not there (prepared, not started; or stopped, not released) has no
/// partitions.
fn vcpu_partitions(
    fs: &dyn HostFs,
    mounts: &CgroupMounts,
    root: &str,
    vms: &[(String, CpuSet)],
) -> Result<Vec<Change>> {
    let machine = format!("{root}/{MACHINE_SLICE}");
    let mut exclusive: std::collections::BTreeMap<String, CpuSet> = Default::default();
    if fs.exists(&format!("{machine}/{EXCLUSIVE_FILE}")) {
        let all = vms
            .iter()
            .fold(CpuSet::new(), |all, (_, cpus)| all.union(cpus));
        exclusive.insert(machine.clone(), all);
    }
    let mut vcpus = Vec::new();
    for (vm, cpus) in vms {
        let Some(dir) = libvirt_cgroup(fs, mounts, vm) else {
            continue;
        };
        let pins = vcpu_pins(fs, &dir, vm, cpus)?;
        let mut ancestor = dir.clone();
        while ancestor.len() > root.len() {
            let held = exclusive.entry(ancestor.clone()).or_default();
            *held = held.union(cpus);
            ancestor = match ancestor.rsplit_once('/') {
                Some((parent, _)) => parent.to_string(),
                None => break,
            };
        }
        vcpus.extend(pins);
    }
    let mut changes = Vec::new();
    // A parent's path sorts before its children's: parents get their lists first.
    for (dir, cpus) in &exclusive {
        changes.extend(file(fs, &format!("{dir}/{EXCLUSIVE_FILE}"), cpus)?);
    }
    for (dir, cpu) in vcpus {
        changes.extend(file(fs, &format!("{dir}/{EXCLUSIVE_FILE}"), &cpu)?);
        changes.extend(set_mode(fs, &dir, "isolated")?);
    }
    Ok(changes)
}

/// libvirt's cgroup for VM `vm`'s threads on cgroup v2 (`…scope/libvirt`, whose `emulator`
/// holds the QEMU process), from its QEMU's cgroup; `None` while no QEMU names the VM.
pub fn libvirt_cgroup(fs: &dyn HostFs, mounts: &CgroupMounts, vm: &str) -> Option<String> {
    let root = mounts.v2.as_ref()?;
    qemu_of(fs, vm).into_iter().find_map(|pid| {
        let path = of_process(fs, pid).unified()?.to_string();
        let dir = path.strip_suffix("/emulator").unwrap_or(&path);
        (dir.contains(&format!("/{MACHINE_SLICE}/")) && dir.ends_with("/libvirt"))
            .then(|| format!("{root}{dir}"))
    })
}

/// The QEMU of libvirt's VM `vm`: the PID libvirt keeps in `/run/libvirt/qemu/NAME.pid` when
/// that process still names the VM (one read, whatever the host runs), else every process
/// whose command line names it.
fn qemu_of(fs: &dyn HostFs, vm: &str) -> Vec<u32> {
    // libvirt refuses '/' in a name; the ledger's names come from argv.
    let pid_file = format!("{LIBVIRT_RUN_DIR}/{vm}.pid");
    let recorded = (!vm.contains('/'))
        .then(|| fs.read(&pid_file).ok())
        .flatten()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .filter(|pid| names_vm_at(fs, *pid, vm));
    match recorded {
        Some(pid) => vec![pid],
        None => processes_naming(fs, vm),
    }
}

/// The vCPU cgroups under libvirt's `dir` that must become partitions, with their CPU: each
/// vCPU pinned inside the VM's isolated CPUs must be pinned to one CPU, or the VM cannot have
/// partitions. An isolated CPU without a vCPU cgroup yet (a vCPU plugged later: `<vcpu
/// current>` below the maximum) has nothing to hold: it gets its partition once the vCPU is
/// there, at the next look of `kvmtune watch` or the next VM event.
fn vcpu_pins(
    fs: &dyn HostFs,
    dir: &str,
    vm: &str,
    isolated: &CpuSet,
) -> Result<Vec<(String, CpuSet)>> {
    let mut pins = Vec::new();
    let mut covered = CpuSet::new();
    for name in fs.list(dir)? {
        if !name
            .strip_prefix("vcpu")
            .is_some_and(|n| n.parse::<u32>().is_ok())
        {
            continue;
        }
        let vcpu = format!("{dir}/{name}");
        let pin_path = format!("{vcpu}/cpuset.cpus");
        if !fs.exists(&pin_path) {
            return Err(Error::Refused(format!(
                "VM '{vm}': /{vcpu} has no cpuset files (libvirt pins none of its vCPUs); pin each vCPU to one isolated CPU. Nothing was changed."
            )));
        }
        let pin = read_cpus(fs, &pin_path)?;
        if pin.intersection(isolated).is_empty() {
            continue;
        }
        if pin.len() != 1 || !pin.is_subset(isolated) {
            return Err(Error::Refused(format!(
                "VM '{vm}': an isolated partition holds one vCPU on one CPU, but /{vcpu}/cpuset.cpus is {pin} (isolated CPUs {isolated}); pin each vCPU to one isolated CPU. Nothing was changed."
            )));
        }
        if !fs.exists(&format!("{vcpu}/{PARTITION_FILE}")) {
            return Err(Error::Refused(format!(
                "VM '{vm}': the kernel has no /{vcpu}/{PARTITION_FILE}. Nothing was changed."
            )));
        }
        if !pin.intersection(&covered).is_empty() {
            return Err(Error::Refused(format!(
                "VM '{vm}': two vCPUs are pinned to CPU {pin} (/{vcpu}/cpuset.cpus), and an isolated partition holds one vCPU per CPU. Nothing was changed."
            )));
        }
        covered = covered.union(&pin);
        pins.push((vcpu, pin));
    }
    Ok(pins)
}

/// The change of `dir`'s partition to `mode`, unless it reads so already. An invalid one
/// (`isolated invalid (…)`) is no partition to make again from: it counts as a member, and
/// making it isolated writes `member` first (`effects`). On 6.12 a remote partition a
/// sibling's `cpuset.cpus` invalidated keeps its CPUs out of every other cgroup, writing
/// `isolated` again leaves it invalid, and removing its cgroup so leaves those CPUs isolated
/// for good (seen on Debian 13 after `virsh emulatorpin --live` onto a vCPU's CPU); only
/// `member` gives them back.
fn set_mode(fs: &dyn HostFs, dir: &str, wanted: &str) -> Result<Option<Change>> {
    let path = format!("{dir}/{PARTITION_FILE}");
    let state = fs.read(&path)?;
    let now = if is_invalid(&state) && wanted != "member" {
        "member"
    } else {
        mode(&state)
    };
    Ok((now != wanted).then(|| Change::File {
        path,
        before: now.to_string(),
        after: wanted.to_string(),
    }))
}

/// Whether a partition state reads invalid (`isolated invalid (…)`).
pub fn is_invalid(state: &str) -> bool {
    state.split_whitespace().nth(1) == Some("invalid")
}

/// After the changes: is every partition a valid isolated one holding its CPUs, and do the
/// host's other tasks (the root cgroup's effective CPUs) stay off them?
pub fn check(fs: &dyn HostFs, mounts: &CgroupMounts, holders: &Holders) -> Result<()> {
    let root = mounts
        .v2
        .as_ref()
        .ok_or_else(|| Error::Host("the cgroup v2 hierarchy is no longer mounted".into()))?;
    let mut partitioned = CpuSet::new();
    if !holders.kvmtune_run.is_empty() {
        let ours = format!("{root}/{PARTITION}");
        check_state(fs, &ours, &holders.kvmtune_run)?;
        partitioned = partitioned.union(&holders.kvmtune_run);
    }
    for (vm, cpus) in &holders.libvirt {
        let Some(dir) = libvirt_cgroup(fs, mounts, vm) else {
            continue;
        };
        for (vcpu, cpu) in vcpu_pins(fs, &dir, vm, cpus)? {
            check_state(fs, &vcpu, &cpu)?;
            partitioned = partitioned.union(&cpu);
        }
    }
    let host_path = format!("{root}/cpuset.cpus.effective");
    let host = read_cpus(fs, &host_path)?;
    let shared = host.intersection(&partitioned);
    if !shared.is_empty() {
        return Err(Error::Refused(format!(
            "host tasks may still run on CPUs {shared} (/{host_path} reads {host}). Nothing was changed."
        )));
    }
    Ok(())
}

/// Once `change` is made: if it makes an isolated partition, whether the kernel reads it back
/// valid. The kernel does not fail the write of an invalid partition, and what follows must
/// not be made on top of one: moving kernel threads to the housekeeping CPUs fails (EINVAL)
/// when an operator's partition left the root only the CPUs ours failed to take.
pub fn read_back(fs: &dyn HostFs, change: &Change) -> Result<()> {
    let suffix = format!("/{PARTITION_FILE}");
    let dir = match change {
        Change::File { path, after, .. } if after == "isolated" => path.strip_suffix(&suffix),
        Change::CreateCgroup { path, settings, .. }
            if settings
                .iter()
                .any(|(file, value)| file == PARTITION_FILE && value == "isolated") =>
        {
            Some(path.as_str())
        }
        _ => None,
    };
    let Some(dir) = dir else {
        return Ok(());
    };
    let cpus = read_cpus(fs, &format!("{dir}/{EXCLUSIVE_FILE}"))?;
    check_state(fs, dir, &cpus)
}

/// Whether `change` makes, changes or removes a partition (or an exclusive list one needs).
pub fn touches_partitions(change: &Change) -> bool {
    match change {
        Change::File { path, .. } => {
            path.ends_with(&format!("/{PARTITION_FILE}"))
                || path.ends_with(&format!("/{EXCLUSIVE_FILE}"))
        }
        Change::CreateCgroup { settings, .. } => {
            settings.iter().any(|(file, _)| file == PARTITION_FILE)
        }
        Change::RemoveCgroup { path, .. } => path.ends_with(&format!("/{PARTITION}")),
        _ => false,
    }
}

/// The partition `dir` reads back as a valid isolated one of exactly `cpus`.
fn check_state(fs: &dyn HostFs, dir: &str, cpus: &CpuSet) -> Result<()> {
    let state_path = format!("{dir}/{PARTITION_FILE}");
    let state = fs.read(&state_path)?;
    let state = state.trim();
    if state != "isolated" {
        let why = match reason(state) {
            Some(why) => format!("{why} (/{state_path} reads '{} invalid')", mode(state)),
            None => format!("/{state_path} reads '{state}'"),
        };
        return Err(Error::Refused(format!(
            "the kernel does not make CPUs {cpus} an isolated partition: {why}. Nothing was changed."
        )));
    }
    let effective_path = format!("{dir}/cpuset.cpus.effective");
    let effective = read_cpus(fs, &effective_path)?;
    if effective != *cpus {
        return Err(Error::Refused(format!(
            "the isolated partition /{dir} should hold CPUs {cpus}, but /{effective_path} reads {effective}. Nothing was changed."
        )));
    }
    Ok(())
}

/// CPUs the root's `cpuset.cpus.isolated` lists that no valid isolated partition holds, with
/// that file's path: what a 6.12 kernel leaves when an invalid partition's cgroup goes (a VM
/// stopped before `kvmtune watch` turned its invalid partition into a member). No VM can be
/// pinned there until the host reboots (seen on Debian 13; taking the CPU offline and online
/// does not give it back). Reads the cgroup tree only when the root lists CPUs, and only where
/// cpuset is enabled (no partition can be below a cgroup without it).
pub fn stranded(fs: &dyn HostFs, mounts: &CgroupMounts) -> Option<(CpuSet, String)> {
    let root = mounts.v2.as_ref()?;
    let path = format!("{root}/{ROOT_ISOLATED}");
    let listed = read_cpus(fs, &path).ok()?;
    if listed.is_empty() {
        return None;
    }
    let mut held = CpuSet::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for name in fs.list(&dir).unwrap_or_default() {
            let child = format!("{dir}/{name}");
            // A file, or a cgroup without cpuset: no partition in or below it.
            let Ok(state) = fs.read(&format!("{child}/{PARTITION_FILE}")) else {
                continue;
            };
            if state.trim() == "isolated" {
                if let Ok(cpus) = read_cpus(fs, &format!("{child}/{EXCLUSIVE_FILE}.effective")) {
                    held = held.union(&cpus);
                }
            }
            dirs.push(child);
        }
    }
    let left = listed.difference(&held);
    (!left.is_empty()).then(|| (left, fs.display(&path).display().to_string()))
}

/// The CPUs host tasks may use while the partition holds: the root's effective CPUs.
pub fn host_cpus(fs: &dyn HostFs, mounts: &CgroupMounts) -> Option<CpuSet> {
    let root = mounts.v2.as_ref()?;
    CpuSet::parse(&fs.read(&format!("{root}/cpuset.cpus.effective")).ok()?).ok()
}

/// The kernel's reason in `isolated invalid (REASON)`.
pub fn reason(state: &str) -> Option<&str> {
    let (_, rest) = state.split_once(" invalid (")?;
    rest.strip_suffix(')')
}

/// The mode alone (`isolated` of `isolated invalid (…)`): what can be written back.
fn mode(state: &str) -> &str {
    state.split_whitespace().next().unwrap_or("member")
}

fn read_cpus(fs: &dyn HostFs, path: &str) -> Result<CpuSet> {
    let text = fs.read(path)?;
    CpuSet::parse(&text).map_err(|e| Error::parse(fs.display(path), &text, e))
}

fn file(fs: &dyn HostFs, path: &str, cpus: &CpuSet) -> Result<Option<Change>> {
    let now = read_cpus(fs, path)?;
    Ok((now != *cpus).then(|| Change::File {
        path: path.to_string(),
        before: now.to_string(),
        after: cpus.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_reason_is_read_from_an_invalid_state() {
        assert_eq!(
            reason("isolated invalid (Parent unable to distribute cpu downstream)"),
            Some("Parent unable to distribute cpu downstream")
        );
        assert_eq!(reason("isolated"), None);
    }

    #[test]
    fn an_invalid_state_writes_back_as_its_mode() {
        assert_eq!(
            mode("isolated invalid (Parent is not a partition root)"),
            "isolated"
        );
        assert_eq!(mode("member\n"), "member");
    }
}
