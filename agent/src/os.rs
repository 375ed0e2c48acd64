//! The agent's only `unsafe` code: three operations whose safety the
//! compiler cannot check, each wrapped here in a safe function. Everything
//! else reaches the OS through `nix` or `std`, and the crates deny
//! `unsafe_code` outside this module.
//!
//! - `register`: tokio's `AsyncFd::register` trusts its caller that the fd
//!   stays open and the same for the `AsyncFd`'s lifetime. An `OwnedFd` moved
//!   into it does.
//! - `adopt`: `nix::sys::socket::accept4` returns a bare `RawFd`; owning it
//!   is `OwnedFd::from_raw_fd`.
//! - [`reseed_crng`]: an ioctl is unchecked by the compiler; this one takes
//!   no argument and only needs an open random device.
//! - [`drop_privileges_on_exec`]: a `pre_exec` hook runs in the forked child
//!   of a possibly multi-threaded process, where only async-signal-safe calls
//!   are allowed. std's `Command::uid`/`gid` would do without `unsafe`, but
//!   they clear the supplementary groups and setting them (`groups`) is not
//!   stable.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
use tokio::io::unix::AsyncFd;

/// Registers `fd` with the runtime's reactor (read and write interest).
pub(crate) fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and names the
    // same file until the AsyncFd drops it.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

/// Takes ownership of `fd`, a descriptor `accept4` has just returned.
///
/// Only for a descriptor nothing else owns or will close: the fresh result
/// of a system call that creates one.
pub(crate) fn adopt(fd: RawFd) -> OwnedFd {
    // SAFETY: per the contract above, `fd` is open and has no other owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Makes the process `cmd` spawns drop root for `uid`/`gid` with the
/// supplementary `groups`, between fork and exec: groups, then gid, then uid.
pub fn drop_privileges_on_exec(
    cmd: &mut tokio::process::Command,
    uid: u32,
    gid: u32,
    groups: &[u32],
) {
    let uid = Uid::from_raw(uid);
    let gid = Gid::from_raw(gid);
    // Prepared here, before the fork: the hook allocates nothing.
    let groups: Vec<Gid> = groups.iter().copied().map(Gid::from_raw).collect();
    let hook = move || -> io::Result<()> {
        setgroups(&groups)?;
        setgid(gid)?;
        setuid(uid)?;
        Ok(())
    };
    // SAFETY: the hook makes three plain system calls (nix passes its
    // arguments through, and an error converts to io::Error without
    // allocating): async-signal-safe, as the forked child requires.
    unsafe {
        cmd.pre_exec(hook);
    }
}

// RNDRESEEDCRNG from <linux/random.h>: _IO('R', 0x07).
nix::ioctl_none!(rnd_reseed_crng, b'R', 0x07);

/// Makes the kernel's CRNG reseed from its input pool now (needs
/// CAP_SYS_ADMIN; `random` is `/dev/random` or `/dev/urandom`).
pub fn reseed_crng(random: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: RNDRESEEDCRNG takes no argument; the fd is open for the
    // call's duration, borrowed from `random`.
    unsafe { rnd_reseed_crng(random.as_raw_fd()) }?;
    Ok(())
}
