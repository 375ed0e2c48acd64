//! The provisioning loop end to end: a failing script, `rum log --failed`,
//! `rum retry` on a really rolled-back VM (its clock set, its RNG reseeded),
//! `--from boot`, many retries in a row, retry into a fresh QEMU, `--done`
//! and `destroy`. One boot.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};
use support::E2e;

/// How far the guest's clock may be from the host's right after a restore.
const CLOCK_SLACK_S: f64 = 0.2;
/// How far the snapshot's own time is left behind before the retry.
const SNAPSHOT_AGE_S: u64 = 10;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn snapshot_count(env: &E2e) -> u64 {
    let status = env.rum(&["-o", "json", "status"]);
    let event: serde_json::Value =
        serde_json::from_str(status.stdout.lines().last().unwrap()).unwrap();
    event["data"]["snapshots"].as_u64().unwrap()
}

#[test]
fn the_provisioning_loop() {
    let Some(env) = support::e2e() else { return };
    let share = env.dir("share");
    std::fs::write(share.join("note.txt"), "shared\n").unwrap();
    let scripts = env.project.join("provision");
    std::fs::create_dir_all(&scripts).unwrap();
    let system = scripts.join("system.sh");
    std::fs::write(&system, "echo system attempt\necho x >> /var/tmp/system-runs\ntouch /var/tmp/dirty\necho broken on purpose >&2\nexit 3\n").unwrap();
    env.write_rum_toml(&format!(
        "[[mounts]]\nsource = \"{}\"\ntarget = \"/mnt/share\"\n\n[provision.system]\nfile = \"provision/system.sh\"\n\n[provision.boot]\nscript = \"echo b >> /var/tmp/boot-runs\"\n",
        share.display()
    ));

    // A failing system script: non-zero exit, the VM stays up, the log has it.
    let up = env.rum(&["up", "-d"]);
    assert_eq!(up.status.code(), Some(1), "{up}");
    assert!(
        up.stderr
            .contains("✗ Running system provisioning (exit code 3)"),
        "{up}"
    );
    assert!(
        up.stderr.contains("— Running boot provisioning (skipped)"),
        "{up}"
    );
    assert!(up.stderr.contains("rum retry"), "{up}");
    assert!(
        up.stderr.contains("step `system-1` failed (exit code 3)"),
        "names the failed step: {up}"
    );
    let waited = env.rum(&["wait"]);
    assert_eq!(waited.status.code(), Some(1), "{waited}");
    assert!(
        waited
            .stdout
            .contains("step `system-1` failed (exit code 3)"),
        "{waited}"
    );
    assert!(
        up.stdout.contains("system attempt"),
        "script output streams: {up}"
    );
    let failed = env.rum(&["log", "--failed"]);
    failed.assert_success();
    assert!(failed.stdout.contains("broken on purpose"), "{failed}");
    assert!(env.guest_sh("ls /var/tmp").contains("dirty"));
    let destroy = env.rum(&["destroy"]);
    assert_eq!(
        destroy.status.code(),
        Some(2),
        "no terminal, snapshots at stake: {destroy}"
    );
    assert!(destroy.stderr.contains("pass -f"), "{destroy}");

    // Fixed script, retry: the failed attempt's traces are gone.
    std::fs::write(
        &system,
        "echo system fixed\ntest ! -e /var/tmp/dirty\necho x >> /var/tmp/system-runs\n",
    )
    .unwrap();
    // Let the snapshot's own time fall well behind, so that the clock check
    // below fails if rum does not set the clock.
    std::thread::sleep(std::time::Duration::from_secs(SNAPSHOT_AGE_S));
    let retry = env.rum(&["retry"]);
    retry.assert_success();
    assert!(
        retry
            .stderr
            .contains("Restoring the `pre-provision` snapshot"),
        "{retry}"
    );
    assert!(
        retry.stderr.contains("the rollback does not touch them"),
        "{retry}"
    );
    assert_eq!(
        env.guest_sh("cat /var/tmp/system-runs"),
        "x\n",
        "the system script ran once, on a clean VM"
    );
    let before = now();
    let guest_time: f64 = env.guest_sh("date +%s.%N").trim().parse().unwrap();
    let after = now();
    assert!(
        guest_time + CLOCK_SLACK_S >= before && guest_time <= after + CLOCK_SLACK_S,
        "guest clock {guest_time}, host {before}..{after}"
    );

    // Two restores of one snapshot: the guest's RNG does not repeat itself.
    let random = |env: &E2e| {
        env.rum(&["snapshot", "restore", "post-system"])
            .assert_success();
        env.guest_sh("head -c 16 /dev/urandom | od -An -tx1")
    };
    let (first, second) = (random(&env), random(&env));
    assert_ne!(first, second, "the same random bytes after two restores");
    // Every QEMU gives the guest a new VM generation ID: a kernel with the
    // vmgenid driver reseeds on its own after a restore into a fresh one.
    let acpi = env.guest_sh("ls /sys/bus/acpi/devices");
    assert!(acpi.contains("QEMUVGID:00"), "no VM generation ID: {acpi}");

    // --from boot: only the boot script runs; the system phase is not repeated.
    let from_boot = env.rum(&["retry", "--from", "boot"]);
    from_boot.assert_success();
    assert!(
        !from_boot.stderr.contains("Running system provisioning"),
        "{from_boot}"
    );
    assert!(
        from_boot.stderr.contains("✓ Running boot provisioning"),
        "{from_boot}"
    );
    assert_eq!(env.guest_sh("cat /var/tmp/system-runs"), "x\n");
    assert_eq!(env.guest_sh("cat /var/tmp/boot-runs"), "b\n");

    // Eight retries in a row, the mount working throughout (`scripts/bench
    // --soak` runs a hundred and measures what grows).
    for i in 0..8 {
        let run = env.rum(&["retry"]);
        assert!(run.status.success(), "retry {i}: {run}");
    }
    assert_eq!(
        env.guest_sh("cat /mnt/share/note.txt"),
        "shared\n",
        "virtiofs works after retries"
    );
    assert_eq!(env.guest_sh("cat /var/tmp/system-runs"), "x\n");

    // Into a fresh QEMU: stopped VM, and after a down/up.
    env.rum(&["down"]).assert_success();
    let cold = env.rum(&["retry"]);
    cold.assert_success();
    assert!(cold.stderr.contains("Starting QEMU"), "{cold}");
    assert_eq!(env.guest_sh("cat /var/tmp/system-runs"), "x\n");
    env.rum(&["down"]).assert_success();
    env.rum(&["up", "-d"]).assert_success();
    env.rum(&["retry"]).assert_success();
    assert_eq!(env.guest_sh("cat /mnt/share/note.txt"), "shared\n");

    // --done drops rum's snapshots; destroy removes everything.
    assert_eq!(snapshot_count(&env), 2, "pre-provision and post-system");
    env.rum(&["retry", "--done"]).assert_success();
    assert_eq!(snapshot_count(&env), 0);
    let again = env.rum(&["retry"]);
    assert_eq!(again.status.code(), Some(1), "{again}");
    assert!(
        again.stderr.contains("no `pre-provision` snapshot"),
        "{again}"
    );
    env.rum(&["destroy", "-f"]).assert_success();
    assert!(env.procs.strays().is_empty());
    let left = std::fs::read_dir(env.xdg.data.join("rum"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "destroy leaves nothing");
}
