//! Test-only hooks, read from the environment, so that tests can fail a step
//! on purpose or make a race certain. Unset, they cost one lookup.
//!
//! - `RUM_TEST_FAIL_AFTER=<milestone>`: fail right after that milestone.
//! - `RUM_TEST_PAUSE_AT=<point>` with `RUM_TEST_GATE=<file>`: at that point
//!   rum writes its pid to `<file>.reached` and waits until `<file>` exists.
//!   A point `job:<id>` is right after QEMU started the job `<id>`
//!   (`rum-save-<tag>`, `rum-load-<tag>`, `rum-delete-<tag>`);
//!   `milestone:<key>` as a milestone starts; `qemu_started` between QEMU's
//!   start and its record; `cloud_init` before that wait; `step:<title>`
//!   once the guest runs a provisioning step; `removing_files` in `destroy`;
//!   `image_verify` once a download is whole, `image_commit` half-way
//!   through moving it into the cache; `bake_generalise` once a bake's
//!   throwaway QEMU started.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A gate nobody opens must not hang a test run forever.
const GATE_LIMIT: Duration = Duration::from_secs(600);

/// The milestone a test wants a failure injected after, if any.
pub fn fail_after() -> Option<String> {
    std::env::var("RUM_TEST_FAIL_AFTER").ok()
}

/// Stops at `point` while a test holds the gate shut.
pub fn pause(point: &str) {
    if std::env::var("RUM_TEST_PAUSE_AT").ok().as_deref() != Some(point) {
        return;
    }
    let Some(gate) = std::env::var_os("RUM_TEST_GATE").map(PathBuf::from) else {
        return;
    };
    let mut reached = OsString::from(gate.as_os_str());
    reached.push(".reached");
    let _ = std::fs::write(PathBuf::from(reached), std::process::id().to_string());
    let started = Instant::now();
    while !gate.exists() && started.elapsed() < GATE_LIMIT {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pause point `job:<id>`, for rum-qmp's job hook.
pub fn job_started(id: &str) {
    pause(&format!("job:{id}"));
}
