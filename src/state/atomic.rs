//! Crash-safe file replacement: write a temp file beside the target, fsync, rename, fsync the
//! directory. A reader sees the old file or the new one, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// What marks a temp file of `write_atomic` (`.NAME.tmpPID`).
const TEMP_MARK: &str = ".tmp";

/// Whether a file name is a temp file `write_atomic` left behind (it was killed before the
/// rename): the file it was replacing is intact, the temp file is garbage.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        && name
            .rsplit_once(TEMP_MARK)
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomic_with(path, contents, &|| {})
}

/// `write_atomic`, calling `before_rename` once the temp file is complete: a crash there leaves
/// the old file in place and a stray temp file (see `is_temp_name`), which tests inject.
pub fn write_atomic_with(path: &Path, contents: &[u8], before_rename: &dyn Fn()) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}{TEMP_MARK}{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", &tmp, e))?;
    before_rename();
    fs::rename(&tmp, path).map_err(|e| Error::io("rename into place", path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync", dir, e))
}

/// Read a state file without following a symlink planted in its place; `None` if absent.
pub fn read_nofollow(path: &Path) -> Result<Option<String>> {
    let mut file = match OpenOptions::new()
        .read(true)
        // O_NONBLOCK: a FIFO planted in the file's place must not hang the hook.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Error::State(format!(
                "{} is a symlink; refusing to use it",
                path.display()
            )))
        }
        Err(e) => return Err(Error::io("open", path, e)),
    };
    if !file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .is_file()
    {
        return Err(Error::State(format!(
            "{} is not a regular file; refusing to use it",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    // Not UTF-8 means damaged: the JSON parser then says where, like any other damage.
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}
