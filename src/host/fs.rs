//! `HostFs`: every read and write of a kernel file goes through here, resolved under one root.
//! Tests hand the same code a tempdir (or a model of the kernel) instead of `/`.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Access to /sys, /proc, /dev and /run/systemd. Paths are relative to the root, e.g.
/// `sys/devices/system/node/online`.
pub trait HostFs {
    /// Where relative paths are resolved (for messages and for tools that need a real path).
    fn root(&self) -> &Path;

    /// Read a whole (small) file.
    fn read(&self, rel: &str) -> Result<String>;

    /// Read a file the kernel produces as one record (`/proc/PID/stat`), which one read(2)
    /// returns whole when the buffer is larger. A hook call on a large host reads thousands of
    /// these: the second read a general `read` needs to see the end costs a system call each.
    fn read_record(&self, rel: &str) -> Result<String> {
        self.read(rel)
    }

    /// Write `value` to an existing file in one `write(2)`, as sysfs and procfs expect. The file
    /// is never created: a misspelt path fails here as it would on a kernel.
    fn write(&self, rel: &str, value: &str) -> Result<()>;

    /// The entry names of a directory, sorted.
    fn list(&self, rel: &str) -> Result<Vec<String>>;

    fn exists(&self, rel: &str) -> bool;

    /// Create one directory (a cgroup: the kernel fills it with its interface files).
    fn create_dir(&self, rel: &str) -> Result<()>;

    /// Remove one empty directory (a cgroup without processes or children).
    fn remove_dir(&self, rel: &str) -> Result<()>;

    /// Remove one file kvmtune had a program create (a systemd runtime drop-in).
    fn remove_file(&self, rel: &str) -> Result<()> {
        let path = self.root().join(rel);
        fs::remove_file(&path).map_err(|e| Error::io("remove", path, e))
    }

    /// Where a symbolic link points (`/proc/PID/fd/N`, a device's `iommu_group`), as written.
    fn read_link(&self, rel: &str) -> Result<PathBuf> {
        let path = self.root().join(rel);
        fs::read_link(&path).map_err(|e| Error::io("read link", path, e))
    }

    /// The absolute path of `rel` under the root, for messages.
    fn display(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }
}

/// The buffer of `read_record`: a /proc/PID/stat line is a few hundred bytes (a longer one is
/// read on to the end). Zeroing 4 KiB for each of a large host's thousands of kernel threads
/// was a third of the instructions of a partition `prepare` on the 1024-CPU benchmark host.
const RECORD_BUFFER: usize = 1024;

/// The real file system under a root directory (`/` in production).
#[derive(Debug, Clone)]
pub struct RootFs {
    root: PathBuf,
}

impl RootFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RootFs { root: root.into() }
    }
}

impl HostFs for RootFs {
    fn root(&self) -> &Path {
        &self.root
    }

    fn read(&self, rel: &str) -> Result<String> {
        let path = self.root.join(rel);
        // Kernel files report no useful size: read to the end without asking for one
        // (`fs::read_to_string` would stat and seek first; a hook call on a large host reads
        // thousands of these).
        let read = || -> std::io::Result<String> {
            let file = fs::File::open(&path)?;
            let mut text = String::with_capacity(4096);
            file.take(u64::MAX).read_to_string(&mut text)?;
            Ok(text)
        };
        read().map_err(|e| Error::io("read", &path, e))
    }

    fn read_record(&self, rel: &str) -> Result<String> {
        let path = self.root.join(rel);
        let read = || -> std::io::Result<String> {
            let mut file = fs::File::open(&path)?;
            let mut buf = [0u8; RECORD_BUFFER];
            let n = file.read(&mut buf)?;
            let mut bytes = buf[..n].to_vec();
            if n == buf.len() {
                // Longer than any record expected here: read on to the end.
                file.read_to_end(&mut bytes)?;
            }
            String::from_utf8(bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        };
        read().map_err(|e| Error::io("read", &path, e))
    }

    fn write(&self, rel: &str, value: &str) -> Result<()> {
        let path = self.root.join(rel);
        let mut file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io("open for writing", &path, e))?;
        // One write call: sysfs takes a value per write(2); a short write would split it.
        let n = file
            .write(value.as_bytes())
            .map_err(|e| Error::io("write", &path, e))?;
        if n != value.len() {
            let short = std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("only {n} of the {} bytes of '{value}' taken", value.len()),
            );
            return Err(Error::io("write", &path, short));
        }
        Ok(())
    }

    fn list(&self, rel: &str) -> Result<Vec<String>> {
        let path = self.root.join(rel);
        let mut names: Vec<String> = fs::read_dir(&path)
            .map_err(|e| Error::io("list", &path, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn exists(&self, rel: &str) -> bool {
        self.root.join(rel).exists()
    }

    fn create_dir(&self, rel: &str) -> Result<()> {
        let path = self.root.join(rel);
        fs::create_dir(&path).map_err(|e| Error::io("create", path, e))
    }

    fn remove_dir(&self, rel: &str) -> Result<()> {
        let path = self.root.join(rel);
        fs::remove_dir(&path).map_err(|e| Error::io("remove", path, e))
    }
}

/// Read a file holding one unsigned number (most sysfs counters).
pub fn read_u64(fs: &dyn HostFs, rel: &str) -> Result<u64> {
    let text = fs.read(rel)?;
    text.trim()
        .parse()
        .map_err(|_| Error::parse(fs.display(rel), &text, "not a number"))
}
