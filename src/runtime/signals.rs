//! The signal thread: SIGTERM and SIGINT are blocked in every thread and
//! taken here with sigwait, so no handler runs on a worker.

/// Blocks the shutdown signals in the calling thread (and the threads it
/// spawns afterwards). Call before starting workers.
pub fn block_shutdown_signals() {
    // SAFETY: plain libc signal-mask calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGTERM or SIGINT; returns the signal's name.
pub fn wait_for_shutdown_signal() -> &'static str {
    // SAFETY: as above; sigwait only reads the set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let mut sig: libc::c_int = 0;
        libc::sigwait(&set, &mut sig);
        if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        }
    }
}
