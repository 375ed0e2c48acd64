//! The processes under a running VM killed behind rum's back: a virtiofsd
//! (its mount named as dead, back after `down` + `up`), the guest agent
//! (systemd restarts it), and QEMU itself (`rum status` says the VM died and
//! shows its console; `rum up` and `rum retry` work), and QEMU failing one
//! of its own assertions during the first boot (`rum up` boots once more).
//! One full boot (the first QEMU aborted as it starts), two starts.

mod support;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn sigkill(pid: &serde_json::Value) {
    let pid = pid.as_u64().expect("a pid") as i32;
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
}

#[test]
fn killed_virtiofsd_agent_and_qemu_are_named_and_recovered_from() {
    let Some(env) = support::e2e() else { return };
    let share = env.dir("share");
    std::fs::write(share.join("note.txt"), "shared\n").unwrap();
    env.write_rum_toml(&format!(
        "[[mounts]]\nsource = \"{}\"\ntarget = \"/mnt/share\"\n\n[provision.system]\nscript = \"echo x >> /var/tmp/runs\"\n",
        share.display()
    ));
    // QEMU aborts on an assertion as the guest boots (seen in a CI run under
    // TCG: `iotlb_to_section: Assertion ... failed`): `rum up` boots again.
    let up = env.rum_paused(&[], &["up", "-d"], "milestone:agent_ready", || {
        let data = env.instance_dir().expect("the VM's data dir");
        let id = data.file_name().unwrap().to_owned();
        let pid_file = env.xdg.runtime.join("rum").join(id).join("qemu.pid");
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("logs/qemu.log"))
            .unwrap();
        std::io::Write::write_all(
            &mut log,
            b"qemu-system-x86_64: ../system/physmem.c:2678: iotlb_to_section: Assertion `injected' failed.\n",
        )
        .unwrap();
        kill(Pid::from_raw(pid), Signal::SIGABRT).unwrap();
    });
    up.assert_success();
    assert!(
        up.stderr
            .contains("QEMU failed an internal assertion while the guest was booting"),
        "{up}"
    );
    assert_eq!(env.guest_sh("cat /mnt/share/note.txt"), "shared\n");

    // virtiofsd: the mount is named as dead.
    let before = env.rum_data(&["status"]);
    assert_eq!(before["dead_mounts"], serde_json::json!([]), "{before}");
    sigkill(&before["runtime"]["virtiofsd_pids"][0]);
    let dead = support::wait_until(
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(100),
        || {
            env.rum_data(&["status"])["dead_mounts"]
                .as_array()
                .is_some_and(|m| m.len() == 1)
        },
    );
    assert!(dead, "{}", env.rum_data(&["status"]));
    let text = env.rum(&["status"]);
    assert!(
        text.stdout.contains("/mnt/share — its virtiofsd is gone"),
        "{text}"
    );

    // The agent killed in the guest while idle (a second after this exec
    // has returned): systemd starts it again.
    env.guest_sh("systemd-run --on-active=1 systemctl kill -s KILL rum-agent >/dev/null 2>&1");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let back = support::wait_until(
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(500),
        || env.rum(&["exec", "--", "true"]).status.success(),
    );
    assert!(back, "the agent came back");
    // Killed in the middle of a call: the restarted agent serves only new
    // sessions, so the call ends when the agent stops answering its pings,
    // rather than waiting for ever.
    let mid = env.rum(&[
        "exec",
        "--user",
        "root",
        "--",
        "systemctl",
        "kill",
        "-s",
        "KILL",
        "rum-agent",
    ]);
    assert!(!mid.status.success(), "{mid}");
    assert!(mid.stderr.contains("stopped answering"), "{mid}");
    let back = support::wait_until(
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(500),
        || env.rum(&["exec", "--", "true"]).status.success(),
    );
    assert!(back, "the agent came back again");

    // `down` + `up` brings the mount back.
    env.rum(&["down", "--force"]).assert_success();
    env.rum(&["up", "-d"]).assert_success();
    assert_eq!(env.guest_sh("cat /mnt/share/note.txt"), "shared\n");
    assert_eq!(
        env.rum_data(&["status"])["dead_mounts"],
        serde_json::json!([])
    );

    // QEMU: the VM died, not stopped; its console is shown.
    let running = env.rum_data(&["status"]);
    sigkill(&running["pid"]);
    let died = support::wait_until(
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(100),
        || env.rum_data(&["status"])["state"] == "died",
    );
    assert!(died, "{}", env.rum_data(&["status"]));
    let text = env.rum(&["status"]);
    assert!(
        text.stdout
            .contains("QEMU is gone and was not stopped by rum")
            && text.stdout.contains("its console ended with:"),
        "{text}"
    );
    let list = env.rum(&["list"]);
    assert!(list.stdout.contains("died"), "{list}");
    env.rum(&["up", "-d"]).assert_success();
    assert_eq!(env.rum_data(&["status"])["ready"], true);
    env.rum(&["retry"]).assert_success();
    assert_eq!(env.guest_sh("cat /var/tmp/runs"), "x\n");

    env.rum(&["destroy", "-f"]).assert_success();
    assert!(env.procs.strays().is_empty());
}
