//! Devices and the CPU model: paravirtual disks and NICs with direct I/O, vhost and one queue
//! per vCPU; raw images under databases; the host's CPU passed through; kvmclock; KVM itself.

use super::Subject;
use crate::advisor::findings::{Finding, Severity};
use crate::domain::design::Disk;

pub const DISK_BUS: &str = "disk-bus";
pub const DISK_CACHE: &str = "disk-cache";
pub const DISK_IO: &str = "disk-io";
pub const DISK_QCOW2_DB: &str = "disk-qcow2-database";
pub const NIC_MODEL: &str = "nic-model";
pub const NIC_VHOST: &str = "nic-vhost";
pub const NIC_QUEUES: &str = "nic-queues";
pub const CPU_MODE: &str = "cpu-mode";
pub const DOMAIN_TYPE: &str = "domain-type";
pub const CLOCK: &str = "clock-kvmclock";

/// Words in a disk's file name or serial that say a database lives on it.
const DATABASE_WORDS: &[&str] = &[
    "db",
    "database",
    "sql",
    "mysql",
    "mariadb",
    "postgres",
    "postgresql",
    "pg",
    "pgdata",
    "oracle",
    "mongo",
    "mongodb",
    "redis",
    "cassandra",
    "wal",
];

pub fn check(s: &Subject, out: &mut Vec<Finding>) {
    for disk in s.design.disks.iter().filter(|d| d.device == "disk") {
        disk_rules(s, disk, out);
    }
    nics(s, out);
    cpu(s, out);
    clock(s, out);
}

/// The bus libvirt gives a disk without `bus`: from the target's prefix.
fn bus(disk: &Disk) -> String {
    if let Some(b) = &disk.bus {
        return b.clone();
    }
    let t = disk.target.as_str();
    let by_prefix = [
        ("vd", "virtio"),
        ("sd", "scsi"),
        ("hd", "ide"),
        ("xvd", "xen"),
    ];
    by_prefix
        .iter()
        .find(|(p, _)| t.starts_with(p))
        .map_or("ide", |(_, b)| b)
        .to_string()
}

fn driver_fix(format: &str) -> String {
    format!("<driver name='qemu' type='{format}' cache='none' io='native'/>")
}

fn disk_rules(s: &Subject, disk: &Disk, out: &mut Vec<Finding>) {
    let name = if disk.target.is_empty() {
        "disk".to_string()
    } else {
        format!("disk {}", disk.target)
    };
    let bus = bus(disk);
    let virtio_scsi = s.design.scsi_controllers.iter().any(|m| m == "virtio-scsi");
    if bus != "virtio" && !(bus == "scsi" && virtio_scsi) {
        let why = if bus == "scsi" {
            format!(
                "{name} is on a SCSI bus without a virtio-scsi controller: an emulated controller"
            )
        } else {
            format!("{name} is on bus '{bus}': an emulated controller, slower than virtio")
        };
        let letter = disk
            .target
            .chars()
            .last()
            .filter(char::is_ascii_lowercase)
            .unwrap_or('a');
        out.push(Finding::new(
            Severity::Warning,
            DISK_BUS,
            why,
            format!("<target dev='vd{letter}' bus='virtio'/>"),
        ));
    }
    let format = disk.format.clone().unwrap_or_else(|| "raw".into());
    let direct = matches!(disk.cache.as_deref(), Some("none" | "directsync"));
    if !direct && !disk.readonly {
        out.push(Finding::new(
            Severity::Warning,
            DISK_CACHE,
            format!(
                "{name} has cache='{}': every write goes through the host page cache, which costs host memory and hides errors",
                disk.cache.as_deref().unwrap_or("default (writeback)")
            ),
            driver_fix(&format),
        ));
    }
    match disk.io.as_deref() {
        Some("native") if !direct => out.push(Finding::new(
            Severity::Error,
            DISK_IO,
            format!("{name} has io='native' without cache='none' or 'directsync': QEMU refuses to start"),
            driver_fix(&format),
        )),
        Some("native" | "io_uring") => {}
        io if !disk.readonly => out.push(Finding::new(
            Severity::Info,
            DISK_IO,
            format!(
                "{name} has io='{}': a pool of QEMU threads does the I/O; io='native' (or 'io_uring') submits it directly",
                io.unwrap_or("default (threads)")
            ),
            driver_fix(&format),
        )),
        _ => {}
    }
    if format == "qcow2" && looks_like_database(disk) {
        let source = disk.source.clone().unwrap_or_else(|| "IMAGE.qcow2".into());
        out.push(Finding::new(
            Severity::Warning,
            DISK_QCOW2_DB,
            format!("{name} ({source}) looks like a database disk and is qcow2: allocation and copy-on-write add latency to every synchronous write"),
            format!("<!-- qemu-img convert -O raw {source} {}.raw -->\n{}", source.trim_end_matches(".qcow2"), driver_fix("raw")),
        ));
    }
}

