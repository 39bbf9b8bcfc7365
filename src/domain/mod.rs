//! The parts of libvirt's domain XML that decide what a VM needs from the host: memory and its
//! backing, NUMA cells and bindings, vCPU pins, PCI passthrough devices, and our `<metadata>`.
//! Everything else in the document is ignored.

pub mod design;
pub mod metadata;
pub mod xml;

use std::fmt;

use crate::cpulist::CpuSet;
use crate::error::{Error, Result};
use crate::size::libvirt_bytes;
pub use design::Design;
pub use metadata::Tune;
use xml::Element;

#[derive(Debug, Clone, Default)]
pub struct Domain {
    pub name: String,
    /// `<memory>`: the guest's maximum boot memory.
    pub memory_bytes: u64,
    /// `<memoryBacking><hugepages>`: `None` when the VM is not hugepage-backed.
    pub hugepages: Option<Vec<PageSpec>>,
    pub locked: bool,
    pub nosharepages: bool,
    pub numatune: NumaTune,
    /// `<cpu><numa><cell>`: the guest's NUMA nodes.
    pub cells: Vec<GuestCell>,
    pub vcpus: u32,
    /// `<vcpu cpuset>`: host CPUs for every vCPU without its own pin.
    pub vcpu_cpuset: Option<CpuSet>,
    /// `<cputune><vcpupin vcpu cpuset>`.
    pub vcpupins: Vec<(u32, CpuSet)>,
    pub emulatorpin: Option<CpuSet>,
    /// `<devices><hostdev mode='subsystem' type='pci'>` source addresses.
    pub hostdevs: Vec<PciAddress>,
    pub tune: Tune,
}

/// `<page size unit nodeset>`: the page size for some (or all) guest NUMA cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSpec {
    pub size_kib: u64,
    /// Guest cell ids this size applies to; `None` = every cell without a size of its own.
    pub cells: Option<CpuSet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemMode {
    Strict,
    Preferred,
    Interleave,
    Restrictive,
}

/// A memory binding to host nodes: `<numatune><memory>` or one `<memnode>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBinding {
    pub mode: MemMode,
    /// `None` with `placement='auto'` (numad decides later): treated as unbound.
    pub nodeset: Option<CpuSet>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NumaTune {
    pub memory: Option<NodeBinding>,
    /// `<memnode cellid>` bindings, by guest cell id.
    pub memnodes: Vec<(u32, NodeBinding)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestCell {
    pub id: u32,
    pub memory_bytes: u64,
}

/// A PCI address, validated field by field: it is the only part of a hostdev that reaches a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
}

/// The fields of a PCI address and their largest values, in order.
const PCI_FIELDS: [(&str, u32); 4] = [
    ("domain", 0xffff),
    ("bus", 0xff),
    ("slot", 0x1f),
    ("function", 7),
];

impl PciAddress {
    fn from_values([domain, bus, slot, function]: [u32; 4]) -> PciAddress {
        PciAddress {
            domain: domain as u16,
            bus: bus as u8,
            slot: slot as u8,
            function: function as u8,
        }
    }

    /// libvirt's form, `<address domain='0x0000' bus='0x06' slot='0x00' function='0x0'/>`: each
    /// attribute a number (hexadecimal with `0x`, else decimal), a missing one 0.
    pub fn from_attributes<'a>(
        attr: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<PciAddress, String> {
        let mut values = [0; 4];
        for (slot, (name, max)) in values.iter_mut().zip(PCI_FIELDS) {
            let raw = attr(name).unwrap_or("0");
            let value = match raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
                Some(hex) => u32::from_str_radix(hex, 16),
                None => raw.parse(),
            }
            .map_err(|_| format!("hostdev address {name}='{raw}' is not a number"))?;
            if value > max {
                return Err(format!("hostdev address {name}='{raw}' is out of range"));
            }
            *slot = value;
        }
        Ok(PciAddress::from_values(values))
    }
}

/// The kernel's and QEMU's form, `[DDDD:]BB:SS.F` in hexadecimal (a missing domain is 0), as
/// in `/sys/bus/pci/devices/0000:06:00.0` and `-device vfio-pci,host=06:00.0`.
impl std::str::FromStr for PciAddress {
    type Err = crate::error::BadValue;

    fn from_str(text: &str) -> Result<PciAddress, Self::Err> {
        const EXPECTED: &str = "a PCI address [DDDD:]BB:SS.F";
        let text = text.trim();
        let bad = || crate::error::BadValue::new(text, EXPECTED);
        let (rest, function) = text.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let fields = match parts.as_slice() {
            [bus, slot] => ["0", bus, slot, function],
            [domain, bus, slot] => [*domain, bus, slot, function],
            _ => return Err(bad()),
        };
        let mut values = [0; 4];
        for ((slot, field), (name, max)) in values.iter_mut().zip(fields).zip(PCI_FIELDS) {
            let hex = !field.is_empty() && field.bytes().all(|b| b.is_ascii_hexdigit());
            *slot = u32::from_str_radix(field, 16)
                .ok()
                .filter(|v| hex && *v <= max)
                .ok_or_else(|| {
                    crate::error::BadValue::because(
                        text,
                        EXPECTED,
                        format!("{name} '{field}' is not a hex number up to {max:x}"),
                    )
                })?;
        }
        Ok(PciAddress::from_values(values))
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.slot, self.function
        )
    }
}

