//! `virsh`: the one way kvmtune calls libvirt, for the commands that run outside the hook
//! (`kvmtune check NAME`, `plan NAME`, the advisor's other VMs, `kvmtune balance`). Never from
//! the hook itself: libvirt holds the VM's lock while its hook runs, and calling it deadlocks.
//!
//! virsh takes a domain argument as an id first, then as a UUID, then as a name: a VM named
//! `7` would be taken for the running domain with id 7, one named after another VM's UUID for
//! that VM. So every call here that names a domain names it by UUID (`--domain UUID`), and a
//! name a user gives is first turned into its UUID by `uuid_of`, which checks virsh's answer
//! and else looks through every domain. A name is only ever passed after `--`, so one that
//! looks like an option (`--all`) is taken as a name.
//!
//! Every call is bounded in time (a hung libvirtd must not hang kvmtune) and fails with virsh's
//! own message, on one line.

use std::fmt;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::error::{BadValue, Error, Result};

/// A domain's UUID as libvirt prints it (`0f0e0d0c-0000-4000-8000-000000000001`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid(String);

impl FromStr for Uuid {
    type Err = BadValue;

    /// 32 hexadecimal digits, grouped 8-4-4-4-12 by dashes (libvirt's form) or not at all.
    fn from_str(text: &str) -> Result<Uuid, BadValue> {
        let text = text.trim();
        let digits: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
        let grouped = text.len() == 36
            && text
                .bytes()
                .enumerate()
                .all(|(i, b)| (b == b'-') == matches!(i, 8 | 13 | 18 | 23));
        if digits.len() != 32
            || !digits.iter().all(u8::is_ascii_hexdigit)
            || !(grouped || text.len() == 32)
        {
            return Err(BadValue::new(
                text,
                "a UUID such as 0f0e0d0c-0000-4000-8000-000000000001",
            ));
        }
        Ok(Uuid(text.to_ascii_lowercase()))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `virsh` program, on one connection.
#[derive(Debug, Clone)]
pub struct Virsh {
    /// `-c URI`; `None`: virsh's default (`LIBVIRT_DEFAULT_URI`, else its own).
    pub uri: Option<String>,
    /// One call may take this long; then it is killed.
    pub timeout: Duration,
}

impl Virsh {
    pub fn new(uri: Option<&str>) -> Virsh {
        Virsh {
            uri: uri.map(str::to_string),
            timeout: Duration::from_secs(30),
        }
    }

    /// The UUIDs of the running domains, or with `all` of every defined one.
    pub fn uuids(&self, all: bool) -> Result<Vec<Uuid>> {
        let args: &[&str] = if all {
            &["list", "--all", "--uuid"]
        } else {
            &["list", "--uuid"]
        };
        let out = self.run(args)?;
        out.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.parse().map_err(|e: BadValue| Error::Subprocess {
                    command: format!("virsh {}", args.join(" ")),
                    detail: format!("printed {e}"),
                })
            })
            .collect()
    }

    /// The domain's XML (`dumpxml`; live for a running domain).
    pub fn dumpxml(&self, uuid: &Uuid) -> Result<String> {
        self.run(&["dumpxml", "--domain", &uuid.0])
    }

    /// The domain's name.
    pub fn name(&self, uuid: &Uuid) -> Result<String> {
        Ok(self
            .run(&["domname", "--domain", &uuid.0])?
            .trim_end_matches('\n')
            .to_string())
    }

    /// `dommemstat` of the domain: `name value` lines.
    pub fn dommemstat(&self, uuid: &Uuid) -> Result<String> {
        self.run(&["dommemstat", "--domain", &uuid.0])
    }

    /// Set the domain's live balloon target, in KiB.
    pub fn setmem_kib(&self, uuid: &Uuid, kib: u64) -> Result<()> {
        let size = format!("{kib}KiB");
        self.run(&["setmem", "--domain", &uuid.0, "--size", &size, "--live"])
            .map(drop)
    }

    /// The UUID of the domain called `name`, and only that one: virsh's `domuuid` answers for
    /// an id or a UUID before a name, so its answer is kept only if that domain's name is
    /// `name`; else every domain's name is looked at.
    pub fn uuid_of(&self, name: &str) -> Result<Uuid> {
        if let Ok(out) = self.run(&["domuuid", "--", name]) {
            if let Ok(uuid) = out.trim().parse::<Uuid>() {
                if self.name(&uuid).is_ok_and(|n| n == name) {
                    return Ok(uuid);
                }
            }
        }
        for uuid in self.uuids(true)? {
            if self.name(&uuid).is_ok_and(|n| n == name) {
                return Ok(uuid);
            }
        }
        Err(Error::Domain(format!(
            "libvirt has no domain called '{name}'"
        )))
    }

    /// The XML of the domain called `name` (by its UUID).
    pub fn domain_xml(&self, name: &str) -> Result<String> {
        self.dumpxml(&self.uuid_of(name)?)
    }

    /// Run `virsh -q [-c URI] ARGS…`: its stdout, or an error with virsh's own message.
    fn run(&self, args: &[&str]) -> Result<String> {
        let command = format!("virsh {}", args.join(" "));
        let mut cmd = Command::new("virsh");
        cmd.arg("-q");
        if let Some(uri) = &self.uri {
            cmd.args(["-c", uri]);
        }
        let mut child = cmd
            .args(args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("run", "virsh", e))?;
        // Read both pipes while waiting: a large XML would otherwise fill the pipe and block.
        let out = reader(&mut child, true);
        let err = reader(&mut child, false);
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    // Our own child, by its handle.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Subprocess {
                        command,
                        detail: format!("no answer within {} s", self.timeout.as_secs()),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(Error::io("wait for", "virsh", e)),
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        if !status.success() {
            let msg = stderr
                .trim()
                .trim_start_matches("error: ")
                .replace('\n', " ");
            return Err(Error::Subprocess {
                command,
                detail: if msg.is_empty() {
                    status.to_string()
                } else {
                    msg
                },
            });
        }
        Ok(stdout)
    }
}

fn reader(child: &mut Child, stdout: bool) -> std::thread::JoinHandle<String> {
    let mut pipe: Box<dyn Read + Send> = if stdout {
        Box::new(child.stdout.take().expect("piped"))
    } else {
        Box::new(child.stderr.take().expect("piped"))
    };
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_in_libvirts_form_or_bare_are_taken_lowercased() {
        for (text, want) in [
            (
                "0f0e0d0c-0000-4000-8000-000000000001",
                "0f0e0d0c-0000-4000-8000-000000000001",
            ),
            (
                " 0F0E0D0C-0000-4000-8000-00000000000A\n",
                "0f0e0d0c-0000-4000-8000-00000000000a",
            ),
            (
                "0f0e0d0c000040008000000000000001",
                "0f0e0d0c000040008000000000000001",
            ),
        ] {
            assert_eq!(text.parse::<Uuid>().unwrap().to_string(), want, "{text:?}");
        }
        for bad in [
            "",
            "7",
            "web",
            "0f0e0d0c-0000-4000-8000-00000000000",
            "0f0e0d0c-0000-4000-8000-0000000000001",
            "0f0e0d0c00-00-4000-8000-000000000001",
            "0f0e0d0c-0000-4000-8000-00000000000g",
            "--all",
        ] {
            let err = bad.parse::<Uuid>().unwrap_err();
            assert!(err.to_string().contains("a UUID such as"), "{bad:?}: {err}");
        }
    }
}
