//! When a QEMU that `kvmtune run` started counts as started (libvirt's `started` event): it has
//! mapped its hugepage-backed RAM and opened its passthrough devices.
//!
//! Without a monitor connection (QMP belongs to whoever runs QEMU), /proc shows both:
//! - a hugetlbfs mapping reserves its pages when it is made (`HugePages_Rsvd`), so once QEMU's
//!   mappings of each page size cover the VM's pages, those pages are taken from the free pool
//!   and no longer promised (the `Prepared` → `Running` step of the ledger);
//! - a VFIO device is opened through its IOMMU group, `/dev/vfio/GROUP`, which shows among the
//!   process's open files; its IRQs exist from then on.
//!
//! QEMU maps RAM before it realizes devices, and both before the guest runs.

use std::collections::BTreeMap;

use crate::host::HostFs;
use crate::plan::Plan;

/// What the process must show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    /// Bytes of hugepage mappings per page size (KiB).
    pub hugepages: BTreeMap<u64, u64>,
    /// IOMMU groups (`/dev/vfio/N`) of the VM's passthrough devices.
    pub vfio_groups: Vec<String>,
}

impl Expect {
    /// From the plan: the VM's pages, and the IOMMU groups of its devices (a device without
    /// one cannot be opened through VFIO, and is not waited for).
    pub fn new(fs: &dyn HostFs, plan: &Plan) -> Expect {
        let mut hugepages = BTreeMap::new();
        for g in &plan.hugepages {
            *hugepages.entry(g.pool.page_kib).or_insert(0) += g.pages * g.pool.page_bytes();
        }
        let vfio_groups = plan
            .devices
            .iter()
            .filter_map(|bdf| {
                let link = fs
                    .read_link(&format!("sys/bus/pci/devices/{bdf}/iommu_group"))
                    .ok()?;
                Some(link.file_name()?.to_string_lossy().into_owned())
            })
            .collect();
        Expect {
            hugepages,
            vfio_groups,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hugepages.is_empty() && self.vfio_groups.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    Yes,
    /// What is still missing, for the message when waiting gives up.
    NotYet(String),
    /// The process has no /proc entry under the root to watch.
    Unobservable,
}

/// Look at process `pid` once.
pub fn check(fs: &dyn HostFs, pid: u32, expect: &Expect) -> Ready {
    if !fs.exists(&format!("proc/{pid}")) {
        return Ready::Unobservable;
    }
    if !expect.hugepages.is_empty() {
        let mapped = fs
            .read(&format!("proc/{pid}/smaps"))
            .map(|text| hugepage_mappings(&text))
            .unwrap_or_default();
        for (page_kib, want) in &expect.hugepages {
            let have = mapped.get(page_kib).copied().unwrap_or(0);
            if have < *want {
                return Ready::NotYet(format!(
                    "{} of {} mapped in {} KiB pages",
                    crate::size::human(have),
                    crate::size::human(*want),
                    page_kib
                ));
            }
        }
    }
    if !expect.vfio_groups.is_empty() {
        let open = open_files(fs, pid);
        for group in &expect.vfio_groups {
            let path = format!("/dev/vfio/{group}");
            if !open.contains(&path) {
                return Ready::NotYet(format!("{path} not opened yet"));
            }
        }
    }
    Ready::Yes
}

/// Bytes mapped per kernel page size (KiB), for mappings in pages larger than the base page,
/// from `/proc/PID/smaps`.
pub fn hugepage_mappings(smaps: &str) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    let mut size_kib = 0u64;
    for line in smaps.lines() {
        let field = |name: &str| -> Option<u64> {
            line.strip_prefix(name)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        };
        if let Some(size) = field("Size:") {
            size_kib = size;
        } else if let Some(page) = field("KernelPageSize:") {
            if page > 4 {
                *out.entry(page).or_insert(0) += size_kib * 1024;
            }
        }
    }
    out
}

fn open_files(fs: &dyn HostFs, pid: u32) -> Vec<String> {
    let dir = format!("proc/{pid}/fd");
    fs.list(&dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|fd| fs.read_link(&format!("{dir}/{fd}")).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::RootFs;

    const SMAPS: &str = "\
55d0c0000000-55d0c0001000 r--p 00000000 fe:00 123   /usr/bin/qemu-system-x86_64
Size:                  4 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
7f0000000000-7f0004000000 rw-s 00000000 00:2f 999   /dev/hugepages/qemu_back_mem.pc.ram.XYZ (deleted)
Size:              65536 kB
KernelPageSize:     2048 kB
MMUPageSize:        2048 kB
7f1000000000-7f1040000000 rw-s 00000000 00:30 998   /memfd:m1 (deleted)
Size:            1048576 kB
KernelPageSize:  1048576 kB
";

    #[test]
    fn smaps_sums_mappings_per_page_size_and_skips_base_pages() {
        let m = hugepage_mappings(SMAPS);
        assert_eq!(m.get(&2048), Some(&(64 << 20)));
        assert_eq!(m.get(&(1 << 20)), Some(&(1 << 30)));
        assert_eq!(m.get(&4), None);
    }

    fn fake_proc(smaps: &str, fds: &[&str]) -> (tempfile::TempDir, RootFs) {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc/42");
        std::fs::create_dir_all(proc.join("fd")).unwrap();
        std::fs::write(proc.join("smaps"), smaps).unwrap();
        for (i, target) in fds.iter().enumerate() {
            std::os::unix::fs::symlink(target, proc.join(format!("fd/{i}"))).unwrap();
        }
        let fs = RootFs::new(dir.path());
        (dir, fs)
    }

    #[test]
    fn ready_once_pages_are_mapped_and_groups_opened() {
        let expect = Expect {
            hugepages: BTreeMap::from([(2048, 64 << 20)]),
            vfio_groups: vec!["12".into()],
        };
        let (_d, fs) = fake_proc(SMAPS, &["/dev/null", "/dev/vfio/vfio"]);
        assert!(matches!(check(&fs, 42, &expect), Ready::NotYet(m) if m.contains("/dev/vfio/12")));
        let (_d, fs) = fake_proc(SMAPS, &["/dev/vfio/vfio", "/dev/vfio/12"]);
        assert_eq!(check(&fs, 42, &expect), Ready::Yes);
        let more = Expect {
            hugepages: BTreeMap::from([(2048, 128 << 20)]),
            vfio_groups: vec![],
        };
        assert!(
            matches!(check(&fs, 42, &more), Ready::NotYet(m) if m.contains("64 MiB of 128 MiB"))
        );
        assert_eq!(check(&fs, 7, &more), Ready::Unobservable);
    }
}
