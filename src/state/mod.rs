//! `/run/kvmtune`: the host-wide lock, the per-VM journals and the ledger with the holds it
//! persists (`holds`: isolation's and IRQs'); beside them, the counters and the watcher's last
//! look (`stats`).

pub mod atomic;
pub mod holds;
pub mod journal;
pub mod ledger;
pub mod stats;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};
use crate::log;
use crate::privilege::Privilege;
pub use journal::{Journal, Operation};
pub use ledger::{Ledger, Phase, PoolHold, VmHold};
pub use stats::{Counters, WatchMark};

const LEDGER: &str = "ledger.json";
const LOCK: &str = "lock";

/// The state directory, checked to be ours: a real directory, owned by us, closed to others.
#[derive(Clone)]
pub struct StateDir {
    path: PathBuf,
    /// The uid the directory must belong to: this process's (`Privilege::uid`).
    owner: u32,
    checkpoint: Option<Checkpoint>,
}

/// A seam for fault injection: called with the name of every state write about to happen
/// (`save journal`, `rename journal`, `save ledger`, `rename ledger`, `remove journal`), so a
/// test can kill kvmtune there as it kills it before a kernel write.
pub type Checkpoint = Arc<dyn Fn(&str) + Send + Sync>;

impl std::fmt::Debug for StateDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDir")
            .field("path", &self.path)
            .finish()
    }
}

/// Held while kvmtune changes anything; hook calls for different VMs run in parallel.
pub struct StateLock {
    _lock: Flock<fs::File>,
}

impl StateDir {
    /// Open (creating if needed, mode 0700) the state directory for changes. It must belong to
    /// `privilege`'s uid.
    pub fn open(path: &Path, privilege: &Privilege) -> Result<StateDir> {
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
            owner: privilege.uid,
            checkpoint: None,
        };
        dir.check()?;
        Ok(dir)
    }

    /// The same directory, with `checkpoint` called before every state write (tests).
    pub fn with_checkpoint(mut self, checkpoint: Checkpoint) -> StateDir {
        self.checkpoint = Some(checkpoint);
        self
    }

    fn point(&self, what: &str) {
        if let Some(c) = &self.checkpoint {
            c(what);
        }
    }

    /// Use an existing state directory read-only (status, plan); `None` when it does not exist.
    pub fn peek(path: &Path, privilege: &Privilege) -> Result<Option<StateDir>> {
        if !path.exists() {
            return Ok(None);
        }
        let dir = StateDir {
            path: path.to_path_buf(),
            owner: privilege.uid,
            checkpoint: None,
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
        let me = self.owner;
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

    /// The ledger; an error when it is unreadable (see `repair`, which sets such a file aside).
    pub fn load_ledger(&self) -> Result<Ledger> {
        let path = self.path.join(LEDGER);
        match atomic::read_nofollow(&path)? {
            None => Ok(Ledger::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                Error::State(format!(
                    "ledger {} is unreadable ({}); the next hook call or `kvmtune recover` sets it aside",
                    path.display(),
                    one_line(&e.to_string())
                ))
            }),
        }
    }

    /// Clear what a killed kvmtune or a damaged file left, under the lock, before any other
    /// state is read: temp files of interrupted atomic writes (the files they were replacing
    /// are intact), and a ledger or journals that do not parse. Those cannot be anything
    /// kvmtune wrote (every write is a complete file renamed into place), so they are set
    /// aside as `NAME.corrupt` and reported: what they recorded is forgotten, not undone, and
    /// the host keeps those changes (`kvmtune status` shows the host as it is).
    pub fn repair(&self, _lock: &StateLock) -> Result<()> {
        let entries = fs::read_dir(&self.path).map_err(|e| Error::io("list", &self.path, e))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let path = self.path.join(&name);
            if atomic::is_temp_name(&name) {
                match fs::remove_file(&path) {
                    Ok(()) => log::info(&format!(
                        "removed {}, left by an interrupted write",
                        path.display()
                    )),
                    Err(e) => return Err(Error::io("remove", path, e)),
                }
                continue;
            }
            let parses = if name == LEDGER {
                parses::<Ledger>(&path)?
            } else if is_journal_name(&name) {
                parses::<Journal>(&path)?
            } else {
                continue;
            };
            if let Err(why) = parses {
                let aside = self.path.join(format!("{name}.corrupt"));
                fs::rename(&path, &aside).map_err(|e| Error::io("set aside", &path, e))?;
                log::error(&format!(
                    "{} is unreadable ({why}); set aside as {}: what it recorded is forgotten and stays on the host as it is",
                    path.display(),
                    aside.display()
                ));
            }
        }
        Ok(())
    }

    pub fn save_ledger(&self, ledger: &Ledger) -> Result<()> {
        let path = self.path.join(LEDGER);
        if ledger == &Ledger::default() {
            self.point("remove ledger");
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io("remove", path, e))
                }
                _ => Ok(()),
            };
        }
        let text = serde_json::to_vec_pretty(ledger).expect("ledger serializes");
        self.point("save ledger");
        atomic::write_atomic_with(&path, &text, &|| self.point("rename ledger"))
    }

    pub fn save_journal(&self, journal: &Journal) -> Result<()> {
        let path = self.path.join(journal::file_name(&journal.vm));
        let text = serde_json::to_vec_pretty(journal).expect("journal serializes");
        self.point("save journal");
        atomic::write_atomic_with(&path, &text, &|| self.point("rename journal"))
    }

    pub fn remove_journal(&self, vm: &str) -> Result<()> {
        let path = self.path.join(journal::file_name(vm));
        self.point("remove journal");
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
            .filter(|n| is_journal_name(n))
            .collect();
        names.sort();
        for name in names {
            let path = self.path.join(&name);
            let Some(text) = atomic::read_nofollow(&path)? else {
                continue;
            };
            let journal = serde_json::from_str(&text).map_err(|e| {
                Error::State(format!(
                    "journal {} is unreadable ({}); the next hook call or `kvmtune recover` sets it aside",
                    path.display(),
                    one_line(&e.to_string())
                ))
            })?;
            out.push(journal);
        }
        Ok(out)
    }
}

fn is_journal_name(name: &str) -> bool {
    name.starts_with("journal-") && name.ends_with(".json")
}

/// Whether the state file at `path` parses as a `T` (`Err` says why not).
fn parses<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Result<(), String>> {
    Ok(match atomic::read_nofollow(path)? {
        None => Ok(()),
        Some(text) => serde_json::from_str::<T>(&text)
            .map(|_| ())
            .map_err(|e| one_line(&e.to_string())),
    })
}

fn one_line(message: &str) -> String {
    message.replace(['\n', '\r'], " ")
}
