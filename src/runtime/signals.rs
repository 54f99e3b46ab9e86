//! The signal thread: SIGTERM, SIGINT and SIGHUP are blocked in every
//! thread and taken here with sigwait, so no handler runs on a worker.
//! SIGTERM/SIGINT start a drain; SIGHUP reloads the configuration.

/// The signals the main thread takes.
fn signal_set() -> libc::sigset_t {
    // SAFETY: plain libc signal-set calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Blocks the shutdown and reload signals in the calling thread (and the
/// threads it spawns afterwards). Call before starting workers.
pub fn block_shutdown_signals() {
    let set = signal_set();
    // SAFETY: as above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGTERM or SIGINT; returns the signal's name. A SIGHUP in
/// the meantime is ignored.
pub fn wait_for_shutdown_signal() -> &'static str {
    wait_for_shutdown_signal_or_reload(|| {})
}

/// Waits for SIGTERM or SIGINT, calling `reload` for each SIGHUP on the
/// way; returns the name of the shutdown signal.
pub fn wait_for_shutdown_signal_or_reload(mut reload: impl FnMut()) -> &'static str {
    let set = signal_set();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait only reads the set.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc != 0 {
            continue;
        }
        match sig {
            libc::SIGINT => return "SIGINT",
            libc::SIGTERM => return "SIGTERM",
            libc::SIGHUP => {
                tracing::info!("SIGHUP: reloading the configuration");
                reload();
            }
            _ => {}
        }
    }
}
