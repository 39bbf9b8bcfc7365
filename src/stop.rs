//! How the daemons (`balance`, `watch`) stop: SIGTERM (systemd) or SIGINT (a terminal) ends
//! them between two passes, never in the middle of one.

use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

use crate::error::{Error, Result};

/// SIGTERM and SIGINT, blocked so that they wait for `sigtimedwait` between passes instead of
/// killing the process in the middle of one. (Children get a clean mask: std resets it.)
pub struct StopSignals(SigSet);

impl StopSignals {
    pub fn block() -> Result<StopSignals> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set.thread_block()
            .map_err(|e| Error::State(format!("cannot block SIGTERM and SIGINT: {e}")))?;
        Ok(StopSignals(set))
    }

    /// Sleep up to `timeout`; the signal that ended the sleep early, if any.
    pub fn wait(&self, timeout: Duration) -> Result<Option<Signal>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let ts = libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            };
            // SAFETY: the set is a valid sigset_t, the info pointer may be null, `ts` lives
            // across the call.
            let n = unsafe { libc::sigtimedwait(self.0.as_ref(), std::ptr::null_mut(), &ts) };
            if n > 0 {
                return Ok(Signal::try_from(n).ok());
            }
            match nix::errno::Errno::last() {
                nix::errno::Errno::EAGAIN => return Ok(None),
                nix::errno::Errno::EINTR => continue,
                e => return Err(Error::State(format!("sigtimedwait: {e}"))),
            }
        }
    }
}
