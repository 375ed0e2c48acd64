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

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rum_agent::transport::vsock::FdStream;

use super::conn::{self, EndOfStream};
use super::{Agent, log};

/// How often to look for the device, or for a host, while there is none.
const POLL: Duration = Duration::from_millis(100);

/// Serves the port at `path` forever (waiting for it to appear).
pub async fn serve(agent: Arc<Agent>, path: PathBuf) {
    let mut complained = false;
    loop {
        let fd = match open(&path) {
            Ok(fd) => fd,
            Err(e) => {
                if !complained {
                    log!("cannot open {} yet ({e}); retrying", path.display());
                    complained = true;
                }
                tokio::time::sleep(POLL * 10).await;
                continue;
            }
        };
        complained = false;
        let raw = fd.as_raw_fd();
        let stream = match FdStream::new(fd) {
            Ok(s) => s,
            Err(e) => {
                log!("cannot poll {}: {e}", path.display());
                tokio::time::sleep(POLL * 10).await;
                continue;
            }
        };
        log!("serving {}", path.display());
        if !host_connected(raw) {
            wait_for_host(raw).await;
        }
        match conn::serve(agent.clone(), stream, EndOfStream::WaitForHost(raw)).await {
            Ok(()) => {}
            Err(e) => log!("{} failed: {e}; reopening", path.display()),
        }
        tokio::time::sleep(POLL).await;
    }
}

fn open(path: &Path) -> io::Result<OwnedFd> {
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
fn host_connected(fd: RawFd) -> bool {
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
