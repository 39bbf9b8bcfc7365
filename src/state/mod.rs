//! `/run/kvmtune`: the host-wide lock, the per-VM journals and the ledger.

pub mod atomic;
pub mod journal;
pub mod ledger;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};
pub use journal::{Journal, Operation};
pub use ledger::{Ledger, Phase, PoolHold, VmHold};

const LEDGER: &str = "ledger.json";
const LOCK: &str = "lock";

/// The state directory, checked to be ours: a real directory, owned by us, closed to others.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

/// Held while kvmtune changes anything; hook calls for different VMs run in parallel.
pub struct StateLock {
    _lock: Flock<fs::File>,
}

impl StateDir {
    /// Open (creating if needed, mode 0700) the state directory for changes.
    pub fn open(path: &Path) -> Result<StateDir> {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(path)
                    .map_err(|e| Error::io("create state directory", path, e))?;
            }
            Err(e) => return Err(Error::io("stat state directory", path, e)),
            Ok(_) => {}
        }
        let dir = StateDir {
            path: path.to_path_buf(),
        };
        dir.check()?;
        Ok(dir)
    }

    /// Use an existing state directory read-only (status, plan); `None` when it does not exist.
    pub fn peek(path: &Path) -> Result<Option<StateDir>> {
        if !path.exists() {
            return Ok(None);
        }
        let dir = StateDir {
            path: path.to_path_buf(),
        };
        dir.check()?;
        Ok(Some(dir))
    }

    fn check(&self) -> Result<()> {
        let meta = fs::symlink_metadata(&self.path)
            .map_err(|e| Error::io("stat state directory", &self.path, e))?;
        if !meta.file_type().is_dir() {
            return Err(Error::State(format!(
                "state directory {} is not a directory (a symlink?); refusing to use it",
                self.path.display()
            )));
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Err(Error::State(format!(
                "state directory {} is owned by uid {}, not {me}",
                self.path.display(),
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(Error::State(format!(
                "state directory {} has mode {:o}; it must be 0700",
                self.path.display(),
                meta.mode() & 0o7777
            )));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Take the host-wide lock, waiting for other kvmtune processes.
    pub fn lock(&self) -> Result<StateLock> {
        let path = self.path.join(LOCK);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => Error::State(format!(
                    "{} is a symlink; refusing to use it",
                    path.display()
                )),
                _ => Error::io("open lock", &path, e),
            })?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| Error::io("lock", &path, errno.into()))?;
        Ok(StateLock { _lock: lock })
    }

    pub fn load_ledger(&self) -> Result<Ledger> {
        let path = self.path.join(LEDGER);
        match atomic::read_nofollow(&path)? {
            None => Ok(Ledger::default()),
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| Error::State(format!("ledger {} is unreadable: {e}", path.display()))),
        }
    }

    pub fn save_ledger(&self, ledger: &Ledger) -> Result<()> {
        let path = self.path.join(LEDGER);
        if ledger == &Ledger::default() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io("remove", path, e))
                }
                _ => Ok(()),
            };
        }
        let text = serde_json::to_vec_pretty(ledger).expect("ledger serializes");
        atomic::write_atomic(&path, &text)
    }

    pub fn save_journal(&self, journal: &Journal) -> Result<()> {
        let path = self.path.join(journal::file_name(&journal.vm));
        let text = serde_json::to_vec_pretty(journal).expect("journal serializes");
        atomic::write_atomic(&path, &text)
    }

    pub fn remove_journal(&self, vm: &str) -> Result<()> {
        let path = self.path.join(journal::file_name(vm));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
            _ => Ok(()),
        }
    }

    /// Every journal left behind, oldest operations first by name order.
    pub fn journals(&self) -> Result<Vec<Journal>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.path).map_err(|e| Error::io("list", &self.path, e))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("journal-") && n.ends_with(".json"))
            .collect();
        names.sort();
        for name in names {
            let path = self.path.join(&name);
            let Some(text) = atomic::read_nofollow(&path)? else {
                continue;
            };
            let journal = serde_json::from_str(&text).map_err(|e| {
                Error::State(format!("journal {} is unreadable: {e}", path.display()))
            })?;
            out.push(journal);
        }
        Ok(out)
    }
}
