//! The guest side of the virtio-serial port.
//!
//! The port is a character device that admits one opener at a time (a
//! second `open` fails with EBUSY). The agent opens it once and keeps it
//! open across host connections. While no host is connected, `read`
//! returns 0 and `poll` reports POLLHUP; writes would block. So end of
//! stream here means "the host went away for now": the agent ends the
//! session, polls until POLLHUP clears, and serves the next host on the same
//! file descriptor, skipping to its handshake. The device is reopened only
//! if it breaks (hot-unplug).
//!
//! This module is the device (opening it, seeing whether a host is there);
//! the loop that serves it is `serve_serial` in the parent module, and the
//! connection (`conn`) waits here for the next host.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use super::log;

/// How often to look for the device, or for a host, while there is none.
pub const POLL: Duration = Duration::from_millis(100);

/// Opens the port (read-write, non-blocking, never our controlling tty).
pub fn open(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // open(2) with a valid C string; the fd is ours on success.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether a host is connected now (no POLLHUP). Anything that is not a
/// virtio-serial port never reports POLLHUP while open, so counts as connected.
pub fn host_connected(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // One valid pollfd, no waiting.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    !(n > 0 && p.revents & libc::POLLHUP != 0)
}

/// Returns once a host is connected to the port behind `fd`.
pub async fn wait_for_host(fd: RawFd) {
    let mut waited = Duration::ZERO;
    while !host_connected(fd) {
        tokio::time::sleep(POLL).await;
        waited += POLL;
    }
    if waited > Duration::ZERO {
        log!("host connected after {} ms", waited.as_millis());
    }
}
