//! The rest of a domain's design that only the advisor (`kvmtune check`) judges: disks, NICs,
//! the balloon, the CPU model, timers, iothreads, memtune. The hook never reads this: it stays
//! fast and strict about what it acts on, while this view is lenient — a value it cannot read
//! is `None` (and judged as libvirt's default), never an error.

use super::xml::Element;
use crate::cpulist::CpuSet;
use crate::size::libvirt_bytes;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Design {
    /// `<domain type>`: `kvm`, or `qemu` (TCG emulation).
    pub domain_type: String,
    /// `<domain id>`: only the live XML of a running domain has one.
    pub live_id: Option<u32>,
    /// `<cpu mode>`; `None` without `<cpu>` or `mode` (libvirt's default, `custom`).
    pub cpu_mode: Option<String>,
    /// `<cpu><numa><cell cpus>`, by cell id: the guest vCPUs of each guest NUMA cell.
    pub cell_cpus: Vec<(u32, CpuSet)>,
    pub disks: Vec<Disk>,
    /// Models of `<controller type='scsi'>` (a `bus='scsi'` disk is virtio behind virtio-scsi).
    pub scsi_controllers: Vec<String>,
    pub interfaces: Vec<Interface>,
    /// `<memballoon model>`; `None` when absent, which libvirt turns into a virtio balloon.
    pub balloon: Option<String>,
    /// `<clock><timer name present>`.
    pub timers: Vec<Timer>,
    /// `<iothreads>N</iothreads>`.
    pub iothreads: u32,
    /// `<cputune><iothreadpin iothread cpuset>`.
    pub iothreadpins: Vec<(u32, CpuSet)>,
    /// `<memtune><hard_limit>` in bytes.
    pub hard_limit: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    /// `device`: `disk` (the default), `cdrom`, `floppy`, `lun`.
    pub device: String,
    /// `<target dev>`, e.g. `vda`.
    pub target: String,
    /// `<target bus>`.
    pub bus: Option<String>,
    /// `<driver type>`: `raw`, `qcow2`…
    pub format: Option<String>,
    pub cache: Option<String>,
    pub io: Option<String>,
    /// `<source file|dev|name|volume>`.
    pub source: Option<String>,
    /// `<serial>`.
    pub serial: Option<String>,
    pub readonly: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// `type`: `network`, `bridge`, `direct`, `user`, `hostdev`, `vhostuser`…
    pub kind: String,
    /// `<model type>`; `None` leaves the choice to QEMU (an emulated NIC).
    pub model: Option<String>,
    /// `<driver name>`: `vhost` (the default for virtio) or `qemu` (userspace).
    pub driver: Option<String>,
    /// `<driver queues>`.
    pub queues: Option<u32>,
    /// `<mac address>` or `<target dev>`, to name it in a message.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub name: String,
    /// `present='yes|no'`; `None` when not said.
    pub present: Option<bool>,
}

