//! The wrapper's signals and QEMU's end. INT, TERM, HUP, QUIT and CHLD are blocked in kvmtune
//! from the start of `run` and taken with `sigtimedwait`, so they arrive only where the wrapper
//! looks for them: a Ctrl-C during `prepare` ends the run after the undo, not halfway through
//! it; once QEMU runs, each is passed on to QEMU, and QEMU's exit becomes kvmtune's.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The signals a wrapper passes on to its child.
pub const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The blocked signals, and the mask that was in place before (for QEMU).
pub struct Signals {
    set: libc::sigset_t,
    pub original: libc::sigset_t,
}

impl Signals {
    /// Block the forwarded signals and SIGCHLD in this (single-threaded) process. SIGCHLD goes
    /// back to its default first: inherited as ignored, it would never be queued, and QEMU's
    /// exit status would be reaped away by the kernel.
    pub fn block() -> Signals {
        // SAFETY: sigset_t values we own, initialised by sigemptyset before use.
        unsafe {
            libc::signal(libc::SIGCHLD, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut original: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in FORWARDED.iter().chain([libc::SIGCHLD].iter()) {
                libc::sigaddset(&mut set, *sig);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, &mut original);
            Signals { set, original }
        }
    }

    /// Wait up to `timeout` (forever with `None`) for one of the blocked signals.
    pub fn next(&self, timeout: Option<Duration>) -> Option<libc::c_int> {
        // SAFETY: valid set and timespec; siginfo is optional.
        let sig = unsafe {
            match timeout {
                Some(t) => {
                    let ts = libc::timespec {
                        tv_sec: t.as_secs() as libc::time_t,
                        tv_nsec: t.subsec_nanos() as libc::c_long,
                    };
                    libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts)
                }
                None => libc::sigwaitinfo(&self.set, std::ptr::null_mut()),
            }
        };
        (sig > 0).then_some(sig)
    }

    /// A forwarded signal that arrived and was not taken yet (taking it).
    pub fn take_pending(&self) -> Option<libc::c_int> {
        // SAFETY: sigset_t values we own.
        unsafe {
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut pending);
            let sig = FORWARDED
                .iter()
                .copied()
                .find(|s| libc::sigismember(&pending, *s) == 1)?;
            let _ = self.next(Some(Duration::ZERO));
            Some(sig)
        }
    }
}

/// QEMU's end as an exit status: its code, or 128 + the signal that killed it (as shells say).
pub fn exit_status(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// QEMU's exit status if it has ended (reaping it).
pub fn reap(pid: Pid) -> Option<i32> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(status) => exit_status(status),
        // Already reaped, or not ours: nothing left to wait for.
        Err(_) => Some(1),
    }
}

/// Pass a signal on to QEMU.
pub fn forward(pid: Pid, sig: libc::c_int) {
    if let Ok(signal) = Signal::try_from(sig) {
        let _ = kill(pid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_signals_become_shell_statuses() {
        let pid = Pid::from_raw(1);
        assert_eq!(exit_status(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            exit_status(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(exit_status(WaitStatus::StillAlive), None);
    }
}
