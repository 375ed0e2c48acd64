//! Killing `rum` with SIGKILL (no handler, no rollback) at a chosen moment,
//! or holding it at a pause point while the test changes the world.

use super::{E2e, RumRun, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::process::Stdio;
use std::time::Duration;

/// Where `rum` is killed.
#[derive(Clone, Copy)]
pub enum At<'a> {
    /// Once its output shows this line, after a delay.
    Line(&'a str, Duration),
    /// While QEMU runs the job with this id (rum paused right after it
    /// started it, through the test hook).
    Job(&'a str),
    /// At a test-hook pause point of rum's own (`RUM_TEST_PAUSE_AT`).
    Point(&'a str),
}

impl E2e {
    /// Starts `rum ARGS` and kills it with SIGKILL at `at`. Returns what it
    /// printed.
    pub fn kill_rum(&self, args: &[&str], at: At) -> String {
        let dir = self.dir("killed");
        let n = std::fs::read_dir(&dir).unwrap().count();
        let log = dir.join(format!("{n}.log"));
        let gate = dir.join(format!("{n}.gate"));
        let reached = dir.join(format!("{n}.gate.reached"));
        let mut cmd = self.rum_command();
        cmd.args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let point = match at {
            At::Job(id) => Some(format!("job:{id}")),
            At::Point(point) => Some(point.to_owned()),
            At::Line(..) => None,
        };
        if let Some(point) = point {
            cmd.env("RUM_TEST_PAUSE_AT", point)
                .env("RUM_TEST_GATE", &gate);
        }
        let pid = self.procs.spawn(&mut cmd);
        let printed = || std::fs::read_to_string(&log).unwrap_or_default();
        let there = || match at {
            At::Line(line, _) => printed().contains(line),
            At::Job(_) | At::Point(_) => reached.exists(),
        };
        let ok = wait_until(Duration::from_secs(600), Duration::from_millis(10), || {
            there() || self.procs.try_wait(pid).is_some()
        });
        assert!(
            ok && there(),
            "rum {args:?} never got there:\n{}",
            printed()
        );
        if let At::Line(_, after) = at {
            std::thread::sleep(after);
        }
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        self.procs.wait_timeout(pid, Duration::from_secs(10));
        printed()
    }

    /// Runs `rum ARGS` (with `vars`) held at the pause point `point` while
    /// `meanwhile` runs, then lets it finish; returns what it did.
    pub fn rum_paused(
        &self,
        vars: &[(&str, &str)],
        args: &[&str],
        point: &str,
        meanwhile: impl FnOnce(),
    ) -> RumRun {
        let dir = self.dir("paused");
        let n = std::fs::read_dir(&dir).unwrap().count();
        let out = dir.join(format!("{n}.out"));
        let err = dir.join(format!("{n}.err"));
        let gate = dir.join(format!("{n}.gate"));
        let reached = dir.join(format!("{n}.gate.reached"));
        let mut cmd = self.rum_command();
        cmd.args(args)
            .envs(vars.iter().copied())
            .env("RUM_TEST_PAUSE_AT", point)
            .env("RUM_TEST_GATE", &gate)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        let pid = self.procs.spawn(&mut cmd);
        let read = |f: &std::path::Path| std::fs::read_to_string(f).unwrap_or_default();
        wait_until(Duration::from_secs(600), Duration::from_millis(10), || {
            reached.exists() || self.procs.try_wait(pid).is_some()
        });
        assert!(
            reached.exists(),
            "rum {args:?} never reached {point}:\n{}",
            read(&err)
        );
        meanwhile();
        std::fs::write(&gate, b"").unwrap();
        let status = self
            .procs
            .wait_timeout(pid, Duration::from_secs(600))
            .unwrap_or_else(|| panic!("rum {args:?} did not finish:\n{}", read(&err)));
        RumRun {
            args: args.iter().map(|a| a.to_string()).collect(),
            status,
            stdout: read(&out),
            stderr: read(&err),
        }
    }
}
