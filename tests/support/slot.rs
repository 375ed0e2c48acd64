//! A VM slot: at most `RUM_TEST_VMS` end-to-end tests (default: the CPU count)
//! run at once across every test binary, so `scripts/run-tests` can run the
//! binaries side by side without stacking more TCG guests on the cores than
//! the suite's timeouts allow for.

use std::fs::{self, File, OpenOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Held while the test runs; the kernel frees it when the process dies.
pub struct Slot {
    _file: File,
}

pub fn acquire() -> Slot {
    let count = std::env::var("RUM_TEST_VMS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let dir = std::env::temp_dir().join(format!("rum-e2e-slots-{}", nix::unistd::getuid()));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let started = Instant::now();
    let mut said = false;
    loop {
        for n in 0..count {
            let path: PathBuf = dir.join(format!("slot-{n}"));
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            if file.try_lock().is_ok() {
                if said {
                    eprintln!("got VM slot {n} after {:?}", started.elapsed());
                }
                return Slot { _file: file };
            }
        }
        if !said {
            eprintln!("waiting for one of {count} VM slots ({})", dir.display());
            said = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