fn looks_like_database(disk: &Disk) -> bool {
    let file = disk
        .source
        .as_deref()
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .unwrap_or("");
    let serial = disk.serial.as_deref().unwrap_or("");
    [file, serial].iter().any(|text| {
        text.to_ascii_lowercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| DATABASE_WORDS.contains(&w))
    })
}

fn nics(s: &Subject, out: &mut Vec<Finding>) {
    let vcpus = s.domain.vcpus;
    for nic in &s.design.interfaces {
        if matches!(nic.kind.as_str(), "hostdev" | "vdpa") {
            continue; // the device itself, not an emulated NIC
        }
        let name = if nic.label.is_empty() {
            format!("interface type='{}'", nic.kind)
        } else {
            format!("interface {}", nic.label)
        };
        let virtio = nic.model.as_deref() == Some("virtio");
        if !virtio {
            out.push(Finding::new(
                Severity::Warning,
                NIC_MODEL,
                format!(
                    "{name} has model '{}': an emulated NIC, slower than virtio-net",
                    nic.model.as_deref().unwrap_or("default (emulated)")
                ),
                "<model type='virtio'/>".into(),
            ));
            continue;
        }
        let queues = nic.queues.unwrap_or(1);
        let driver = if vcpus > 1 {
            format!("<driver name='vhost' queues='{vcpus}'/>")
        } else {
            "<driver name='vhost'/>".to_string()
        };
        if nic.kind == "user" {
            out.push(Finding::new(
                Severity::Warning,
                NIC_VHOST,
                format!(
                    "{name} is user-mode networking (SLIRP): no vhost, every packet through QEMU"
                ),
                "<interface type='bridge'>  <!-- or type='network' -->".into(),
            ));
            continue;
        }
        if nic.driver.as_deref() == Some("qemu") {
            out.push(Finding::new(
                Severity::Warning,
                NIC_VHOST,
                format!("{name} has driver name='qemu': packets go through QEMU's userspace, not vhost-net"),
                driver.clone(),
            ));
        }
        if vcpus > 1 && queues != vcpus && nic.kind != "vhostuser" {
            out.push(Finding::new(
                Severity::Warning,
                NIC_QUEUES,
                format!("{name} has {queues} queue(s) for {vcpus} vCPUs: one queue per vCPU spreads packet work over them"),
                driver,
            ));
        }
    }
}

fn cpu(s: &Subject, out: &mut Vec<Finding>) {
    if s.design.domain_type != "kvm" {
        out.push(Finding::new(
            Severity::Info,
            DOMAIN_TYPE,
            format!(
                "domain type='{}' is emulated (TCG): every guest instruction is translated; type='kvm' runs it on the CPU",
                s.design.domain_type
            ),
            "<domain type='kvm'>".into(),
        ));
        return; // host-passthrough needs KVM
    }
    let mode = s.design.cpu_mode.as_deref().unwrap_or("custom");
    // `maximum` is host-passthrough under KVM (libvirt ≥ 7.1).
    if matches!(mode, "host-passthrough" | "maximum") {
        return;
    }
    let (severity, why) = if mode == "host-model" {
        (
            Severity::Info,
            "CPU mode 'host-model' hides some host CPU features (it keeps migration across CPU generations possible)".to_string(),
        )
    } else {
        (
            Severity::Warning,
            format!(
                "CPU mode '{mode}' gives the guest a named CPU model, without the host's features"
            ),
        )
    };
    let keep = if s.domain.cells.is_empty() {
        ""
    } else {
        "  <!-- keep its <numa> and <topology> -->"
    };
    out.push(Finding::new(
        severity,
        CPU_MODE,
        why,
        format!("<cpu mode='host-passthrough' check='none' migratable='on'>{keep}"),
    ));
}

fn clock(s: &Subject, out: &mut Vec<Finding>) {
    let off = |name: &str| {
        s.design
            .timers
            .iter()
            .any(|t| t.name == name && t.present == Some(false))
    };
    let on = |name: &str| {
        s.design
            .timers
            .iter()
            .any(|t| t.name == name && t.present == Some(true))
    };
    if off("kvmclock") && !on("hypervclock") {
        out.push(Finding::new(
            Severity::Warning,
            CLOCK,
            "<timer name='kvmclock' present='no'>: the guest falls back to a slower or less stable clocksource".into(),
            "<timer name='kvmclock' present='yes'/>".into(),
        ));
    }
}
