//! A `rum up` killed while it waits for the guest leaves QEMU running; the
//! VM is not called ready, and the next `rum up` finishes the work on that
//! QEMU (agent, cloud-init, pre-provision, provisioning) instead of saying
//! "already running". A running VM whose provisioning failed is not up
//! either. One boot.

mod support;

use support::At;

#[test]
fn an_up_killed_while_the_guest_boots_is_finished_by_the_next() {
    let Some(env) = support::e2e() else { return };
    let scripts = env.project.join("provision");
    std::fs::create_dir_all(&scripts).unwrap();
    let system = scripts.join("system.sh");
    std::fs::write(&system, "echo ran >> /var/tmp/system-runs\n").unwrap();
    env.write_rum_toml("[provision.system]\nfile = \"provision/system.sh\"\n");

    env.kill_rum(
        &["up", "-d"],
        At::Line(
            "Waiting for the guest agent",
            std::time::Duration::from_secs(2),
        ),
    );
    let killed = env.rum_data(&["status"]);
    assert_eq!(killed["state"], "running", "{killed}");
    assert_eq!(killed["ready"], false, "{killed}");
    let text = env.rum(&["status"]);
    assert!(
        text.stdout
            .contains("not ready: agent ready unfinished; `rum up` finishes it"),
        "{text}"
    );
    let pid = killed["pid"].clone();

    let up = env.rum(&["up", "-d"]);
    up.assert_success();
    assert!(
        up.stderr
            .contains("Finishing what an earlier `rum up` left undone"),
        "{up}"
    );
    assert!(
        up.stderr.contains("Taking the pre-provision snapshot"),
        "{up}"
    );
    let done = env.rum_data(&["status"]);
    assert_eq!(done["pid"], pid, "the same QEMU, not a second one");
    assert_eq!(done["ready"], true, "{done}");
    assert_eq!(
        env.guest_sh("cat /var/tmp/system-runs"),
        "ran\n",
        "provisioned once"
    );
    let list = env.rum(&["snapshot", "list"]);
    assert!(list.stdout.contains("pre-provision"), "{list}");

    // Provisioning that fails on a running VM: `rum up` says so and fails,
    // rather than "already running"; `rum retry` fixes it.
    std::fs::write(&system, "echo broken >&2\nexit 4\n").unwrap();
    let retry = env.rum(&["retry"]);
    assert_eq!(retry.status.code(), Some(1), "{retry}");
    let up = env.rum(&["up", "-d"]);
    assert_eq!(up.status.code(), Some(1), "{up}");
    assert!(
        up.stdout
            .contains("its provisioning failed (system provisioned)")
            && up.stdout.contains("`rum retry`"),
        "{up}"
    );
    assert_eq!(env.rum_data(&["status"])["ready"], false);
    std::fs::write(&system, "echo fixed >> /var/tmp/system-runs\n").unwrap();
    env.rum(&["retry"]).assert_success();
    let up = env.rum(&["up", "-d"]);
    up.assert_success();
    assert!(up.stdout.contains("already running"), "{up}");
    assert_eq!(env.guest_sh("cat /var/tmp/system-runs"), "fixed\n");

    env.rum(&["destroy", "-f"]).assert_success();
    assert!(env.procs.strays().is_empty());
}
