//! The operating-system calls the fault tests need that std does not offer: a signal other than
//! SIGKILL, and a connection closed with a reset. Here, in the development tools, so that the
//! service, the protocol crate and the binary can forbid `unsafe` and never link `libc` for it.

use std::os::fd::AsRawFd as _;

/// Sends SIGTERM to process `pid`: the graceful stop an orchestrator asks for.
pub fn terminate(pid: u32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Closes `stream` with an RST instead of a FIN (SO_LINGER 0): a connection reset for the peer.
pub fn reset(stream: tokio::net::TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket we own, with a correctly sized `linger` value. Should it
    // fail, the close below is an ordinary FIN.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}
