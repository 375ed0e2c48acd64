//! `rum retry` killed with SIGKILL in the middle of a restore or of a
//! checkpoint save, at several moments: the next `rum retry` works, never
//! restores a checkpoint whose save did not finish, and the disk image stays
//! consistent (`qemu-img check`). One boot.

mod support;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{E2e, wait_until};

fn guest(env: &E2e, command: &str) -> String {
    let run = env.rum(&["exec", "--user", "root", "--", "sh", "-c", command]);
    run.assert_success();
    run.stdout
}

/// What each step left: one line per run of it.
fn traces(env: &E2e) -> String {
    guest(
        env,
        "cd /var/tmp && for f in one two three; do printf '%s:' $f; cat $f 2>/dev/null | tr '\\n' ' '; echo; done",
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// Starts `rum retry`, and once its output shows `line`, waits `after` and
/// kills it with SIGKILL (no handler, no rollback). Returns what it printed.
fn kill_retry_at(env: &E2e, line: &str, after: Duration) -> String {
    let dir = env.dir("killed");
    let log = dir.join(format!("{}.log", std::fs::read_dir(&dir).unwrap().count()));
    let mut cmd = env.rum_command();
    cmd.arg("retry")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let pid = env.procs.spawn(&mut cmd);
    let printed = || std::fs::read_to_string(&log).unwrap_or_default();
    let reached = wait_until(Duration::from_secs(600), Duration::from_millis(10), || {
        printed().contains(line) || env.procs.try_wait(pid).is_some()
    });
    assert!(
        reached && printed().contains(line),
        "never reached `{line}`:\n{}",
        printed()
    );
    std::thread::sleep(after);
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    env.procs.wait_timeout(pid, Duration::from_secs(10));
    printed()
}

fn overlay(env: &E2e) -> std::path::PathBuf {
    std::fs::read_dir(env.xdg.data.join("rum"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
        .join("disk.qcow2")
}

#[test]
fn a_killed_retry_leaves_a_vm_the_next_retry_can_use() {
    let Some(env) = support::e2e() else { return };
    let steps = env.project.join("provision");
    std::fs::create_dir_all(&steps).unwrap();
    write(&steps, "one.sh", "echo 1 >> /var/tmp/one\n");
    write(&steps, "two.sh", "echo 2 >> /var/tmp/two\n");
    write(&steps, "three.sh", "echo 3 >> /var/tmp/three\n");
    let mut toml = String::new();
    for name in ["one", "two", "three"] {
        toml +=
            &format!("[[provision.system]]\nname = \"{name}\"\nfile = \"provision/{name}.sh\"\n\n");
    }
    env.write_rum_toml(&toml);
    env.rum(&["up", "-d"]).assert_success();
    assert_eq!(traces(&env), "one:1 \ntwo:2 \nthree:3 \n");

    // Killed while saving the post-system checkpoint of an edited last step,
    // right as it starts and well into it.
    for (n, after) in [0, 300].into_iter().enumerate() {
        write(
            &steps,
            "three.sh",
            &format!("echo 3-{n} >> /var/tmp/three\n"),
        );
        let killed = kill_retry_at(
            &env,
            "… Keeping a post-system checkpoint",
            Duration::from_millis(after),
        );
        assert!(killed.contains("✓ three"), "{killed}");
        // The last step back as it was. Its old checkpoint was given up
        // before the save began (or, killed before that, is still good), so
        // the guest never shows the killed run's edit.
        write(&steps, "three.sh", "echo 3 >> /var/tmp/three\n");
        env.rum(&["retry"]).assert_success();
        assert_eq!(
            traces(&env),
            "one:1 \ntwo:2 \nthree:3 \n",
            "never the state of the killed run"
        );
    }

    // Killed while restoring into the running VM, at three moments.
    for (n, after) in [0, 150, 400].into_iter().enumerate() {
        write(
            &steps,
            "three.sh",
            &format!("echo 3r{n} >> /var/tmp/three\n"),
        );
        kill_retry_at(
            &env,
            "… Restoring the `step-two` snapshot",
            Duration::from_millis(after),
        );
        let retry = env.rum(&["retry"]);
        retry.assert_success();
        assert!(
            retry.stderr.contains("Restoring the `step-two` snapshot"),
            "{retry}"
        );
        assert_eq!(traces(&env), format!("one:1 \ntwo:2 \nthree:3r{n} \n"));
    }

    // Killed while restoring into a fresh QEMU on a stopped VM.
    env.rum(&["down"]).assert_success();
    write(&steps, "three.sh", "echo 3s >> /var/tmp/three\n");
    kill_retry_at(
        &env,
        "… Restoring the `step-two` snapshot",
        Duration::from_millis(200),
    );
    let retry = env.rum(&["retry"]);
    retry.assert_success();
    assert_eq!(traces(&env), "one:1 \ntwo:2 \nthree:3s \n");

    // Each checkpoint once in the image, and the image consistent.
    env.rum(&["down"]).assert_success();
    let listed = Command::new("qemu-img")
        .args(["snapshot", "-l"])
        .arg(overlay(&env))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    for tag in ["pre-provision", "step-one", "step-two", "post-system"] {
        assert_eq!(
            listed.matches(&format!(" {tag} ")).count(),
            1,
            "{tag}: {listed}"
        );
    }
    let check = Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(overlay(&env))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "qemu-img check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    env.rum(&["destroy", "-f"]).assert_success();
    assert!(env.procs.strays().is_empty());
}
