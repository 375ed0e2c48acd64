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

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::Mode;

use super::log;

/// How often to look for the device, or for a host, while there is none.
pub const POLL: Duration = Duration::from_millis(100);

/// Opens the port (read-write, non-blocking, never our controlling tty).
pub fn open(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    Ok(nix::fcntl::open(path, flags, Mode::empty())?)
}

/// Whether a host is connected now (no POLLHUP). Anything that is not a
/// virtio-serial port never reports POLLHUP while open, so counts as connected.
pub fn host_connected(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let hung_up = poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP));
    !hung_up
}

/// How long a host may be gone from the port and still count as the same
/// one (see `conn::serve`): the guest handles a disconnect and the connect
/// after it back to back, so a late end of stream is followed at once by a
/// connected port.
pub const LATE_EOF_GRACE: Duration = Duration::from_secs(1);

/// Whether a host is connected to the port behind `fd` within `grace`.
pub async fn host_back_within(fd: BorrowedFd<'_>, grace: Duration) -> bool {
    poll_for_host(fd, Some(grace)).await.is_some()
}

/// Returns once a host is connected to the port behind `fd`.
pub async fn wait_for_host(fd: BorrowedFd<'_>) {
    let waited = poll_for_host(fd, None).await.unwrap_or_default();
    if waited > Duration::ZERO {
        log!("host connected after {} ms", waited.as_millis());
    }
}

/// Polls until a host is connected, for at most `limit`: how long that
/// took, or `None` when the limit ran out first.
async fn poll_for_host(fd: BorrowedFd<'_>, limit: Option<Duration>) -> Option<Duration> {
    let mut waited = Duration::ZERO;
    while !host_connected(fd) {
        if limit.is_some_and(|limit| waited >= limit) {
            return None;
        }
        tokio::time::sleep(POLL).await;
        waited += POLL;
    }
    Some(waited)
}
