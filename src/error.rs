//! One error type for the crate. Every variant renders as one line a user can act on: libvirt
//! shows the hook's stderr to whoever ran `virsh start`, so the line must say what and why.
//! Each kind carries what explains it: host I/O its path and errno, a value kvmtune cannot read
//! the file and the value, a program its command and its own message; `BadValue` is the error
//! of every value word's `FromStr`.

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
    /// A host file (or a daemon's answer) holds what kvmtune cannot read.
    Parse {
        /// Where the value came from: a file, or a daemon's socket.
        path: PathBuf,
        /// The value, trimmed.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// The host lacks what kvmtune needs (no NUMA node, a cgroup hierarchy unmounted).
    Host(String),
    /// A program kvmtune ran (`virsh`, `systemctl`) failed or did not answer in time.
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

    /// A value read from `path` that kvmtune cannot use, and why.
    pub fn parse(path: impl Into<PathBuf>, value: &str, why: impl Into<String>) -> Self {
        Error::Parse {
            path: path.into(),
            value: value.trim().to_string(),
            why: why.into(),
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
            Error::Parse { path, value, why } => write!(
                f,
                "{} holds '{}': {why}",
                path.display(),
                value.replace(['\n', '\r'], " ")
            ),
            Error::Usage(m)
            | Error::Config(m)
            | Error::Domain(m)
            | Error::Refused(m)
            | Error::State(m)
            | Error::Host(m) => f.write_str(m),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_one_line_with_what_explains_it() {
        let cases = [
            (
                Error::io("write", "/sys/x", io::Error::from_raw_os_error(libc::EIO)),
                "cannot write /sys/x: Input/output error (os error 5)",
                1,
            ),
            (
                Error::parse(
                    "/sys/devices/system/cpu/online",
                    "0-\n",
                    "range '0-' is bad",
                ),
                "/sys/devices/system/cpu/online holds '0-': range '0-' is bad",
                1,
            ),
            (
                Error::parse("/run/irqbalance/x.sock", "a\nb", "not an answer"),
                "/run/irqbalance/x.sock holds 'a b': not an answer",
                1,
            ),
            (
                Error::Subprocess {
                    command: "virsh domuuid -- 7".into(),
                    detail: "failed to get domain '7'".into(),
                },
                "virsh domuuid -- 7 failed: failed to get domain '7'",
                1,
            ),
            (
                Error::Host("no NUMA nodes under /sys".into()),
                "no NUMA nodes under /sys",
                1,
            ),
            (Error::Config("policy: x".into()), "policy: x", 2),
            (Error::Usage("give a NAME".into()), "give a NAME", 2),
        ];
        for (err, line, code) in cases {
            assert_eq!(err.to_string(), line);
            assert!(!err.to_string().contains('\n'));
            assert_eq!(err.exit_code(), code, "{line}");
        }
    }

    #[test]
    fn a_bad_value_names_the_value_and_what_is_accepted() {
        let e = BadValue::new("yes", "auto, on or off");
        assert_eq!(e.to_string(), "'yes': expected auto, on or off");
        let e = BadValue::because("3-1", "a CPU list", "range '3-1' is reversed");
        assert_eq!(e.reason(), "range '3-1' is reversed (expected a CPU list)");
        assert_eq!(
            e.to_string(),
            "'3-1': range '3-1' is reversed (expected a CPU list)"
        );
    }
}
