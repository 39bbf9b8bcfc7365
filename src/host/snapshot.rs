//! `Snapshot`: one look at the host, the only one working out changes takes (`plan`'s
//! functions, for `kvmtune plan` and for every operation of `apply`). Each file (but the IRQ
//! table of a large host: `KEEP_AT_MOST`), directory listing, systemd property and irqbalance
//! answer is read at most once, on first use, and kept: the changes are worked out from one
//! look at the host even where the code that works them out reads a file twice. Every write is
//! refused, so working out changes cannot change the host, whatever code it runs.
//!
//! It fills lazily rather than reading the whole of /sys and /proc up front: the functions
//! that work out the changes decide what they need to read (the tasks only where the
//! isolation method needs them, the IRQ table only where IRQs are placed).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::irqbalance::{Answer, IrqBalancer};
use super::systemctl::Systemctl;
use super::HostFs;
use crate::cpulist::CpuSet;
use crate::error::{Error, Result};

/// The host's ports as working out changes needs them: a `Snapshot`'s (`Snapshot::probe`),
/// which read each thing once and refuse every write.
#[derive(Clone, Copy)]
pub struct Probe<'a> {
    pub fs: &'a dyn HostFs,
    pub systemctl: &'a dyn Systemctl,
    pub irqbalance: &'a dyn IrqBalancer,
}

/// The host's ports, read once and never written.
pub struct Snapshot<'a> {
    fs: &'a dyn HostFs,
    systemctl: &'a dyn Systemctl,
    irqbalance: &'a dyn IrqBalancer,
    seen: RefCell<Seen>,
}

/// What has been read so far. Failed reads are not kept: they are read again (and fail again,
/// with their own error).
#[derive(Default)]
struct Seen {
    files: HashMap<String, String>,
    records: HashMap<String, String>,
    lists: HashMap<String, Vec<String>>,
    exists: HashMap<String, bool>,
    links: HashMap<String, PathBuf>,
    properties: HashMap<(String, String), String>,
    banned: Option<Option<Answer>>,
}

impl<'a> Snapshot<'a> {
    pub fn new(
        fs: &'a dyn HostFs,
        systemctl: &'a dyn Systemctl,
        irqbalance: &'a dyn IrqBalancer,
    ) -> Snapshot<'a> {
        Snapshot {
            fs,
            systemctl,
            irqbalance,
            seen: RefCell::new(Seen::default()),
        }
    }

    /// The snapshot as the ports that working out changes reads.
    pub fn probe(&self) -> Probe<'_> {
        Probe {
            fs: self,
            systemctl: self,
            irqbalance: self,
        }
    }

    fn refuse<T>(&self, what: &str) -> Result<T> {
        Err(Error::Refused(format!(
            "working out changes writes nothing, but was about to {what}"
        )))
    }
}

/// Look `key` up in one of the maps of `seen`, or read it and keep a success `keep` allows.
fn once<K, V: Clone>(
    map: &mut HashMap<K, V>,
    key: K,
    read: impl FnOnce() -> Result<V>,
    keep: impl FnOnce(&V) -> bool,
) -> Result<V>
where
    K: std::hash::Hash + Eq,
{
    if let Some(v) = map.get(&key) {
        return Ok(v.clone());
    }
    let v = read()?;
    if keep(&v) {
        map.insert(key, v.clone());
    }
    Ok(v)
}

/// Every answer but a long file's text is kept.
fn always<V>(_: &V) -> bool {
    true
}

/// A file's text longer than this is not kept: it is read again if asked for again. A large
/// host's /proc/interrupts (1024 CPUs, 8192 IRQs) is about 90 MB and the IRQ placement reads
/// it once; a kept copy would cost more than the read (`started` took 17 % longer on the
/// benchmark's 1024-CPU host). Every other file the changes are worked out from is far smaller.
const KEEP_AT_MOST: usize = 1 << 20;

/// Whether a file's text is short enough to keep (`KEEP_AT_MOST`).
fn short(text: &str) -> bool {
    text.len() <= KEEP_AT_MOST
}

