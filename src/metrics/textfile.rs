//! Writing `kvmtune.prom` where node_exporter's textfile collector reads it: into a temp file in
//! the same directory, renamed over the old one, so a scrape reads the old file or the new
//! one, never half of one. The temp file's name does not end in `.prom`: the collector skips
//! it. Readable by everyone: node_exporter runs as its own user. Not fsynced: the file is
//! rewritten every interval, and after a crash the next write replaces whatever is there.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

pub const FILE: &str = "kvmtune.prom";

/// Write `text` as `DIR/kvmtune.prom`. `Ok(false)` when `dir` does not exist (node_exporter is
/// not installed): nothing is created.
pub fn write(dir: &Path, text: &str) -> Result<bool> {
    if !dir.is_dir() {
        return Ok(false);
    }
    let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        // The process umask may have taken bits away: the collector must be able to read it.
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io("chmod", &tmp, e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| Error::io("write", &tmp, e))?;
        let target = dir.join(FILE);
        fs::rename(&tmp, &target).map_err(|e| Error::io("rename into place", target, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

/// Remove `DIR/kvmtune.prom` (a watcher told to write nowhere must not leave old numbers).
pub fn remove(dir: &Path) {
    let _ = fs::remove_file(dir.join(FILE));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_world_readable_file_and_no_temp_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write(dir.path(), "a 1\n").unwrap());
        assert!(write(dir.path(), "a 2\n").unwrap());
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![FILE.to_string()]);
        let path = dir.path().join(FILE);
        assert_eq!(fs::read_to_string(&path).unwrap(), "a 2\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn a_missing_directory_is_skipped_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("node-exporter");
        assert!(!write(&missing, "a 1\n").unwrap());
        assert!(!missing.exists());
    }
}
