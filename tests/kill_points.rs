//! `rum` killed with SIGKILL at every milestone of its commands, one after
//! another on one VM: a fresh `rum up` at each bring-up step, `rum retry`
//! during the restore, a provisioning step and a checkpoint save, `rum
//! snapshot create/restore/delete` while QEMU runs their job, `rum down`, a
//! resumed `rum up` on the stopped VM, and `rum destroy`. After each kill the
//! next natural command succeeds, no QEMU or virtiofsd is duplicated, nothing
//! that existed before is gone, and `state.json` parses; at the end `qemu-img
//! check` is clean. A VM whose up was killed before its agent answered is not
//! called ready, and the next up says it finishes that work; a running VM
//! whose provisioning failed is not up either. One boot.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{At, E2e};

/// Live QEMU processes of this test: no zombies, and none of a daemonizing
/// QEMU's parent, which exits as soon as its child is ready.
fn qemus(env: &E2e) -> usize {
    let count = || {
        env.procs
            .strays()
            .into_iter()
            .filter(|pid| {
                let live = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')));
                live && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with("qemu-system"))
            })
            .count()
    };
    let mut n = count();
    for _ in 0..50 {
        if n <= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        n = count();
    }
    n
}

/// What must hold after any kill: the record parses, at most one QEMU, the
/// files that were there still are.
fn check_after(env: &E2e, what: &str, kept: &[PathBuf]) {
    let status = env.rum(&["-o", "json", "status"]);
    assert!(status.status.success(), "status after {what}: {status}");
    if let Some(dir) = env.instance_dir() {
        let state = std::fs::read(dir.join("state.json")).unwrap_or_else(|_| b"{}".to_vec());
        serde_json::from_slice::<serde_json::Value>(&state)
            .unwrap_or_else(|e| panic!("state.json after {what}: {e}"));
    }
    assert!(qemus(env) <= 1, "a second QEMU after {what}");
    for file in kept {
        assert!(file.exists(), "{} is gone after {what}", file.display());
    }
}

