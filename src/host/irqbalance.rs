//! irqbalance rewrites the affinity of every IRQ it has not banned, every 10 s. While CPUs are
//! isolated it must leave them alone: its socket (`/run/irqbalance/irqbalance<PID>.sock`) takes
//! `settings cpus <list>` (the CPUs it must not use) at run time, and `setup` answers with the
//! current set (`… BANNED <mask>`), which kvmtune gives back at the end.

use std::io::{IoSlice, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixCredentials};

use crate::cpulist::CpuSet;
use crate::error::{Error, Result};
use crate::host::{HostFs, RootFs};

pub const SOCKET_DIR: &str = "run/irqbalance";

/// A running irqbalance's answer to `setup`, and which irqbalance gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its PID (from its socket's name): a restarted irqbalance is another one, which starts
    /// from its own set whatever its predecessor was told.
    pub pid: u32,
    /// The CPUs it is banned from now.
    pub banned: CpuSet,
}

/// Talking to a running irqbalance.
pub trait IrqBalancer {
    /// Its answer now; `None` when no irqbalance runs.
    fn banned(&self) -> Result<Option<Answer>>;
    /// Ban exactly these CPUs (empty: none).
    fn set_banned(&self, cpus: &CpuSet) -> Result<()>;
}

/// The irqbalance of this host, found through its socket under the root (`/run/irqbalance`
/// is resolved under `--root` like /proc, so tests can stand in for it).
pub struct IrqbalanceSocket {
    fs: RootFs,
}

impl IrqbalanceSocket {
    pub fn new(root: &std::path::Path) -> Self {
        IrqbalanceSocket {
            fs: RootFs::new(root),
        }
    }

    /// The PID and socket of a live irqbalance, if one runs.
    fn socket(&self) -> Option<(u32, PathBuf)> {
        self.fs.list(SOCKET_DIR).ok()?.into_iter().find_map(|name| {
            let pid = name.strip_prefix("irqbalance")?.strip_suffix(".sock")?;
            let comm = self.fs.read(&format!("proc/{pid}/comm")).ok()?;
            let path = self.fs.display(&format!("{SOCKET_DIR}/{name}"));
            (comm.trim() == "irqbalance").then_some((pid.parse().ok()?, path))
        })
    }

    fn ask(&self, path: &PathBuf, message: &str) -> Result<String> {
        let mut stream = UnixStream::connect(path).map_err(|e| Error::io("connect to", path, e))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| Error::io("configure", path, e))?;
        // irqbalance accepts commands only from root, checked through SCM_CREDENTIALS.
        let creds = UnixCredentials::new();
        sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(message.as_bytes())],
            &[ControlMessage::ScmCredentials(&creds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(|e| Error::io("send to", path, e.into()))?;
        let mut reply = String::new();
        // Commands other than queries get no answer: the connection just closes.
        let _ = stream.read_to_string(&mut reply);
        Ok(reply)
    }
}

impl IrqBalancer for IrqbalanceSocket {
    fn banned(&self) -> Result<Option<Answer>> {
        let Some((pid, path)) = self.socket() else {
            return Ok(None);
        };
        let reply = self.ask(&path, "setup")?;
        parse_setup(&reply)
            .map(|banned| Some(Answer { pid, banned }))
            .ok_or_else(|| Error::parse(&path, &reply, "not irqbalance's answer to setup"))
    }

    fn set_banned(&self, cpus: &CpuSet) -> Result<()> {
        let Some((_, path)) = self.socket() else {
            return Ok(()); // it stopped meanwhile: nothing left to tell
        };
        let list = if cpus.is_empty() {
            "NULL".to_string()
        } else {
            cpus.to_string()
        };
        self.ask(&path, &format!("settings cpus {list}")).map(drop)
    }
}

/// The banned CPUs from irqbalance's `setup` answer (`SLEEP 10 … BANNED 0000000c`).
pub fn parse_setup(reply: &str) -> Option<CpuSet> {
    let mask = reply
        .split_whitespace()
        .skip_while(|w| *w != "BANNED")
        .nth(1)?;
    CpuSet::parse_mask(mask).ok()
}

/// A host without irqbalance (and the fake for tests that do not care).
pub struct NoIrqbalance;

impl IrqBalancer for NoIrqbalance {
    fn banned(&self) -> Result<Option<Answer>> {
        Ok(None)
    }

    fn set_banned(&self, _: &CpuSet) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    /// A stand-in irqbalance under a fake root: its socket `run/irqbalance/irqbalance<PID>.sock`
    /// and `proc/<PID>/comm`, answering one `setup` as irqbalance does.
    #[test]
    fn the_answer_names_the_irqbalance_that_gave_it() {
        let root = tempfile::tempdir().unwrap();
        let pid = 4321;
        std::fs::create_dir_all(root.path().join(SOCKET_DIR)).unwrap();
        std::fs::create_dir_all(root.path().join(format!("proc/{pid}"))).unwrap();
        std::fs::write(root.path().join(format!("proc/{pid}/comm")), "irqbalance\n").unwrap();
        let listener = UnixListener::bind(
            root.path()
                .join(format!("{SOCKET_DIR}/irqbalance{pid}.sock")),
        )
        .unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut asked = [0u8; 64];
            let n = stream.read(&mut asked).unwrap();
            assert_eq!(&asked[..n], b"setup");
            stream.write_all(b"SLEEP 10 BANNED 00000008").unwrap();
        });

        let answer = IrqbalanceSocket::new(root.path()).banned().unwrap();

        server.join().unwrap();
        assert_eq!(
            answer,
            Some(Answer {
                pid,
                banned: CpuSet::from_ids([3])
            })
        );
    }

    #[test]
    fn setup_answer_gives_the_banned_cpus() {
        assert_eq!(
            parse_setup("SLEEP 10 BANNED 0000000c"),
            Some(CpuSet::from_ids([2, 3]))
        );
        assert_eq!(
            parse_setup("SLEEP 10 IRQ 5 LOAD 0 DIFF 0 CLASS 0 BANNED 00000000"),
            Some(CpuSet::new())
        );
        assert_eq!(parse_setup("garbage"), None);
    }
}
