//! libvirt, as `kvmtune balance` sees it: the running domains, their XML, their balloon
//! statistics, and a new live balloon target. Behind a trait so the daemon loop is tested with
//! a fake; the real one is `host::virsh::Virsh` (the balancer is not the hook, so calling
//! libvirt is fine), which addresses every domain by UUID.

use crate::error::{Error, Result};
pub use crate::host::virsh::{Uuid, Virsh};

/// `virsh dommemstat`, in bytes (virsh reports KiB). Only `actual` is always there: the rest
/// comes from the guest's balloon driver, every `<stats period>` seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemStats {
    /// The balloon's size: the guest's memory now.
    pub actual: u64,
    /// The guest's free memory (MemFree).
    pub unused: Option<u64>,
    /// The guest's total memory (MemTotal: `actual` minus what its kernel keeps).
    pub available: Option<u64>,
    /// What the guest could use without swapping (MemAvailable).
    pub usable: Option<u64>,
    /// QEMU's resident memory on the host.
    pub rss: Option<u64>,
    /// When the guest last reported, Unix seconds (0 or absent: never).
    pub last_update: Option<u64>,
}

/// Parse `virsh dommemstat` output: `name value` lines, values in KiB except `last_update`.
pub fn parse_memstat(text: &str) -> Result<MemStats, String> {
    let mut s = MemStats::default();
    let mut actual = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!(
                "dommemstat line '{}' is not 'name value'",
                line.trim()
            ));
        };
        let n: u64 = value
            .parse()
            .map_err(|_| format!("dommemstat {key} '{value}' is not a number"))?;
        let kib = n
            .checked_mul(1024)
            .ok_or_else(|| format!("dommemstat {key} {n} KiB is too large"))?;
        match key {
            "actual" => actual = Some(kib),
            "unused" => s.unused = Some(kib),
            "available" => s.available = Some(kib),
            "usable" => s.usable = Some(kib),
            "rss" => s.rss = Some(kib),
            "last_update" => s.last_update = Some(n).filter(|t| *t > 0),
            _ => {}
        }
    }
    s.actual = actual.ok_or("dommemstat has no 'actual' (no balloon device?)")?;
    Ok(s)
}

/// What the balancer needs from libvirt.
pub trait Libvirt {
    /// UUIDs of the running domains.
    fn running(&mut self) -> Result<Vec<String>>;
    /// The live domain XML.
    fn domain_xml(&mut self, uuid: &str) -> Result<String>;
    fn mem_stats(&mut self, uuid: &str) -> Result<MemStats>;
    /// Set the live balloon target (`virsh setmem --live`), in KiB.
    fn set_target_kib(&mut self, uuid: &str, kib: u64) -> Result<()>;
}

/// The real libvirt, through `virsh` on the balancer's connection (`host::virsh`).
impl Libvirt for Virsh {
    fn running(&mut self) -> Result<Vec<String>> {
        Ok(self.uuids(false)?.iter().map(ToString::to_string).collect())
    }

    fn domain_xml(&mut self, uuid: &str) -> Result<String> {
        self.dumpxml(&parse_uuid(uuid)?)
    }

    fn mem_stats(&mut self, uuid: &str) -> Result<MemStats> {
        let text = self.dommemstat(&parse_uuid(uuid)?)?;
        parse_memstat(&text).map_err(Error::Refused)
    }

    fn set_target_kib(&mut self, uuid: &str, kib: u64) -> Result<()> {
        self.setmem_kib(&parse_uuid(uuid)?, kib)
    }
}

fn parse_uuid(uuid: &str) -> Result<Uuid> {
    uuid.parse()
        .map_err(|e: crate::error::BadValue| Error::Domain(format!("domain {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memstat_with_a_guest_driver_has_every_field_in_bytes() {
        let s = parse_memstat(
            "actual 524288\nswap_in 0\nunused 439612\navailable 468548\nusable 439216\nlast_update 1795302612\nrss 218060\n\n",
        )
        .unwrap();
        assert_eq!(s.actual, 512 << 20);
        assert_eq!(s.unused, Some(439612 * 1024));
        assert_eq!(s.available, Some(468548 * 1024));
        assert_eq!(s.usable, Some(439216 * 1024));
        assert_eq!(s.rss, Some(218060 * 1024));
        assert_eq!(s.last_update, Some(1795302612));
    }

    #[test]
    fn memstat_before_the_guest_driver_loads_has_no_guest_fields() {
        // Recorded from a booting guest: the balloon device exists, nobody answers yet.
        let s = parse_memstat("actual 524288\nlast_update 0\nrss 206692\n").unwrap();
        assert_eq!(s.actual, 512 << 20);
        assert_eq!((s.unused, s.available, s.last_update), (None, None, None));
    }

    #[test]
    fn memstat_garbage_is_an_error_naming_it() {
        assert!(parse_memstat("rss 5\n")
            .unwrap_err()
            .contains("no 'actual'"));
        assert!(parse_memstat("actual lots\n")
            .unwrap_err()
            .contains("actual 'lots'"));
        assert!(parse_memstat("actual 1 2\n")
            .unwrap_err()
            .contains("not 'name value'"));
    }
}
