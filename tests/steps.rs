//! Provisioning steps with the checkpoint cache, end to end: a checkpoint
//! after each system step; `rum retry` restores the deepest one that still
//! matches the steps on disk and runs only the rest; `--from NAME` on a
//! running and on a stopped VM. One boot.

mod support;

use std::path::Path;
use support::E2e;

fn guest(env: &E2e, command: &str) -> String {
    let run = env.rum(&["exec", "--user", "root", "--", "sh", "-c", command]);
    run.assert_success();
    run.stdout
}

/// What each step left: one line per run of it, per file.
fn traces(env: &E2e) -> String {
    guest(
        env,
        "cd /var/tmp && for f in one two three; do printf '%s:' $f; cat $f 2>/dev/null | tr '\\n' ' '; echo; done",
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn retry_runs_only_the_steps_that_changed() {
    let Some(env) = support::e2e() else { return };
    let steps = env.project.join("provision");
    std::fs::create_dir_all(&steps).unwrap();
    write(&steps, "one.sh", "sleep 1; echo 1 >> /var/tmp/one\n");
    write(&steps, "two.sh", "echo 2 >> /var/tmp/two\n");
    write(&steps, "three.sh", "echo 3 >> /var/tmp/three\nexit 3\n");
    let toml = |order: [&str; 3]| {
        let mut text = String::new();
        for name in order {
            text += &format!(
                "[[provision.system]]\nname = \"{name}\"\nfile = \"provision/{name}.sh\"\n\n"
            );
        }
        text + "[provision.boot]\nscript = \"echo b >> /var/tmp/boot\"\n"
    };
    env.write_rum_toml(&toml(["one", "two", "three"]));

    // The third step fails; the first two each left a checkpoint.
    let up = env.rum(&["up", "-d"]);
    assert_eq!(up.status.code(), Some(1), "{up}");
    assert!(up.stderr.contains("✗ three (exit code 3)"), "{up}");
    assert!(
        up.stderr.contains("Keeping a checkpoint after `one`"),
        "{up}"
    );
    assert!(
        up.stderr.contains("Keeping a checkpoint after `two`"),
        "{up}"
    );
    assert!(
        up.stderr.contains("step `three` failed (exit code 3)"),
        "{up}"
    );

    // Fixed: only the third runs, on the VM as it was after the second.
    write(&steps, "three.sh", "echo 3 >> /var/tmp/three\n");
    let retry = env.rum(&["retry"]);
    retry.assert_success();
    assert!(
        retry.stderr.contains("Restoring the `step-two` snapshot"),
        "{retry}"
    );
    assert!(retry.stderr.contains("✓ one (cached)"), "{retry}");
    assert!(retry.stderr.contains("✓ two (cached)"), "{retry}");
    assert!(!retry.stderr.contains("▸ one"), "one did not run: {retry}");
    assert!(retry.stderr.contains("✓ three"), "{retry}");
    assert_eq!(traces(&env), "one:1 \ntwo:2 \nthree:3 \n");

    // The second edited: it and the third run, the first does not.
    write(&steps, "two.sh", "echo 2b >> /var/tmp/two\n");
    let retry = env.rum(&["retry"]);
    retry.assert_success();
    assert!(
        retry.stderr.contains("Restoring the `step-one` snapshot"),
        "{retry}"
    );
    assert!(retry.stderr.contains("✓ one (cached)"), "{retry}");
    assert_eq!(traces(&env), "one:1 \ntwo:2b \nthree:3 \n");

    // Nothing changed: the post-system checkpoint, and only the boot step.
    let retry = env.rum(&["retry"]);
    retry.assert_success();
    assert!(
        retry
            .stderr
            .contains("Restoring the `post-system` snapshot"),
        "{retry}"
    );
    assert!(retry.stderr.contains("✓ three (cached)"), "{retry}");
    assert!(!retry.stderr.contains("▸ three"), "{retry}");
    assert_eq!(traces(&env), "one:1 \ntwo:2b \nthree:3 \n");

    // --from NAME on the running VM: that step and the rest run again.
    let from = env.rum(&["retry", "--from", "two"]);
    from.assert_success();
    assert!(
        from.stderr.contains("Restoring the `step-one` snapshot"),
        "{from}"
    );
    assert!(from.stderr.contains("▸ two"), "{from}");
    assert_eq!(traces(&env), "one:1 \ntwo:2b \nthree:3 \n");
    let unknown = env.rum(&["retry", "--from", "nope"]);
    assert_eq!(unknown.status.code(), Some(2), "{unknown}");
    assert!(
        unknown.stderr.contains("there are: one, two, three"),
        "{unknown}"
    );

    // Reordered: the chain changes where the order does.
    env.write_rum_toml(&toml(["one", "three", "two"]));
    let reordered = env.rum(&["retry"]);
    reordered.assert_success();
    assert!(
        reordered
            .stderr
            .contains("Restoring the `step-one` snapshot"),
        "{reordered}"
    );
    assert_eq!(traces(&env), "one:1 \ntwo:2b \nthree:3 \n");
    env.write_rum_toml(&toml(["one", "two", "three"]));

    // The first edited: everything runs again from pre-provision.
    write(&steps, "one.sh", "echo 1b >> /var/tmp/one\n");
    let retry = env.rum(&["retry"]);
    retry.assert_success();
    assert!(
        retry
            .stderr
            .contains("Restoring the `pre-provision` snapshot"),
        "{retry}"
    );
    assert!(!retry.stderr.contains("(cached)"), "{retry}");
    assert_eq!(traces(&env), "one:1b \ntwo:2b \nthree:3 \n");

    // --from NAME on a stopped VM: restored into a fresh QEMU.
    env.rum(&["down"]).assert_success();
    let cold = env.rum(&["retry", "--from", "three"]);
    cold.assert_success();
    assert!(cold.stderr.contains("Starting QEMU"), "{cold}");
    assert!(
        cold.stderr.contains("Restoring the `step-two` snapshot"),
        "{cold}"
    );
    assert_eq!(traces(&env), "one:1b \ntwo:2b \nthree:3 \n");

    let list = env.rum(&["snapshot", "list"]);
    list.assert_success();
    for tag in ["pre-provision", "step-one", "step-two", "post-system"] {
        assert!(list.stdout.contains(tag), "{tag}: {list}");
    }
    env.rum(&["retry", "--done"]).assert_success();
    let list = env.rum(&["snapshot", "list"]);
    assert!(list.stdout.contains("has no snapshots"), "{list}");
    env.rum(&["destroy", "-f"]).assert_success();
}
