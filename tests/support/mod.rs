//! End-to-end test harness shared by every e2e test file (`mod support;`).
//!
//! `let Some(env) = support::e2e() else { return };` gives a test throwaway
//! XDG dirs and a project dir under one temp root, a way to run the real `rum`
//! binary there, plain-QEMU guests for tests that bypass rum, and a guarantee
//! that no QEMU or virtiofsd started for the test outlives it.

// Each test crate compiles this module and uses only part of it.
#![allow(dead_code, unused_imports)]

mod audit;
mod firmware;
mod gate;
mod guest;
mod http;
mod kill;
mod logs;
mod loopfs;
mod procs;
mod pty;
mod rum;
mod slot;
mod ssh;
mod wait;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use audit::exposed;
pub use firmware::Firmware;
pub use gate::Tools;
pub use guest::{Guest, GuestBuilder};
pub use http::{Fault, FileServer, Served};
pub use kill::At;
pub use loopfs::{LoopFs, may_mount};
pub use procs::Registry;
pub use pty::Pty;
pub use rum::RumRun;
pub use ssh::{HostKeys, Ssh, SshKey};
pub use wait::{free_port, wait_until};

/// One test's environment: tools, a private temp root and what runs in it.
pub struct E2e {
    pub tools: Tools,
    /// Canonical path of the test's temp root; everything below lives here.
    pub root: PathBuf,
    pub xdg: Xdg,
    /// HOME for `rum`, so it never reads or writes the developer's own.
    pub home: PathBuf,
    /// Where `rum` runs and `rum.toml` goes.
    pub project: PathBuf,
    pub procs: Registry,
    // Freed after the VMs are gone, so the next test's boot starts on free cores.
    _slot: slot::Slot,
    // Declared last so the directory outlives the processes using it.
    _dir: tempfile::TempDir,
}

/// The XDG base dirs handed to `rum`, all under the test's root.
pub struct Xdg {
    pub data: PathBuf,
    pub cache: PathBuf,
    pub config: PathBuf,
    pub runtime: PathBuf,
}

/// The test's environment, or `None` (after a visible "skipped" line) when a
/// tool or the image is missing and `RUM_E2E=1` is not set. With
/// `RUM_E2E=1`, anything missing panics with how to get it.
pub fn e2e() -> Option<E2e> {
    e2e_with_guests(1)
}

/// `e2e` for a test that runs `guests` guests at once: it holds as many
/// VM slots.
pub fn e2e_with_guests(guests: usize) -> Option<E2e> {
    let tools = gate::tools()?;
    let slot = slot::acquire(guests);
    // Short prefix: rum's sockets live under this root and must stay under 108 bytes.
    let dir = tempfile::Builder::new()
        .prefix("rum-e2e-")
        .tempdir()
        .expect("create the test's temp root");
    let root = dir
        .path()
        .canonicalize()
        .expect("canonicalize the temp root");
    let xdg = Xdg {
        data: mkdir(&root, "data"),
        cache: mkdir(&root, "cache"),
        config: mkdir(&root, "config"),
        runtime: mkdir(&root, "run"),
    };
    fs::set_permissions(&xdg.runtime, fs::Permissions::from_mode(0o700))
        .expect("make the runtime dir 0700");
    let home = mkdir(&root, "home");
    let project = mkdir(&root, "project");
    Some(E2e {
        tools,
        procs: Registry::new(&root),
        root,
        xdg,
        home,
        project,
        _slot: slot,
        _dir: dir,
    })
}

impl E2e {
    /// A fresh directory under the test's root, for files a test makes itself.
    pub fn dir(&self, name: &str) -> PathBuf {
        mkdir(&self.root, name)
    }

    /// The data dir of the test's VM, once rum made one.
    pub fn instance_dir(&self) -> Option<PathBuf> {
        fs::read_dir(self.xdg.data.join("rum"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.is_dir())
    }
}

impl Drop for E2e {
    fn drop(&mut self) {
        self.procs.kill_all();
        if std::thread::panicking() {
            logs::dump(&self.root);
        }
        // A VM killed here was never stopped by rum: free its RAM file.
        let shm = PathBuf::from(format!("/dev/shm/rum-{}", nix::unistd::getuid()));
        for instance in fs::read_dir(self.xdg.data.join("rum"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = fs::remove_file(
                shm.join(format!("{}.ram", instance.file_name().to_string_lossy())),
            );
        }
    }
}

fn mkdir(parent: &Path, name: &str) -> PathBuf {
    let path = parent.join(name);
    fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    path
}