fn qemu_img_check(overlay: &Path) {
    let check = Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(overlay)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "qemu-img check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn every_command_killed_at_every_step_is_recovered_by_the_next() {
    let Some(env) = support::e2e() else { return };
    let steps = env.project.join("provision");
    std::fs::create_dir_all(&steps).unwrap();
    std::fs::write(steps.join("one.sh"), "echo 1 >> /var/tmp/one\n").unwrap();
    std::fs::write(steps.join("two.sh"), "echo 2 >> /var/tmp/two\n").unwrap();
    env.write_rum_toml(
        "[[provision.system]]\nname = \"one\"\nfile = \"provision/one.sh\"\n\n[[provision.system]]\nname = \"two\"\nfile = \"provision/two.sh\"\n",
    );
    let mut recovered = Vec::new();

    // A fresh `rum up`, killed at each bring-up step; each next `rum up`
    // goes on from where the last one was killed.
    let bring_up: &[(&str, At)] = &[
        ("resolving the image", At::Point("milestone:image_ready")),
        (
            "creating the overlay",
            At::Point("milestone:overlay_created"),
        ),
        ("building the seed", At::Point("milestone:seed_built")),
        ("starting QEMU", At::Point("milestone:booted")),
        ("QEMU started, not yet recorded", At::Point("qemu_started")),
        ("waiting for the agent", At::Point("milestone:agent_ready")),
        ("waiting for cloud-init", At::Point("cloud_init")),
        ("saving pre-provision", At::Job("rum-save-pre-provision")),
        ("running a step", At::Point("step:one")),
        ("saving a step checkpoint", At::Job("rum-save-step-one")),
    ];
    let mut kept: Vec<PathBuf> = Vec::new();
    for (what, at) in bring_up {
        let printed = env.kill_rum(&["up", "-d"], *at);
        check_after(&env, &format!("up killed {what}"), &kept);
        if *what == "waiting for cloud-init" {
            // The up before it was killed with the agent not yet answering.
            assert!(
                printed.contains("Finishing what an earlier `rum up` left undone"),
                "{printed}"
            );
        }
        if *what == "waiting for the agent" {
            // QEMU runs, but the VM is not called ready.
            let status = env.rum_data(&["status"]);
            assert_eq!(status["state"], "running", "{status}");
            assert_eq!(status["ready"], false, "{status}");
            let text = env.rum(&["status"]);
            assert!(
                text.stdout
                    .contains("not ready: agent ready unfinished; `rum up` finishes it"),
                "{text}"
            );
        }
        recovered.push(format!("up: {what}"));
        if let Some(dir) = env.instance_dir() {
            for file in ["disk.qcow2", "seed.iso", "ssh/id_ed25519"] {
                let path = dir.join(file);
                if path.exists() && !kept.contains(&path) {
                    kept.push(path);
                }
            }
        }
    }
    let up = env.rum(&["up", "-d"]);
    up.assert_success();
    let dir = env.instance_dir().unwrap();
    let overlay = dir.join("disk.qcow2");
    let inode = std::fs::metadata(&overlay).unwrap().ino();
    assert_eq!(
        env.guest_sh("cat /var/tmp/one /var/tmp/two"),
        "1\n2\n",
        "each step ran once"
    );
    check_after(&env, "the last up", &kept);

    // `rum retry`, killed during the restore, a step and a checkpoint save.
    std::fs::write(steps.join("two.sh"), "echo 2b >> /var/tmp/two\n").unwrap();
    let retry: &[(&str, At)] = &[
        ("restoring", At::Job("rum-load-step-one")),
        ("running a step", At::Point("step:two")),
        ("saving a checkpoint", At::Job("rum-save-post-system")),
    ];
    for (what, at) in retry {
        env.kill_rum(&["retry"], *at);
        check_after(&env, &format!("retry killed {what}"), &kept);
        recovered.push(format!("retry: {what}"));
    }
    env.rum(&["retry"]).assert_success();
    assert_eq!(env.guest_sh("cat /var/tmp/one /var/tmp/two"), "1\n2b\n");
    let ready = env.rum_data(&["status"]);
    assert_eq!(ready["ready"], true, "{ready}");

    // Provisioning that fails on a running VM: `rum up` says so and fails,
    // rather than "already running"; `rum retry` with a fixed step fixes it
    // — also when the fix is a text that ran before, so that the retry only
    // restores its checkpoint and runs no step.
    std::fs::write(steps.join("two.sh"), "echo broken >&2\nexit 4\n").unwrap();
    assert_eq!(env.rum(&["retry"]).status.code(), Some(1));
    let up = env.rum(&["up", "-d"]);
    assert_eq!(up.status.code(), Some(1), "{up}");
    assert!(
        up.stdout
            .contains("its provisioning failed (system provisioned)")
            && up.stdout.contains("`rum retry`"),
        "{up}"
    );
    assert_eq!(env.rum_data(&["status"])["ready"], false);
    std::fs::write(steps.join("two.sh"), "echo 2c >> /var/tmp/two\n").unwrap();
    env.rum(&["retry"]).assert_success();
    let up = env.rum(&["up", "-d"]);
    up.assert_success();
    assert!(up.stdout.contains("already running"), "{up}");
    assert_eq!(env.guest_sh("cat /var/tmp/one /var/tmp/two"), "1\n2c\n");
    std::fs::write(steps.join("two.sh"), "exit 5\n").unwrap();
    assert_eq!(env.rum(&["retry"]).status.code(), Some(1));
    std::fs::write(steps.join("two.sh"), "echo 2c >> /var/tmp/two\n").unwrap();
    env.rum(&["retry"]).assert_success();
    let up = env.rum(&["up", "-d"]);
    assert!(up.stdout.contains("already running"), "{up}");
    assert_eq!(
        up.status.code(),
        Some(0),
        "a restored checkpoint is a success: {up}"
    );
    assert_eq!(env.guest_sh("cat /var/tmp/one /var/tmp/two"), "1\n2c\n");

    // Snapshots, killed while QEMU runs their job.
    env.kill_rum(&["snapshot", "create", "s1"], At::Job("rum-save-s1"));
    check_after(&env, "snapshot create killed", &kept);
    env.rum(&["snapshot", "create", "s1"]).assert_success();
    env.guest_sh("echo after > /var/tmp/after");
    env.kill_rum(&["snapshot", "restore", "s1"], At::Job("rum-load-s1"));
    check_after(&env, "snapshot restore killed", &kept);
    env.rum(&["snapshot", "restore", "s1"]).assert_success();
    assert_eq!(
        env.guest_sh("cat /var/tmp/after 2>/dev/null || echo none"),
        "none\n"
    );
    env.kill_rum(&["snapshot", "delete", "s1"], At::Job("rum-delete-s1"));
    check_after(&env, "snapshot delete killed", &kept);
    let again = env.rum(&["snapshot", "delete", "s1"]);
    let list = env.rum(&["snapshot", "list"]);
    assert!(
        !list.stdout.contains("s1"),
        "s1 deleted in the end: {again}\n{list}"
    );
    for what in ["snapshot create", "snapshot restore", "snapshot delete"] {
        recovered.push(what.to_owned());
    }

    // `rum down`, killed while the VM stops; `rum down` again finishes it.
    env.kill_rum(
        &["down"],
        At::Line("… Stopping the VM", Duration::from_millis(300)),
    );
    check_after(&env, "down killed", &kept);
    env.rum(&["down"]).assert_success();
    assert_eq!(qemus(&env), 0);
    recovered.push("down".into());
    assert_eq!(
        std::fs::metadata(&overlay).unwrap().ino(),
        inode,
        "the overlay is the same file"
    );
    qemu_img_check(&overlay);

    // `rum up` on the stopped VM, killed as QEMU starts, before it is
    // recorded, and while the guest boots; the next `rum up` brings it up
    // without running a system step again.
    let resumed: &[(&str, At)] = &[
        ("starting QEMU", At::Point("milestone:booted")),
        ("QEMU started, not yet recorded", At::Point("qemu_started")),
        ("waiting for the agent", At::Point("milestone:agent_ready")),
    ];
    for (what, at) in resumed {
        env.kill_rum(&["up", "-d"], *at);
        check_after(&env, &format!("resumed up killed {what}"), &kept);
        recovered.push(format!("resumed up: {what}"));
    }
    env.rum(&["up", "-d"]).assert_success();
    assert_eq!(
        env.guest_sh("cat /var/tmp/one /var/tmp/two"),
        "1\n2c\n",
        "no system step ran again"
    );
    check_after(&env, "the resumed up", &kept);
    env.rum(&["down"]).assert_success();

    // `rum destroy`, killed as it starts removing files; the next one finishes.
    env.kill_rum(&["destroy", "-f"], At::Point("removing_files"));
    env.rum(&["destroy", "-f"]).assert_success();
    assert!(env.instance_dir().is_none(), "destroy leaves nothing");
    recovered.push("destroy".into());
    assert!(env.procs.strays().is_empty());
    eprintln!(
        "{} kill points recovered: {}",
        recovered.len(),
        recovered.join(", ")
    );
}
