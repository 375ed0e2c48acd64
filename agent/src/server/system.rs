//! What the agent asks of the guest OS: users, the clock, ids, process groups.
//!
//! Users come from `/etc/passwd` and `/etc/group`, read directly: the agent is
//! a static binary, and glibc's NSS functions in a static binary need the
//! shared libraries of the exact glibc it was built with.

use std::fs;
use std::io;
use std::path::Path;

use nix::sys::signal::{Signal, killpg};
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_gettime, clock_settime};
use nix::unistd::Pid;

/// A user to run a process as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    /// Supplementary groups (the primary one included).
    pub groups: Vec<u32>,
}

/// Looks `spec` (a name, or a numeric uid) up in `/etc/passwd` and `/etc/group`.
pub fn lookup_user(spec: &str) -> io::Result<User> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    find_user(&passwd, &group, spec).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no user {spec:?} in /etc/passwd"),
        )
    })
}

fn find_user(passwd: &str, group: &str, spec: &str) -> Option<User> {
    let numeric = spec.parse::<u32>().ok();
    let user = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        let uid = f[2].parse::<u32>().ok()?;
        let gid = f[3].parse::<u32>().ok()?;
        (f[0] == spec || numeric == Some(uid)).then(|| User {
            name: f[0].to_string(),
            uid,
            gid,
            home: f[5].to_string(),
            shell: f[6].to_string(),
            groups: vec![gid],
        })
    })?;
    let mut user = user;
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            continue;
        }
        let Ok(gid) = f[2].parse::<u32>() else {
            continue;
        };
        if f[3].split(',').any(|m| m == user.name) && !user.groups.contains(&gid) {
            user.groups.push(gid);
        }
    }
    Some(user)
}

/// Sends SIGKILL to the process group `pgid`.
pub fn kill_group(pgid: u32) {
    if pgid > 1 {
        // The group the agent created for one process (its leader's pid).
        let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
    }
}

/// The wall clock, ns since the epoch.
pub fn now_unix_ns() -> i64 {
    // CLOCK_REALTIME always reads; were it not to, this says the epoch.
    let ts = clock_gettime(ClockId::CLOCK_REALTIME).unwrap_or(TimeSpec::new(0, 0));
    ts.tv_sec() * 1_000_000_000 + ts.tv_nsec()
}

pub fn now_unix_ms() -> i64 {
    now_unix_ns() / 1_000_000
}

/// Sets the wall clock; returns the time it showed just before.
pub fn set_clock(unix_ns: i64) -> io::Result<i64> {
    let ts = TimeSpec::new(
        unix_ns.div_euclid(1_000_000_000),
        unix_ns.rem_euclid(1_000_000_000),
    );
    let previous = now_unix_ns();
    clock_settime(ClockId::CLOCK_REALTIME, ts)?;
    Ok(previous)
}

/// Mixes `seed` into the kernel's entropy pool and has the RNG reseed from
/// it now rather than at its next scheduled reseed.
pub fn reseed(seed: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut urandom = fs::OpenOptions::new().write(true).open("/dev/urandom")?;
    urandom.write_all(seed)?;
    rum_agent::os::reseed_crng(&urandom)
}

/// The kernel's boot id (or the content of `path` when tests stand in for it).
pub fn boot_id(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// First 16 hex digits of the SHA-256 of the running executable.
pub fn build_id() -> String {
    let Ok(bytes) = fs::read("/proc/self/exe") else {
        return "unknown".to_string();
    };
    rum_agent::protocol::build_id_of(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_users_by_name_or_uid_with_groups() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nrum:x:1000:1000::/home/rum:/bin/sh\n";
        let group = "root:x:0:\nrum:x:1000:\nsudo:x:27:rum,other\nkvm:x:104:other\n";
        let u = find_user(passwd, group, "rum").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/rum"));
        assert_eq!(u.groups, vec![1000, 27]);
        assert_eq!(find_user(passwd, group, "1000").unwrap().name, "rum");
        assert!(find_user(passwd, group, "nobody").is_none());
    }
}