impl HostFs for Snapshot<'_> {
    fn root(&self) -> &Path {
        self.fs.root()
    }

    fn read(&self, rel: &str) -> Result<String> {
        let files = &mut self.seen.borrow_mut().files;
        once(files, rel.to_string(), || self.fs.read(rel), |t| short(t))
    }

    fn read_record(&self, rel: &str) -> Result<String> {
        let records = &mut self.seen.borrow_mut().records;
        once(
            records,
            rel.to_string(),
            || self.fs.read_record(rel),
            |t| short(t),
        )
    }

    fn write(&self, rel: &str, value: &str) -> Result<()> {
        self.refuse(&format!(
            "write {value:?} to {}",
            self.fs.display(rel).display()
        ))
    }

    fn list(&self, rel: &str) -> Result<Vec<String>> {
        let lists = &mut self.seen.borrow_mut().lists;
        once(lists, rel.to_string(), || self.fs.list(rel), always)
    }

    fn exists(&self, rel: &str) -> bool {
        *self
            .seen
            .borrow_mut()
            .exists
            .entry(rel.to_string())
            .or_insert_with(|| self.fs.exists(rel))
    }

    fn create_dir(&self, rel: &str) -> Result<()> {
        self.refuse(&format!("create {}", self.fs.display(rel).display()))
    }

    fn remove_dir(&self, rel: &str) -> Result<()> {
        self.refuse(&format!("remove {}", self.fs.display(rel).display()))
    }

    fn remove_file(&self, rel: &str) -> Result<()> {
        self.refuse(&format!("remove {}", self.fs.display(rel).display()))
    }

    fn read_link(&self, rel: &str) -> Result<PathBuf> {
        let links = &mut self.seen.borrow_mut().links;
        once(links, rel.to_string(), || self.fs.read_link(rel), always)
    }

    fn display(&self, rel: &str) -> PathBuf {
        self.fs.display(rel)
    }
}

impl Systemctl for Snapshot<'_> {
    fn property(&self, unit: &str, property: &str) -> Result<String> {
        let key = (unit.to_string(), property.to_string());
        let properties = &mut self.seen.borrow_mut().properties;
        once(
            properties,
            key,
            || self.systemctl.property(unit, property),
            always,
        )
    }

    fn set_property(&self, unit: &str, property: &str, value: &str) -> Result<()> {
        self.refuse(&format!("set {unit} {property}={value}"))
    }

    fn daemon_reload(&self) -> Result<()> {
        self.refuse("reload systemd")
    }
}

impl IrqBalancer for Snapshot<'_> {
    fn banned(&self) -> Result<Option<Answer>> {
        let mut seen = self.seen.borrow_mut();
        if let Some(banned) = &seen.banned {
            return Ok(banned.clone());
        }
        let banned = self.irqbalance.banned()?;
        seen.banned = Some(banned.clone());
        Ok(banned)
    }

    fn set_banned(&self, cpus: &CpuSet) -> Result<()> {
        self.refuse(&format!("ban irqbalance from CPUs {cpus}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::RootFs;

    struct NoSystemd;
    impl Systemctl for NoSystemd {
        fn property(&self, _: &str, _: &str) -> Result<String> {
            Ok(String::new())
        }
        fn set_property(&self, _: &str, _: &str, _: &str) -> Result<()> {
            Ok(())
        }
        fn daemon_reload(&self) -> Result<()> {
            Ok(())
        }
    }
    struct NoIrqbalance;
    impl IrqBalancer for NoIrqbalance {
        fn banned(&self) -> Result<Option<Answer>> {
            Ok(None)
        }
        fn set_banned(&self, _: &CpuSet) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_file_changed_after_the_first_read_still_reads_as_first_seen() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("knob"), "1\n").unwrap();
        let fs = RootFs::new(dir.path());
        let snapshot = Snapshot::new(&fs, &NoSystemd, &NoIrqbalance);
        assert_eq!(snapshot.read("knob").unwrap(), "1\n");
        std::fs::write(dir.path().join("knob"), "0\n").unwrap();
        assert_eq!(snapshot.read("knob").unwrap(), "1\n");
    }

    #[test]
    fn a_file_longer_than_what_is_kept_is_read_again_when_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(KEEP_AT_MOST + 1);
        std::fs::write(dir.path().join("interrupts"), &long).unwrap();
        let fs = RootFs::new(dir.path());
        let snapshot = Snapshot::new(&fs, &NoSystemd, &NoIrqbalance);
        assert_eq!(snapshot.read("interrupts").unwrap(), long);
        std::fs::write(dir.path().join("interrupts"), "short").unwrap();
        assert_eq!(snapshot.read("interrupts").unwrap(), "short");
        assert_eq!(snapshot.read_record("interrupts").unwrap(), "short");
    }

    #[test]
    fn a_write_through_the_snapshot_is_refused_and_the_file_keeps_its_value() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("knob"), "1\n").unwrap();
        let fs = RootFs::new(dir.path());
        let snapshot = Snapshot::new(&fs, &NoSystemd, &NoIrqbalance);
        let err = snapshot.write("knob", "0").unwrap_err();
        assert!(
            err.to_string().contains("was about to write \"0\" to"),
            "{err}"
        );
        assert!(snapshot.set_banned(&CpuSet::new()).is_err());
        assert!(snapshot.set_property("u", "p", "v").is_err());
        assert!(snapshot.create_dir("cg").is_err());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("knob")).unwrap(),
            "1\n"
        );
    }
}
