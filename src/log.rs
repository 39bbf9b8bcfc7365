//! Logging: details go to syslog (facility daemon, ident `kvmtune`) through the socket under
//! the root (`ROOT/dev/log`). Without one (containers, an initramfs, tests) warnings and errors
//! go to stderr instead. Logging never fails an operation.

use std::path::Path;
use std::sync::Mutex;

use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

static SYSLOG: Mutex<Option<Logger<LoggerBackend, Formatter3164>>> = Mutex::new(None);

/// Connect to the syslog socket under `root`, if there is one.
pub fn init(root: &Path) {
    let socket = root.join("dev/log");
    if !socket.exists() {
        return;
    }
    let formatter = Formatter3164 {
        facility: Facility::LOG_DAEMON,
        hostname: None,
        process: "kvmtune".into(),
        pid: std::process::id(),
    };
    if let Ok(logger) = syslog::unix_custom(formatter, &socket) {
        if let Ok(mut slot) = SYSLOG.lock() {
            *slot = Some(logger);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Info,
    Warning,
    Error,
}

fn emit(level: Level, message: &str) {
    // Domain names and kernel values end up in messages: keep each entry on one line.
    let line = message.replace(['\n', '\r'], " ");
    let mut sent = false;
    if let Ok(mut slot) = SYSLOG.lock() {
        if let Some(logger) = slot.as_mut() {
            sent = match level {
                Level::Info => logger.info(&line),
                Level::Warning => logger.warning(&line),
                Level::Error => logger.err(&line),
            }
            .is_ok();
        }
    }
    if !sent && level != Level::Info {
        eprintln!("kvmtune: {line}");
    }
}

/// An error's context for the journal of the host; nothing when there is no syslog (the
/// caller prints the one line users see).
pub fn to_syslog_only(message: &str) {
    if has_syslog() {
        emit(Level::Error, message)
    }
}

pub fn info(message: &str) {
    emit(Level::Info, message)
}

pub fn warn(message: &str) {
    emit(Level::Warning, message)
}

pub fn error(message: &str) {
    emit(Level::Error, message)
}

/// Whether messages reach syslog (else warnings and errors were already printed to stderr).
pub fn has_syslog() -> bool {
    SYSLOG.lock().map(|s| s.is_some()).unwrap_or(false)
}