/// As its text (`0000:06:00.0`), in the ledger and in `kvmtune plan --json`; read back through
/// `FromStr`, so a damaged ledger cannot put anything else into a path.
impl serde::Serialize for PciAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PciAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Domain {
    /// Parse a domain XML document (as libvirt hands it to the hook, or `virsh dumpxml` prints).
    pub fn parse(text: &str) -> Result<Domain> {
        let root = xml::parse(text).map_err(Error::Domain)?;
        if root.name != "domain" || root.ns.is_some() {
            return Err(Error::Domain(format!(
                "the XML's root element is <{}>, not <domain>",
                root.name
            )));
        }
        from_root(&root).map_err(Error::Domain)
    }

    /// Parse the document once into the model the hook acts on and the advisor's lenient view
    /// of the rest. libvirt's status files (`/run/libvirt/qemu/NAME.xml`) wrap the domain in
    /// `<domstatus>`; that wrapper is accepted here too.
    pub fn parse_with_design(text: &str) -> Result<(Domain, Design)> {
        let root = xml::parse(text).map_err(Error::Domain)?;
        let root = match (root.name.as_str(), root.ns.is_none()) {
            ("domstatus", true) => root
                .child("domain")
                .cloned()
                .ok_or_else(|| Error::Domain("the XML's <domstatus> holds no <domain>".into()))?,
            ("domain", true) => root,
            _ => {
                return Err(Error::Domain(format!(
                    "the XML's root element is <{}>, not <domain>",
                    root.name
                )))
            }
        };
        let domain = from_root(&root).map_err(Error::Domain)?;
        Ok((domain, Design::from_root(&root)))
    }

    /// The `<numatune>` binding of a guest cell's memory (its `<memnode>`), else of the whole
    /// memory (`<memory>`); `None` when the VM binds neither.
    pub fn memory_binding(&self, cell: Option<u32>) -> Option<&NodeBinding> {
        cell.and_then(|id| {
            self.numatune
                .memnodes
                .iter()
                .find(|(c, _)| *c == id)
                .map(|(_, b)| b)
        })
        .or(self.numatune.memory.as_ref())
    }

    /// The VM's memory in the units it is placed by: each guest NUMA cell with its id, or the
    /// whole memory (no id) when the guest has no cells.
    pub fn memory_units(&self) -> Vec<(Option<u32>, u64)> {
        if self.cells.is_empty() {
            vec![(None, self.memory_bytes)]
        } else {
            self.cells
                .iter()
                .map(|c| (Some(c.id), c.memory_bytes))
                .collect()
        }
    }

    /// Host CPUs the vCPUs may run on, from `<vcpupin>`s, else `<vcpu cpuset>`; empty if unpinned.
    pub fn vcpu_host_cpus(&self) -> CpuSet {
        if !self.vcpupins.is_empty() {
            let mut all = self
                .vcpupins
                .iter()
                .fold(CpuSet::new(), |acc, (_, set)| acc.union(set));
            // vCPUs without a pin of their own float over <vcpu cpuset>.
            if (self.vcpupins.len() as u32) < self.vcpus {
                if let Some(set) = &self.vcpu_cpuset {
                    all = all.union(set);
                }
            }
            return all;
        }
        self.vcpu_cpuset.clone().unwrap_or_default()
    }
}

