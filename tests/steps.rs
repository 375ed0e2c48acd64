//! Provisioning steps with the checkpoint cache, end to end: a checkpoint
//! after each system step; `rum retry` restores the deepest one that still
//! matches the steps on disk and runs only the rest; `--from NAME` on a
//! running and on a stopped VM; `rum provision` on the VM as it is. One
//! boot.

mod support;

use std::path::Path;
use support::E2e;

/// What each step left: one line per run of it, per file.
fn traces(env: &E2e) -> String {
    env.guest_sh("cd /var/tmp && for f in one two three; do printf '%s:' $f; cat $f 2>/dev/null | tr '\\n' ' '; echo; done",
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
    let share = env.dir("share");
    let toml = |order: &[&str]| {
        let mut text = format!(
            "[[mounts]]\nsource = \"{}\"\ntarget = \"/mnt/share\"\n\n",
            share.display()
        );
        for name in order {
            let retries = if *name == "flaky" {
                "retries = 2\n"
            } else {
                ""
            };
            text += &format!(
                "[[provision.system]]\nname = \"{name}\"\nfile = \"provision/{name}.sh\"\n{retries}\n"
            );
        }
        // A budget of three checkpoints: the stale ones go first.
        text + "[provision.boot]\nscript = \"echo b >> /var/tmp/boot\"\n\n[advanced]\ncheckpoints = 3\n"
    };
    env.write_rum_toml(&toml(&["one", "two", "three"]));

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
    env.write_rum_toml(&toml(&["one", "three", "two"]));
    let reordered = env.rum(&["retry"]);
    reordered.assert_success();
    assert!(
        reordered
            .stderr
            .contains("Restoring the `step-one` snapshot"),
        "{reordered}"
    );
    assert!(
        reordered
            .stderr
            .contains("to keep at most 3 ([advanced] checkpoints)"),
        "a stale checkpoint makes room: {reordered}"
    );
    assert_eq!(traces(&env), "one:1 \ntwo:2b \nthree:3 \n");
    env.write_rum_toml(&toml(&["one", "two", "three"]));

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

    // A step added after the last, failing once (a marker in the mount, which
    // the host keeps): it runs again after the checkpoint before it, clean.
    std::fs::write(share.join("fail-once"), "").unwrap();
    write(
        &steps,
        "flaky.sh",
        "if [ -e /mnt/share/fail-once ]; then rm /mnt/share/fail-once; touch /var/tmp/dirty; exit 1; fi\ntest ! -e /var/tmp/dirty\necho ok >> /var/tmp/flaky\n",
    );
    env.write_rum_toml(&toml(&["one", "two", "three", "flaky"]));
    let flaky = env.rum(&["retry"]);
    flaky.assert_success();
    assert!(
        flaky.stderr.contains("✓ three (cached)"),
        "three keeps its checkpoint: {flaky}"
    );
    assert!(flaky.stderr.contains("↻ flaky (attempt 2 of 3)"), "{flaky}");
    assert_eq!(
        flaky
            .stderr
            .matches("✓ Restoring the `post-system` snapshot")
            .count(),
        2,
        "restored before the step and again before its second run: {flaky}"
    );
    assert_eq!(
        env.guest_sh("cat /var/tmp/flaky; test ! -e /var/tmp/dirty && echo clean"),
        "ok\nclean\n",
        "the second run saw a clean VM"
    );
    let logs = env.rum(&["log", "--all"]);
    let runs: Vec<_> = logs
        .stdout
        .lines()
        .filter(|l| l.contains("flaky"))
        .collect();
    assert!(runs.iter().any(|l| l.contains("failed")), "{logs}");
    assert!(
        runs.iter()
            .any(|l| l.contains("succeeded") && l.contains(".try2.log")),
        "{logs}"
    );
    let status = env.rum(&["-o", "json", "status"]);
    let event: serde_json::Value =
        serde_json::from_str(status.stdout.lines().last().unwrap()).unwrap();
    let retried = event["data"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["milestone"] == "system_provisioned" && h["event"] == "retrying");
    assert!(retried, "the history keeps the transient retry: {status}");

    // A checkpoint deleted behind rum's back: the retry says so and falls
    // back to the one before it (into a fresh QEMU, the VM being stopped).
    env.rum(&["down"]).assert_success();
    let instance = std::fs::read_dir(env.xdg.data.join("rum"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let deleted = std::process::Command::new("qemu-img")
        .args(["snapshot", "-d", "step-two"])
        .arg(instance.join("disk.qcow2"))
        .status()
        .unwrap();
    assert!(deleted.success());
    let fallback = env.rum(&["retry", "--from", "three"]);
    fallback.assert_success();
    assert!(
        fallback
            .stderr
            .contains("the `step-two` checkpoint could not be loaded"),
        "{fallback}"
    );
    assert!(
        fallback
            .stderr
            .contains("Restoring the `step-one` snapshot"),
        "{fallback}"
    );
    assert_eq!(traces(&env), "one:1b \ntwo:2b \nthree:3 \n");
    let status = env.rum(&["-o", "json", "status"]);
    let event: serde_json::Value =
        serde_json::from_str(status.stdout.lines().last().unwrap()).unwrap();
    let noted = event["data"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| {
            h["milestone"] == "snapshot_taken"
                && h["detail"].as_str().is_some_and(|d| d.contains("step-two"))
        });
    assert!(noted, "the history keeps the failed load: {status}");

    let list = env.rum(&["snapshot", "list"]);
    list.assert_success();
    // Four steps, a budget of three: the oldest (step-one) made room.
    for tag in ["pre-provision", "step-two", "step-three", "post-system"] {
        assert!(list.stdout.contains(tag), "{tag}: {list}");
    }
    assert!(!list.stdout.contains("step-one"), "{list}");
    assert!(list.stdout.contains("after step `three`"), "{list}");
    assert!(list.stdout.contains("after step `flaky`"), "{list}");
    let json = env.rum(&["-o", "json", "snapshot", "list"]);
    let event: serde_json::Value =
        serde_json::from_str(json.stdout.lines().last().unwrap()).unwrap();
    let rows = event["data"]["snapshots"].as_array().unwrap().clone();
    let two = rows.iter().find(|r| r["name"] == "step-two").unwrap();
    assert_eq!(
        (two["step"].as_str(), two["current"].as_bool()),
        (Some("two"), Some(true))
    );
    // `rum provision` runs steps again where the VM stands: no restore, no
    // checkpoint taken, the ones there are kept.
    let before = traces(&env);
    let snapshots = |env: &E2e| {
        let json = env.rum(&["-o", "json", "snapshot", "list"]);
        let event: serde_json::Value =
            serde_json::from_str(json.stdout.lines().last().unwrap()).unwrap();
        // What each is, not how old it is by now.
        let mut rows = event["data"]["snapshots"].as_array().unwrap().clone();
        for row in &mut rows {
            row.as_object_mut().unwrap().remove("age_s");
        }
        rows
    };
    let kept = snapshots(&env);
    let again = env.rum(&["provision", "--step", "two"]);
    again.assert_success();
    assert!(again.stderr.contains("with no rollback"), "{again}");
    assert!(!again.stderr.contains("Restoring"), "{again}");
    assert!(!again.stderr.contains("Keeping a checkpoint"), "{again}");
    // The runs a step left, one word each.
    let runs = |text: &str, step: &str| -> Vec<String> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{step}:")))
            .unwrap();
        line.split_whitespace().map(str::to_owned).collect()
    };
    let after = traces(&env);
    let (was, is) = (runs(&before, "two"), runs(&after, "two"));
    assert_eq!(
        is.len(),
        was.len() + 1,
        "one more run of two: {before} → {after}"
    );
    assert_eq!(&is[..was.len()], &was[..], "{before} → {after}");
    assert_eq!(runs(&after, "one"), runs(&before, "one"));
    // --system: every system step once more, on top.
    env.rum(&["provision", "--system"]).assert_success();
    let again = traces(&env);
    for step in ["one", "two", "three"] {
        assert_eq!(
            runs(&again, step).len(),
            runs(&after, step).len() + 1,
            "{step}: {after} → {again}"
        );
    }
    assert_eq!(snapshots(&env), kept, "snapshots untouched");
    let boot = env.guest_sh("wc -l < /var/tmp/boot");
    env.rum(&["provision", "--boot"]).assert_success();
    let boot_after = env.guest_sh("wc -l < /var/tmp/boot");
    assert_eq!(
        boot_after.trim().parse::<u32>().unwrap(),
        boot.trim().parse::<u32>().unwrap() + 1
    );
    let unknown = env.rum(&["provision", "--step", "nope"]);
    assert_eq!(unknown.status.code(), Some(2), "{unknown}");
    assert!(
        unknown.stderr.contains("no system step `nope`") && unknown.stderr.contains("one, two"),
        "{unknown}"
    );
    // The checkpoints still serve `rum retry`.
    let retry = env.rum(&["retry", "--from", "three"]);
    retry.assert_success();
    assert!(
        retry.stderr.contains("Restoring the `step-two` snapshot"),
        "{retry}"
    );

    env.rum(&["retry", "--done"]).assert_success();
    let list = env.rum(&["snapshot", "list"]);
    assert!(list.stdout.contains("has no snapshots"), "{list}");
    env.rum(&["destroy", "-f"]).assert_success();
}
