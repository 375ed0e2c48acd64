//! Polling and port helpers.

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

/// Calls `ready` every `poll` until it returns true (→ true) or `timeout`
/// passes (→ false, after one last try).
pub fn wait_until(timeout: Duration, poll: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(poll.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}
