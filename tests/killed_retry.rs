//! `rum retry` killed with SIGKILL in the middle of a restore or of a
//! checkpoint save, at several moments: the next `rum retry` works, never
//! restores a checkpoint whose save did not finish, and the disk image stays
//! consistent (`qemu-img check`). One boot.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{At, E2e};

/// What each step left: one line per run of it.
fn traces(env: &E2e) -> String {
    env.guest_sh("cd /var/tmp && for f in one two three; do printf '%s:' $f; cat $f 2>/dev/null | tr '\\n' ' '; echo; done",
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// The next retry after a killed one: it succeeds, every restore loads and
/// every checkpoint is kept.
fn retry_cleanly(env: &E2e) -> String {
    let retry = env.rum(&["retry"]);
    retry.assert_success();
    assert!(!retry.stderr.contains("could not be loaded"), "{retry}");
    assert!(!retry.stderr.contains("✗"), "{retry}");
    retry.stderr.clone()
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

    // Killed while QEMU saves the post-system checkpoint of an edited last
    // step, and right as rum starts that save.
    let saves = [
        At::Job("rum-save-post-system"),
        At::Line("… Keeping a post-system checkpoint", Duration::ZERO),
    ];
    for (n, at) in saves.into_iter().enumerate() {
        write(
            &steps,
            "three.sh",
            &format!("echo 3-{n} >> /var/tmp/three\n"),
        );
        let killed = env.kill_rum(&["retry"], at);
        assert!(killed.contains("✓ three"), "{killed}");
        // The last step back as it was. Its old checkpoint was given up
        // before the save began (or, killed before that, is still good), so
        // the guest never shows the killed run's edit.
        write(&steps, "three.sh", "echo 3 >> /var/tmp/three\n");
        retry_cleanly(&env);
        assert_eq!(
            traces(&env),
            "one:1 \ntwo:2 \nthree:3 \n",
            "never the state of the killed run"
        );
    }

    // Killed while QEMU loads a checkpoint into the running VM, and around it.
    let loads = [
        At::Job("rum-load-step-two"),
        At::Line("… Restoring the `step-two` snapshot", Duration::ZERO),
        At::Line(
            "… Restoring the `step-two` snapshot",
            Duration::from_millis(300),
        ),
    ];
    for (n, at) in loads.into_iter().enumerate() {
        write(
            &steps,
            "three.sh",
            &format!("echo 3r{n} >> /var/tmp/three\n"),
        );
        env.kill_rum(&["retry"], at);
        let retry = retry_cleanly(&env);
        assert!(
            retry.contains("✓ Restoring the `step-two` snapshot"),
            "{retry}"
        );
        assert_eq!(traces(&env), format!("one:1 \ntwo:2 \nthree:3r{n} \n"));
    }

    // Killed while QEMU loads into a fresh QEMU on a stopped VM.
    env.rum(&["down"]).assert_success();
    write(&steps, "three.sh", "echo 3s >> /var/tmp/three\n");
    env.kill_rum(&["retry"], At::Job("rum-load-step-two"));
    retry_cleanly(&env);
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
