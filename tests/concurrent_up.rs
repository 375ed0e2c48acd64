//! Two `rum up`s of a VM that does not exist yet, started together: the one
//! that loses the instance lock exits naming the holder and removes nothing;
//! the winner's VM works. A test-only pause makes the race certain. One boot.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{E2e, wait_until};

/// The data directory of the test's only instance, once it exists.
fn instance_dir(env: &E2e) -> Option<PathBuf> {
    let root = env.xdg.data.join("rum");
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .next()
}

fn holds_lock(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("lock")).is_ok_and(|t| t.contains("rum up"))
}

#[test]
fn the_up_that_loses_the_lock_removes_nothing() {
    let Some(env) = support::e2e() else { return };
    // Two system steps: they run once each, in order, each with its own log.
    env.write_rum_toml(
        "[[provision.system]]\nname = \"first\"\nscript = \"echo first >> /var/tmp/runs\"\n\n[[provision.system]]\nscript = \"echo second >> /var/tmp/runs\"\n",
    );
    let gate = env.root.join("gate");
    let reached = env.root.join("gate.reached");
    let gate_var = gate.to_str().unwrap().to_owned();

    let (loser, winner) = std::thread::scope(|s| {
        // The loser sees no instance, then stops just before taking the lock.
        let loser = s.spawn(|| {
            env.rum_env(
                &[
                    ("RUM_TEST_PAUSE_AT", "before_lock"),
                    ("RUM_TEST_GATE", &gate_var),
                ],
                &["up", "-d"],
            )
        });
        assert!(
            wait_until(Duration::from_secs(120), Duration::from_millis(50), || {
                reached.exists()
            }),
            "the first rum up never reached the pause"
        );
        let winner = s.spawn(|| env.rum(&["up", "-d"]));
        let dir = wait_until(Duration::from_secs(120), Duration::from_millis(50), || {
            instance_dir(&env).is_some_and(|d| holds_lock(&d) && d.join("state.json").exists())
        });
        assert!(dir, "the second rum up never took the lock");
        std::fs::write(&gate, "").unwrap();
        (loser.join().unwrap(), winner.join().unwrap())
    });

    assert_eq!(loser.status.code(), Some(1), "{loser}");
    assert!(loser.stderr.contains("is busy"), "{loser}");
    assert!(
        loser.stderr.contains("`rum up` (pid "),
        "names the holder: {loser}"
    );
    winner.assert_success();
    let dir = instance_dir(&env).expect("the winner's instance directory");
    for file in ["disk.qcow2", "seed.iso", "state.json", "lock"] {
        assert!(dir.join(file).exists(), "{file} is gone");
    }

    let exec = env.rum(&["exec", "--", "cat", "/var/tmp/runs"]);
    exec.assert_success();
    assert_eq!(exec.stdout, "first\nsecond\n");
    let logs = env.rum(&["log", "--all"]);
    logs.assert_success();
    for step in ["first", "system-2"] {
        assert!(
            logs.stdout
                .lines()
                .any(|l| l.contains(step) && l.contains("succeeded")),
            "{step} has a log of its own: {logs}"
        );
    }
    let list = env.rum(&["snapshot", "list"]);
    list.assert_success();
    assert!(list.stdout.contains("pre-provision"), "{list}");
    env.rum(&["retry"]).assert_success();
    let exec = env.rum(&["exec", "--", "cat", "/var/tmp/runs"]);
    assert_eq!(
        exec.stdout, "first\nsecond\n",
        "the retry ran both steps on the restored VM"
    );
    env.rum(&["destroy", "-f"]).assert_success();
}
