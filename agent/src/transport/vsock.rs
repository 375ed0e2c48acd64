//! AF_VSOCK streams and listeners, and [`FdStream`]: an async byte stream over
//! any non-blocking file descriptor that supports `poll` (a vsock socket, the
//! guest's virtio-serial character device).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::socket::{
    self, AddressFamily, Backlog, Shutdown, SockFlag, SockType, VsockAddr, sockopt,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::os;

/// Any CID: what a listener binds to (`VMADDR_CID_ANY`).
const CID_ANY: u32 = u32::MAX;

/// An async byte stream over a file descriptor.
#[derive(Debug)]
pub struct FdStream {
    fd: AsyncFd<OwnedFd>,
}

impl FdStream {
    /// Takes `fd`, makes it non-blocking and registers it with the runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        Ok(Self {
            fd: os::register(fd)?,
        })
    }

    pub fn async_fd(&self) -> &AsyncFd<OwnedFd> {
        &self.fd
    }
}

impl AsRawFd for FdStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let result = guard.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), unfilled)?));
            match result {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            let result = guard.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), buf)?));
            match result {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Sockets only; a character device has no half-close.
        match socket::shutdown(self.fd.as_raw_fd(), Shutdown::Write) {
            Ok(()) | Err(Errno::ENOTSOCK) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

fn socket() -> io::Result<OwnedFd> {
    Ok(socket::socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Connects to `cid:port`.
pub async fn connect(cid: u32, port: u32) -> io::Result<FdStream> {
    let fd = socket()?;
    let in_progress = match socket::connect(fd.as_raw_fd(), &VsockAddr::new(cid, port)) {
        Ok(()) => false,
        Err(Errno::EINPROGRESS) => true,
        Err(e) => return Err(e.into()),
    };
    let stream = FdStream::new(fd)?;
    if in_progress {
        let mut guard = stream.fd.writable().await?;
        guard.clear_ready();
        let err = socket::getsockopt(stream.fd.get_ref(), sockopt::SocketError)?;
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
    }
    Ok(stream)
}

/// A listening AF_VSOCK socket (any CID).
#[derive(Debug)]
pub struct VsockListener {
    fd: AsyncFd<OwnedFd>,
}

impl VsockListener {
    pub fn bind(port: u32) -> io::Result<Self> {
        let fd = socket()?;
        socket::bind(fd.as_raw_fd(), &VsockAddr::new(CID_ANY, port))?;
        socket::listen(&fd, Backlog::new(16)?)?;
        Ok(Self {
            fd: os::register(fd)?,
        })
    }

    /// The next connection and the peer's CID.
    pub async fn accept(&self) -> io::Result<(FdStream, u32)> {
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|fd| {
                let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
                Ok(os::adopt(socket::accept4(fd.as_raw_fd(), flags)?))
            });
            match result {
                Ok(Ok(fd)) => {
                    // The CID only names the peer in logs: a peer already
                    // gone still yields its (dead) connection, as accept does.
                    let cid = socket::getpeername::<VsockAddr>(fd.as_raw_fd())
                        .map_or(CID_ANY, |a| a.cid());
                    return Ok((FdStream::new(fd)?, cid));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Where the kernel has a vsock transport, a listener binds; connecting to
    /// a port nobody serves fails (or times out) instead of hanging.
    #[tokio::test]
    async fn listener_binds_and_connect_fails_cleanly() {
        let listener = match VsockListener::bind(crate::protocol::VSOCK_PORT + 1) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("skipped: no AF_VSOCK here: {e}");
                return;
            }
        };
        let accept = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
        assert!(accept.is_err(), "nobody connected");
        // CID 1 is the local host: works only with vsock_loopback.
        let r = tokio::time::timeout(Duration::from_secs(2), connect(1, 9)).await;
        if let Ok(r) = r {
            assert!(r.is_err(), "nothing listens on port 9");
        }
    }
}
