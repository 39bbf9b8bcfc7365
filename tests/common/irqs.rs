//! The part of the fake kernel that models IRQs: `/proc/irq/N/smp_affinity_list` with the
//! kernel's refusals (a managed IRQ: EIO; a mask without an online CPU: EINVAL; an IRQ freed
//! meanwhile: ENOENT), an effective affinity narrower than asked (x86 delivers to one CPU),
//! `default_smp_affinity`, `/proc/interrupts`, PCI devices' `msi_irqs/` and `irq`, VFIO vectors
//! that appear only in /proc/interrupts, and a running irqbalance.

use std::collections::BTreeMap;

use kvmtune::cpulist::CpuSet;

use super::cgroupfs::Errno;

#[derive(Debug, Clone)]
pub struct Irq {
    pub name: String,
    pub affinity: CpuSet,
    pub managed: bool,
    /// The PCI device it belongs to, and whether it shows in its `msi_irqs/`.
    pub device: Option<(String, bool)>,
}

#[derive(Debug, Clone)]
pub struct IrqModel {
    pub online: CpuSet,
    pub irqs: BTreeMap<u32, Irq>,
    pub default_affinity: CpuSet,
    /// An IRQ that is freed when kvmtune first writes it (freed between listing and writing).
    pub vanish_on_write: Option<u32>,
    /// irqbalance's banned CPUs; `None`: irqbalance does not run.
    pub irqbalance: Option<CpuSet>,
    /// Like the real irqbalance: a `settings cpus` takes effect at its next round
    /// (`irqbalance_round`), and `setup` answers the set in effect until then.
    pub irqbalance_waits_for_round: bool,
    /// The set told but not yet in effect.
    pub irqbalance_told: Option<CpuSet>,
    /// The running irqbalance's PID (its socket's name); another after `irqbalance_restart`.
    pub irqbalance_pid: u32,
}

impl IrqModel {
    /// One of irqbalance's rounds: what it was told is in effect from now on.
    pub fn irqbalance_round(&mut self) {
        if let Some(told) = self.irqbalance_told.take() {
            self.irqbalance = Some(told);
        }
    }

    /// irqbalance restarted (a package upgrade): another process, from its own set `own`,
    /// knowing nothing its predecessor was told.
    pub fn irqbalance_restart(&mut self, own: CpuSet) {
        self.irqbalance_pid += 1;
        self.irqbalance = Some(own);
        self.irqbalance_told = None;
    }

    /// IRQs 10-13 of ordinary devices on every CPU, IRQ 14 managed (a per-queue NVMe vector),
    /// and the passthrough device 0000:06:00.0 with MSI-X vectors 40-41 and INTx 16.
    pub fn new(online: CpuSet) -> IrqModel {
        let mut irqs = BTreeMap::new();
        for n in 10..14 {
            irqs.insert(
                n,
                Irq {
                    name: format!("dev{n}"),
                    affinity: online.clone(),
                    managed: false,
                    device: None,
                },
            );
        }
        irqs.insert(
            14,
            Irq {
                name: "nvme0q1".into(),
                affinity: online.clone(),
                managed: true,
                device: None,
            },
        );
        for n in [40, 41] {
            irqs.insert(
                n,
                Irq {
                    name: format!("vfio-msix[{}](0000:06:00.0)", n - 40),
                    affinity: online.clone(),
                    managed: false,
                    device: Some(("0000:06:00.0".into(), true)),
                },
            );
        }
        irqs.insert(
            16,
            Irq {
                name: "vfio-intx(0000:06:00.0)".into(),
                affinity: online.clone(),
                managed: false,
                device: Some(("0000:06:00.0".into(), false)),
            },
        );
        IrqModel {
            default_affinity: online.clone(),
            online,
            irqs,
            vanish_on_write: None,
            irqbalance: None,
            irqbalance_waits_for_round: false,
            irqbalance_told: None,
            irqbalance_pid: 4242,
        }
    }

    /// The guest enabled MSI-X: new VFIO vectors show in /proc/interrupts only.
    pub fn add_vfio_vectors(&mut self, bdf: &str, numbers: &[u32]) {
        for (i, n) in numbers.iter().enumerate() {
            self.irqs.insert(
                *n,
                Irq {
                    name: format!("vfio-msix[{}]({bdf})", i + 2),
                    affinity: self.online.clone(),
                    managed: false,
                    device: Some((bdf.to_string(), false)),
                },
            );
        }
    }

    pub fn remove_vectors(&mut self, numbers: &[u32]) {
        for n in numbers {
            self.irqs.remove(n);
        }
    }

    pub fn write(&mut self, rel: &str, value: &str) -> Option<Result<(), Errno>> {
        if rel == "proc/irq/default_smp_affinity" {
            let mask = CpuSet::parse_mask(value).map_err(|_| libc::EINVAL);
            return Some(mask.and_then(|m| {
                if m.intersection(&self.online).is_empty() {
                    return Err(libc::EINVAL);
                }
                self.default_affinity = m;
                Ok(())
            }));
        }
        let n: u32 = rel
            .strip_prefix("proc/irq/")?
            .strip_suffix("/smp_affinity_list")?
            .parse()
            .ok()?;
        if self.vanish_on_write == Some(n) {
            self.vanish_on_write = None;
            self.irqs.remove(&n);
            return Some(Err(libc::ENOENT));
        }
        let Some(irq) = self.irqs.get_mut(&n) else {
            return Some(Err(libc::ENOENT));
        };
        if irq.managed {
            return Some(Err(libc::EIO));
        }
        let cpus = match CpuSet::parse(value) {
            Ok(c) if !c.intersection(&self.online).is_empty() => c,
            _ => return Some(Err(libc::EINVAL)),
        };
        irq.affinity = cpus;
        Some(Ok(()))
    }

    pub fn files(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut interrupts = String::from("           CPU0       CPU1\n");
        for (n, irq) in &self.irqs {
            out.push((
                format!("proc/irq/{n}/smp_affinity_list"),
                format!("{}\n", irq.affinity),
            ));
            // Delivered to one CPU of the mask, as x86 does.
            let effective = irq
                .affinity
                .intersection(&self.online)
                .first()
                .map(|c| c.to_string())
                .unwrap_or_default();
            out.push((
                format!("proc/irq/{n}/effective_affinity_list"),
                format!("{effective}\n"),
            ));
            interrupts.push_str(&format!(
                "{n:>4}:          0          0  PCI-MSIX  {}\n",
                irq.name
            ));
            if let Some((bdf, in_msi)) = &irq.device {
                if *in_msi {
                    out.push((
                        format!("sys/bus/pci/devices/{bdf}/msi_irqs/{n}"),
                        "msix\n".into(),
                    ));
                }
            }
        }
        out.push(("sys/bus/pci/devices/0000:06:00.0/irq".into(), "16\n".into()));
        out.push((
            "proc/irq/default_smp_affinity".into(),
            format!("{}\n", self.default_affinity.to_mask(1)),
        ));
        out.push(("proc/interrupts".into(), interrupts));
        out
    }
}