impl Design {
    /// Read the design from a parsed `<domain>`; never fails.
    pub fn from_root(root: &Element) -> Design {
        let devices = root.child("devices");
        let all = |name: &'static str| {
            devices
                .into_iter()
                .flat_map(move |d| d.children_named(name))
        };
        let cputune = root.child("cputune");
        Design {
            domain_type: root.attr("type").unwrap_or_default().to_string(),
            live_id: root.attr("id").and_then(|i| i.trim().parse().ok()),
            cpu_mode: root
                .child("cpu")
                .and_then(|c| c.attr("mode"))
                .map(str::to_string),
            cell_cpus: root
                .path(&["cpu", "numa"])
                .map(|numa| {
                    numa.children_named("cell")
                        .enumerate()
                        .filter_map(|(i, c)| {
                            let id = c
                                .attr("id")
                                .map_or(Some(i as u32), |v| v.trim().parse().ok())?;
                            Some((id, CpuSet::parse(c.attr("cpus")?).ok()?))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            disks: all("disk").map(disk).collect(),
            scsi_controllers: all("controller")
                .filter(|c| c.attr("type") == Some("scsi"))
                .map(|c| c.attr("model").unwrap_or_default().to_string())
                .collect(),
            interfaces: all("interface").map(interface).collect(),
            balloon: all("memballoon")
                .next()
                .map(|b| b.attr("model").unwrap_or_default().to_string()),
            timers: root
                .child("clock")
                .map(|c| {
                    c.children_named("timer")
                        .map(|t| Timer {
                            name: t.attr("name").unwrap_or_default().to_string(),
                            present: t.attr("present").map(|p| p == "yes"),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            iothreads: root
                .child("iothreads")
                .and_then(|i| i.text().parse().ok())
                .unwrap_or(0),
            iothreadpins: cputune
                .map(|c| {
                    c.children_named("iothreadpin")
                        .filter_map(|p| {
                            Some((
                                p.attr("iothread")?.trim().parse().ok()?,
                                CpuSet::parse(p.attr("cpuset")?).ok()?,
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            hard_limit: root
                .path(&["memtune", "hard_limit"])
                .and_then(|h| libvirt_bytes(h.text(), h.attr("unit"), "KiB").ok()),
        }
    }

    /// Host CPUs given to iothreads by `<iothreadpin>`.
    pub fn iothread_cpus(&self) -> CpuSet {
        self.iothreadpins
            .iter()
            .fold(CpuSet::new(), |acc, (_, s)| acc.union(s))
    }
}

fn disk(el: &Element) -> Disk {
    let driver = el.child("driver");
    let target = el.child("target");
    let source = el.child("source").and_then(|s| {
        ["file", "dev", "name", "volume"]
            .iter()
            .find_map(|a| s.attr(a))
            .map(str::to_string)
    });
    Disk {
        device: el.attr("device").unwrap_or("disk").to_string(),
        target: target
            .and_then(|t| t.attr("dev"))
            .unwrap_or_default()
            .to_string(),
        bus: target.and_then(|t| t.attr("bus")).map(str::to_string),
        format: driver.and_then(|d| d.attr("type")).map(str::to_string),
        cache: driver.and_then(|d| d.attr("cache")).map(str::to_string),
        io: driver.and_then(|d| d.attr("io")).map(str::to_string),
        source,
        serial: el.child("serial").map(|s| s.text().to_string()),
        readonly: el.child("readonly").is_some(),
    }
}

fn interface(el: &Element) -> Interface {
    let driver = el.child("driver");
    let label = el
        .child("mac")
        .and_then(|m| m.attr("address"))
        .or_else(|| el.child("target").and_then(|t| t.attr("dev")))
        .unwrap_or_default()
        .to_string();
    Interface {
        kind: el.attr("type").unwrap_or_default().to_string(),
        model: el
            .child("model")
            .and_then(|m| m.attr("type"))
            .map(str::to_string),
        driver: driver.and_then(|d| d.attr("name")).map(str::to_string),
        queues: driver
            .and_then(|d| d.attr("queues"))
            .and_then(|q| q.trim().parse().ok()),
        label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn design(xml: &str) -> Design {
        Design::from_root(&crate::domain::xml::parse(xml).unwrap())
    }

    #[test]
    fn devices_cpu_clock_and_tuning_are_read() {
        let d = design(
            "<domain type='kvm'><iothreads>2</iothreads>\
             <memtune><hard_limit unit='GiB'>5</hard_limit></memtune>\
             <cputune><iothreadpin iothread='1' cpuset='0-1'/></cputune>\
             <cpu mode='host-passthrough'><numa><cell id='0' cpus='0-3' memory='1'/></numa></cpu>\
             <clock offset='utc'><timer name='kvmclock' present='no'/><timer name='rtc'/></clock>\
             <devices>\
               <disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none' io='native'/>\
                 <source file='/var/lib/pg.qcow2'/><target dev='vda' bus='virtio'/><serial>db</serial></disk>\
               <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>\
               <controller type='scsi' model='virtio-scsi'/>\
               <interface type='bridge'><mac address='52:54:00:00:00:01'/><model type='virtio'/>\
                 <driver name='vhost' queues='4'/></interface>\
               <memballoon model='none'/>\
             </devices></domain>",
        );
        assert_eq!(d.domain_type, "kvm");
        assert_eq!(d.cpu_mode.as_deref(), Some("host-passthrough"));
        assert_eq!(d.cell_cpus, vec![(0, CpuSet::parse("0-3").unwrap())]);
        assert_eq!(d.iothreads, 2);
        assert_eq!(d.iothread_cpus(), CpuSet::parse("0-1").unwrap());
        assert_eq!(d.hard_limit, Some(5 << 30));
        assert_eq!(
            d.timers[0],
            Timer {
                name: "kvmclock".into(),
                present: Some(false)
            }
        );
        assert_eq!(d.timers[1].present, None);
        assert_eq!(d.disks.len(), 2);
        assert_eq!(d.disks[0].format.as_deref(), Some("qcow2"));
        assert_eq!(d.disks[0].source.as_deref(), Some("/var/lib/pg.qcow2"));
        assert_eq!(d.disks[0].serial.as_deref(), Some("db"));
        assert_eq!(d.disks[1].device, "cdrom");
        assert!(d.disks[1].readonly);
        assert_eq!(d.scsi_controllers, vec!["virtio-scsi".to_string()]);
        assert_eq!(d.interfaces[0].queues, Some(4));
        assert_eq!(d.interfaces[0].label, "52:54:00:00:00:01");
        assert_eq!(d.balloon.as_deref(), Some("none"));
    }

    #[test]
    fn what_cannot_be_read_is_left_unsaid_not_an_error() {
        let d = design(
            "<domain><iothreads>many</iothreads><memtune><hard_limit>x</hard_limit></memtune>\
             <cputune><iothreadpin iothread='a' cpuset='0'/></cputune><devices><disk/></devices></domain>",
        );
        assert_eq!(d.iothreads, 0);
        assert_eq!(d.hard_limit, None);
        assert!(d.iothreadpins.is_empty());
        assert_eq!(d.disks[0].device, "disk");
        assert_eq!(d.balloon, None);
    }
}