fn from_root(root: &Element) -> Result<Domain, String> {
    let name = root
        .child("name")
        .map(|n| n.text().to_string())
        .unwrap_or_default();
    let memory_bytes = match root.child("memory") {
        Some(m) => scaled(m, "<memory>")?,
        None => 0,
    };
    let backing = root.child("memoryBacking");
    let hugepages = backing
        .and_then(|b| b.child("hugepages"))
        .map(page_specs)
        .transpose()?;
    let vcpu = root.child("vcpu");
    let vcpus = match vcpu {
        Some(v) if !v.text().is_empty() => v
            .text()
            .parse()
            .map_err(|_| format!("<vcpu>{}</vcpu> is not a number", v.text()))?,
        _ => 1,
    };
    let cputune = root.child("cputune");
    Ok(Domain {
        name,
        memory_bytes,
        hugepages,
        locked: backing.and_then(|b| b.child("locked")).is_some(),
        nosharepages: backing.and_then(|b| b.child("nosharepages")).is_some(),
        numatune: numatune(root.child("numatune"))?,
        cells: cells(root)?,
        vcpus,
        vcpu_cpuset: vcpu
            .and_then(|v| v.attr("cpuset"))
            .map(|s| list(s, "<vcpu cpuset>"))
            .transpose()?,
        vcpupins: cputune
            .map(|c| {
                c.children_named("vcpupin")
                    .map(|p| {
                        let id = number(p.attr("vcpu"), "<vcpupin vcpu>")?;
                        let set = list(p.attr("cpuset").unwrap_or(""), "<vcpupin cpuset>")?;
                        Ok((id, set))
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .transpose()?
            .unwrap_or_default(),
        emulatorpin: cputune
            .and_then(|c| c.child("emulatorpin"))
            .and_then(|e| e.attr("cpuset"))
            .map(|s| list(s, "<emulatorpin cpuset>"))
            .transpose()?,
        hostdevs: hostdevs(root)?,
        tune: metadata::parse(root)?,
    })
}

fn page_specs(hugepages: &Element) -> Result<Vec<PageSpec>, String> {
    hugepages
        .children_named("page")
        .map(|page| {
            let size = page.attr("size").ok_or("<hugepages><page> has no size")?;
            let bytes = libvirt_bytes(size, page.attr("unit"), "KiB")
                .map_err(|e| format!("<page size='{size}'>: {e}"))?;
            if bytes < 4096 || !bytes.is_power_of_two() {
                return Err(format!(
                    "<page size='{size}'> is not a power-of-two page size"
                ));
            }
            Ok(PageSpec {
                size_kib: bytes / 1024,
                cells: page
                    .attr("nodeset")
                    .map(|s| list(s, "<page nodeset>"))
                    .transpose()?,
            })
        })
        .collect()
}

fn numatune(el: Option<&Element>) -> Result<NumaTune, String> {
    let Some(el) = el else {
        return Ok(NumaTune::default());
    };
    let memory = el.child("memory").map(binding).transpose()?;
    let memnodes = el
        .children_named("memnode")
        .map(|m| Ok((number(m.attr("cellid"), "<memnode cellid>")?, binding(m)?)))
        .collect::<Result<_, String>>()?;
    Ok(NumaTune { memory, memnodes })
}

fn binding(el: &Element) -> Result<NodeBinding, String> {
    let mode = match el.attr("mode").unwrap_or("strict") {
        "strict" => MemMode::Strict,
        "preferred" => MemMode::Preferred,
        "interleave" => MemMode::Interleave,
        "restrictive" => MemMode::Restrictive,
        other => {
            return Err(format!(
                "<{} mode='{other}'> is not a libvirt mode",
                el.name
            ))
        }
    };
    let nodeset = el
        .attr("nodeset")
        .map(|s| list(s, "numatune nodeset"))
        .transpose()?
        .filter(|s| !s.is_empty());
    Ok(NodeBinding { mode, nodeset })
}

fn cells(root: &Element) -> Result<Vec<GuestCell>, String> {
    let Some(numa) = root.path(&["cpu", "numa"]) else {
        return Ok(Vec::new());
    };
    numa.children_named("cell")
        .enumerate()
        .map(|(index, cell)| {
            let id = match cell.attr("id") {
                Some(_) => number(cell.attr("id"), "<cell id>")?,
                None => index as u32,
            };
            let memory = cell
                .attr("memory")
                .ok_or_else(|| format!("<cell id='{id}'> has no memory"))?;
            let memory_bytes = libvirt_bytes(memory, cell.attr("unit"), "KiB")
                .map_err(|e| format!("<cell id='{id}' memory>: {e}"))?;
            Ok(GuestCell { id, memory_bytes })
        })
        .collect()
}

fn hostdevs(root: &Element) -> Result<Vec<PciAddress>, String> {
    let Some(devices) = root.child("devices") else {
        return Ok(Vec::new());
    };
    devices
        .children_named("hostdev")
        .filter(|h| {
            h.attr("type") == Some("pci") && h.attr("mode").unwrap_or("subsystem") == "subsystem"
        })
        .filter_map(|h| h.path(&["source", "address"]))
        .map(|address| PciAddress::from_attributes(|name| address.attr(name)))
        .collect()
}

fn scaled(el: &Element, what: &str) -> Result<u64, String> {
    libvirt_bytes(el.text(), el.attr("unit"), "KiB").map_err(|e| format!("{what}: {e}"))
}

fn list(text: &str, what: &str) -> Result<CpuSet, String> {
    CpuSet::parse(text).map_err(|e| format!("{what} '{text}': {e}"))
}

fn number(value: Option<&str>, what: &str) -> Result<u32, String> {
    let v = value.ok_or_else(|| format!("{what} is missing"))?;
    v.trim()
        .parse()
        .map_err(|_| format!("{what} '{v}' is not a number"))
}

#[cfg(test)]
mod tests;
