//! Starting QEMU as our child: `fork`, let the parent record the child before it runs, then
//! `exec` with the process settings applied.
//!
//! std's `Command` returns only once the child has exec'd. kvmtune needs a step in between:
//! while the child waits on a pipe, the parent (holding the state lock) records its PID, so no
//! other kvmtune confines a VM's QEMU as a host task between fork and record. Only system calls
//! happen in the child between `fork` and `exec`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use super::process::{RawSettings, Settings, Step};
use crate::error::{Error, Result};

/// Report code for a failed `execve`, beside the `Step`s of the settings.
const EXEC: u8 = 0xff;

/// Start `program` with `argv` (argv[0] included). `settings` are applied in the child;
/// `signal_mask` is the mask the child runs QEMU with; `before_exec` runs in the parent with
/// the child's PID while the child waits. Returns once QEMU runs (the exec succeeded).
pub fn spawn(
    program: &Path,
    argv: &[String],
    settings: &Settings,
    signal_mask: &libc::sigset_t,
    before_exec: &mut dyn FnMut(Pid) -> Result<()>,
) -> Result<Pid> {
    let path = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| Error::Usage(format!("{} contains a NUL byte", program.display())))?;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::Usage("a QEMU argument contains a NUL byte".into()))?;
    let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    arg_ptrs.push(std::ptr::null());
    let raw = settings.raw();
    let (report_read, report_write) = pipe()?;
    let (go_read, go_write) = pipe()?;
    let parent = std::process::id() as libc::pid_t;

    // SAFETY: kvmtune is single-threaded here; the child makes only system calls (no
    // allocation, no locks) before exec or _exit.
    match unsafe { fork() }.map_err(|e| Error::io("fork for", program, e.into()))? {
        ForkResult::Child => {
            drop(report_read);
            drop(go_write);
            child(
                &path,
                &arg_ptrs,
                &raw,
                signal_mask,
                parent,
                go_read.as_raw_fd(),
                report_write.as_raw_fd(),
            )
        }
        ForkResult::Parent { child } => {
            drop(report_write);
            drop(go_read);
            if let Err(e) = before_exec(child) {
                // The child is still waiting: end it before it becomes QEMU.
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(e);
            }
            let go = nix::unistd::write(&go_write, b"g");
            drop(go_write);
            go.map_err(|e| Error::io("start", program, e.into()))?;
            // EOF: the report pipe closed on exec. Otherwise the child says what failed.
            let mut report = [0u8; 5];
            let n = read_full(&report_read, &mut report);
            if n == 0 {
                return Ok(child);
            }
            let _ = waitpid(child, None);
            let errno = i32::from_ne_bytes([report[1], report[2], report[3], report[4]]);
            let step = match report[0] {
                1 => Some(Step::MemPolicy),
                2 => Some(Step::MemLock),
                3 => Some(Step::Affinity),
                _ => None,
            };
            Err(match step {
                Some(step) => Error::Refused(settings.describe(step, errno)),
                None => Error::io("run", program, std::io::Error::from_raw_os_error(errno)),
            })
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("create", "a pipe", e.into()))
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    n
}

/// The child's side: only async-signal-safe calls.
fn child(
    path: &CString,
    argv: &[*const libc::c_char],
    settings: &RawSettings,
    signal_mask: &libc::sigset_t,
    parent: libc::pid_t,
    go: libc::c_int,
    report: libc::c_int,
) -> ! {
    let fail = |code: u8, errno: i32| -> ! {
        let e = errno.to_ne_bytes();
        let msg = [code, e[0], e[1], e[2], e[3]];
        // SAFETY: plain system calls on our own descriptors.
        unsafe {
            libc::write(report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // SAFETY: system calls only, on memory prepared before fork.
    unsafe {
        // If kvmtune dies (kill -9), QEMU is told to shut down rather than run on unsupervised:
        // then `kvmtune recover` can release what the VM held. Checked after setting, in case
        // the parent died before.
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        // Rust ignores SIGPIPE; QEMU starts with the defaults and the caller's signal mask.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::sigprocmask(libc::SIG_SETMASK, signal_mask, std::ptr::null_mut());
        let mut byte = 0u8;
        loop {
            let n = libc::read(go, (&mut byte as *mut u8).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            libc::_exit(1); // the parent gave up
        }
        libc::close(go);
        if let Err((step, errno)) = settings.apply() {
            fail(step as u8, errno);
        }
        libc::execv(path.as_ptr(), argv.as_ptr());
        fail(EXEC, *libc::__errno_location())
    }
}

/// Become `program` (`argv` includes argv[0]) with SIGPIPE at its default and, when given, the
/// signal mask `signal_mask`. Returns only the reason it could not.
pub fn exec<S: AsRef<std::ffi::OsStr>>(
    program: &Path,
    argv: &[S],
    signal_mask: Option<&libc::sigset_t>,
) -> Error {
    let path = match CString::new(program.as_os_str().as_bytes()) {
        Ok(p) => p,
        Err(_) => return Error::Usage(format!("{} contains a NUL byte", program.display())),
    };
    let args: Vec<CString> = match argv
        .iter()
        .map(|a| CString::new(a.as_ref().as_bytes()))
        .collect()
    {
        Ok(a) => a,
        Err(_) => return Error::Usage("a QEMU argument contains a NUL byte".into()),
    };
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: valid C strings and a NULL-terminated argv that outlive the call.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if let Some(mask) = signal_mask {
            libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut());
        }
        libc::execv(path.as_ptr(), ptrs.as_ptr());
    }
    Error::io("run", program, std::io::Error::last_os_error())
}
