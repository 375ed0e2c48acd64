//! A VM slot: at most `RUM_TEST_VMS` end-to-end tests (default: the CPU count)
//! run at once across every test binary, so `scripts/run-tests` can run the
//! binaries side by side without stacking more TCG guests on the cores than
//! the suite's timeouts allow for. Waiters are served first come, first
//! served (a ticket file each), so a test that waits is not passed over by
//! tests that came later: the runner starts the longest binaries first.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Held while the test runs; the kernel frees it when the process dies.
pub struct Slot {
    files: Vec<File>,
    waited: Duration,
    taken: Instant,
}

/// With `RUM_TEST_SLOT_LOG` (set by `scripts/run-tests`), each test adds a
/// line there when it lets its slots go: its name, how many slots, how long
/// it waited for them and how long it held them, in seconds.
impl Drop for Slot {
    fn drop(&mut self) {
        let Some(log) = std::env::var_os("RUM_TEST_SLOT_LOG") else {
            return;
        };
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        let line = format!(
            "{name}\t{}\t{:.0}\t{:.0}\n",
            self.files.len(),
            self.waited.as_secs_f64(),
            self.taken.elapsed().as_secs_f64()
        );
        // One short append per test: whole lines, even from several processes.
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(log) {
            let _ = std::io::Write::write_all(&mut f, line.as_bytes());
        }
    }
}

/// One slot per guest the test runs at once (at most all of them), taken
/// together so that two tests never each hold one while waiting for more.
pub fn acquire(guests: usize) -> Slot {
    let count = std::env::var("RUM_TEST_VMS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        // Three on two cores kept both busy but finished no sooner (2500 s
        // against 2542 s of tests) and loaded the host enough to break a race.
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let dir = std::env::temp_dir().join(format!("rum-e2e-slots-{}", nix::unistd::getuid()));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let ticket = Ticket::take(&dir);
    let started = Instant::now();
    let mut said = false;
    let want = guests.clamp(1, count);
    loop {
        if ticket.is_first() {
            let mut held = Vec::new();
            for n in 0..count {
                let path: PathBuf = dir.join(format!("slot-{n}"));
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                if file.try_lock().is_ok() {
                    held.push(file);
                    if held.len() == want {
                        if said {
                            eprintln!("got {want} VM slot(s) after {:?}", started.elapsed());
                        }
                        return Slot {
                            files: held,
                            waited: started.elapsed(),
                            taken: Instant::now(),
                        };
                    }
                }
            }
            // Too few free: the ones taken go back (closing unlocks them),
            // and this ticket stays first in the queue.
            drop(held);
        }
        if !said {
            eprintln!("waiting for one of {count} VM slots ({})", dir.display());
            said = true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A place in the queue: `wait-<nanos>-<pid>-<n>`, removed when dropped;
/// a dead process's ticket is skipped.
struct Ticket {
    path: PathBuf,
}

impl Ticket {
    fn take(dir: &Path) -> Ticket {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("wait-{nanos:024}-{}-{seq}", std::process::id()));
        File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Ticket { path }
    }

    /// Whether no live waiter came before this one.
    fn is_first(&self) -> bool {
        let dir = self.path.parent().expect("in the slots dir");
        let mut waiting: Vec<String> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("wait-"))
            .filter(|n| {
                let pid = n.split('-').nth(2).unwrap_or_default();
                let live = Path::new("/proc").join(pid).exists();
                if !live {
                    let _ = fs::remove_file(dir.join(n));
                }
                live
            })
            .collect();
        waiting.sort();
        waiting.first().map(|n| dir.join(n)).as_deref() == Some(self.path.as_path())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
