//! One error type for the crate. Every variant renders as one line a user can act on: libvirt
//! shows the hook's stderr to whoever ran `virsh start`, so the line must say what and why.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What went wrong, with the path or value that explains it.
#[derive(Debug)]
pub enum Error {
    /// A read or write of a host or state file failed.
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The command line was wrong (exit 2).
    Usage(String),
    /// The host policy file is missing a value, has an unknown key or a bad value (exit 2).
    Config(String),
    /// The domain XML could not be read or holds something kvmtune cannot honour.
    Domain(String),
    /// The VM asks for something the policy does not allow or the host cannot give.
    Refused(String),
    /// A state file (journal, ledger, lock) is unsafe or unreadable.
    State(String),
    /// A program kvmtune ran (`virsh`) failed or did not answer in time.
    Subprocess {
        /// The command as run, e.g. `virsh dumpxml --domain UUID`.
        command: String,
        /// The program's own message (its stderr on one line), or how it ended.
        detail: String,
    },
}

impl Error {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The process exit status this error maps to (SPEC: 1 failed, 2 bad usage or configuration).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config(_) => 2,
            _ => 1,
        }
    }

    /// The raw OS error behind an I/O failure, for callers that treat some errnos as expected.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => write!(f, "cannot {op} {}: {source}", path.display()),
            Error::Subprocess { command, detail } => write!(f, "{command} failed: {detail}"),
            Error::Usage(m)
            | Error::Config(m)
            | Error::Domain(m)
            | Error::Refused(m)
            | Error::State(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A value that is none of the words (or forms) a setting takes: the error of every `FromStr`
/// of a value word (`Reserve`, `IsolateChoice`, `PciAddress`, …). Where the word was written
/// (a metadata attribute, a policy key, an option) is the caller's to say, in its own syntax;
/// `Display` alone names the value and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue {
    /// The value as given (trimmed).
    pub value: String,
    /// What is accepted, e.g. `auto, on or off`.
    pub expected: &'static str,
    /// Why a value of the right form is still wrong (`range '3-1' is reversed`).
    pub why: Option<String>,
}

impl BadValue {
    pub fn new(value: &str, expected: &'static str) -> BadValue {
        BadValue {
            value: value.to_string(),
            expected,
            why: None,
        }
    }

    pub fn because(value: &str, expected: &'static str, why: impl Into<String>) -> BadValue {
        BadValue {
            value: value.to_string(),
            expected,
            why: Some(why.into()),
        }
    }

    /// What is wrong, without the value: for callers that show it their own way.
    pub fn reason(&self) -> String {
        match &self.why {
            None => format!("expected {}", self.expected),
            Some(why) => format!("{why} (expected {})", self.expected),
        }
    }
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}': {}", self.value, self.reason())
    }
}

impl std::error::Error for BadValue {}
