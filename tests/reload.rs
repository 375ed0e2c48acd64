//! rum.toml edits between runs, end to end: `rum reload` applies port
//! forwards live (and `--dry-run` changes nothing), a retry's restore keeps
//! rum.toml's forwards, and an edit a retry cannot apply is named with what
//! it needs (`--strict` refuses it). One boot.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;
use support::{E2e, free_port};

/// The body of `GET /hello` through the host port, or `None` if nothing
/// answers there.
fn hello(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    stream
        .write_all(b"GET /hello HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let body = reply.split("\r\n\r\n").nth(1)?;
    Some(body.trim().to_owned())
}

/// A web server in the guest on port 8000, started (and listening) by the
/// system step, which also copies what a mount at /mnt/extra holds.
const STEP: &str = "[[provision.system]]\nname = \"web\"\nscript = \"\"\"\nmkdir -p /var/tmp/www && echo hi > /var/tmp/www/hello\nrm -f /var/tmp/seen; cp /mnt/extra/hello.txt /var/tmp/seen 2>/dev/null || true\nsetsid python3 -m http.server 8000 --directory /var/tmp/www >/dev/null 2>&1 < /dev/null &\nfor i in $(seq 300); do ss -ltn | grep -q :8000 && exit 0; sleep 0.2; done; exit 1\n\"\"\"\n\n";

/// Runs `command` as root in the guest: its output, or `None` if it failed.
fn guest(env: &E2e, command: &str) -> Option<String> {
    let run = env.rum(&["exec", "--user", "root", "--", "sh", "-c", command]);
    run.status.success().then(|| run.stdout.clone())
}

/// The pids of the virtiofsd processes sharing `dir`.
fn virtiofsd_sharing(dir: &Path) -> Vec<u32> {
    let wanted = format!("--shared-dir={}", dir.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let ours = args.first()?.ends_with("virtiofsd") && args.contains(&wanted);
            ours.then_some(pid)
        })
        .collect()
}

fn toml(env: &E2e, extra: &str) {
    env.write_rum_toml(&format!("{STEP}{extra}"));
}

#[test]
fn edits_between_runs_are_applied_or_named() {
    let Some(env) = support::e2e() else { return };
    let port = free_port();
    let forward = format!("[[ports]]\nhost = {port}\nguest = 8000\n\n");
    toml(&env, "");
    env.rum(&["up", "-d"]).assert_success();
    assert_eq!(hello(port), None, "no forward yet");

    // A port added: --dry-run names it as live and changes nothing.
    toml(&env, &forward);
    let dry = env.rum(&["reload", "--dry-run"]);
    dry.assert_success();
    let key = format!("[[ports]] 127.0.0.1:{port}");
    assert!(
        dry.stdout.contains(&format!("Would apply live: {key}")),
        "{dry}"
    );
    assert!(
        dry.stderr.contains("live: `rum reload` applies it"),
        "{dry}"
    );
    assert_eq!(hello(port), None, "--dry-run changed nothing");

    // Applied: the guest's server answers on the host port.
    let reload = env.rum(&["reload"]);
    reload.assert_success();
    assert!(
        reload.stdout.contains("Applied every change live"),
        "{reload}"
    );
    let listening = env.rum(&["exec", "--user", "root", "--", "ss", "-ltn"]);
    assert_eq!(hello(port).as_deref(), Some("hi"), "{reload}\n{listening}");
    let check = env.rum(&["config", "check"]);
    assert!(!check.stdout.contains("differs"), "nothing left: {check}");

    // A retry restores a snapshot taken before the edit; the forward stays,
    // and the step that runs again serves through it.
    let retry = env.rum(&["retry", "--from", "web"]);
    retry.assert_success();
    assert!(
        retry
            .stderr
            .contains("Restoring the `pre-provision` snapshot"),
        "{retry}"
    );
    assert_eq!(hello(port).as_deref(), Some("hi"), "{retry}");

    // A port already taken on the host: refused before anything changes.
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let other = free_port();
    toml(
        &env,
        &format!(
            "{forward}[[ports]]\nhost = {other}\nguest = 8000\n\n[[ports]]\nhost = {taken_port}\nguest = 8000\n\n"
        ),
    );
    let refused = env.rum(&["reload"]);
    assert_eq!(refused.status.code(), Some(1), "{refused}");
    assert!(
        refused.stderr.contains(&format!(
            "Host port {taken_port} on 127.0.0.1 is already in use"
        )),
        "{refused}"
    );
    assert_eq!(hello(other), None, "the other new port was not added");
    drop(taken);

    // Removed again: gone from QEMU.
    toml(&env, "");
    env.rum(&["reload"]).assert_success();
    assert_eq!(hello(port), None, "the forward is gone");

    // A mount added to the running VM: plugged into a spare PCIe port and
    // mounted; --dry-run only names it.
    let share = env.dir("extra");
    std::fs::write(share.join("hello.txt"), "from the host\n").unwrap();
    let mount = format!(
        "[[mounts]]\nsource = \"{}\"\ntarget = \"/mnt/extra\"\n\n",
        share.display()
    );
    let hello_txt = Some("from the host\n".to_owned());
    toml(&env, &mount);
    let dry = env.rum(&["reload", "--dry-run"]);
    dry.assert_success();
    assert!(
        dry.stdout
            .contains("Would apply live: [[mounts]] /mnt/extra"),
        "{dry}"
    );
    assert_eq!(guest(&env, "mountpoint -q /mnt/extra"), None, "{dry}");
    let reload = env.rum(&["reload"]);
    reload.assert_success();
    assert!(
        reload
            .stderr
            .contains("✓ Plugging in the mount at /mnt/extra"),
        "{reload}"
    );
    assert_eq!(
        guest(&env, "cat /mnt/extra/hello.txt"),
        hello_txt,
        "{reload}"
    );

    // A retry restores a snapshot taken before the mount existed (into a
    // QEMU started afresh with its devices); the mount is plugged in again
    // before the step runs, and the step reads it.
    let retry = env.rum(&["retry", "--from", "web"]);
    retry.assert_success();
    assert!(
        retry
            .stderr
            .contains("Restoring the `pre-provision` snapshot"),
        "{retry}"
    );
    assert_eq!(guest(&env, "cat /var/tmp/seen"), hello_txt, "{retry}");

    // Stopped and started: the devices it was made with, the mount plugged
    // in after the boot. A checkpoint taken with the mount loads live, and
    // pre-provision (taken without) still loads.
    env.rum(&["down"]).assert_success();
    let up = env.rum(&["up", "-d"]);
    up.assert_success();
    assert!(
        up.stderr.contains("✓ Plugging in the mount at /mnt/extra"),
        "{up}"
    );
    assert_eq!(guest(&env, "cat /mnt/extra/hello.txt"), hello_txt, "{up}");
    let retry = env.rum(&["retry"]);
    retry.assert_success();
    assert!(
        retry
            .stderr
            .contains("✓ Restoring the `post-system` snapshot"),
        "{retry}"
    );
    assert!(
        !retry.stderr.contains("Stopping QEMU"),
        "the same devices: a live load: {retry}"
    );
    assert_eq!(
        guest(&env, "cat /mnt/extra/hello.txt"),
        hello_txt,
        "{retry}"
    );
    // Stopped: that checkpoint loads into a QEMU started with the mount on
    // its port, as it was plugged in.
    env.rum(&["down"]).assert_success();
    let cold = env.rum(&["retry"]);
    cold.assert_success();
    assert!(cold.stderr.contains("✓ Starting QEMU"), "{cold}");
    assert!(
        cold.stderr
            .contains("✓ Restoring the `post-system` snapshot"),
        "{cold}"
    );
    assert!(
        !cold.stderr.contains("Plugging in"),
        "the mount came with the QEMU: {cold}"
    );
    assert_eq!(guest(&env, "cat /mnt/extra/hello.txt"), hello_txt, "{cold}");
    let retry = env.rum(&["retry", "--from", "web"]);
    retry.assert_success();
    assert!(
        retry
            .stderr
            .contains("✓ Restoring the `pre-provision` snapshot"),
        "{retry}"
    );
    assert_eq!(guest(&env, "cat /var/tmp/seen"), hello_txt, "{retry}");

    // Removed: unmounted, unplugged, its virtiofsd gone.
    toml(&env, "");
    let reload = env.rum(&["reload"]);
    reload.assert_success();
    assert!(
        reload
            .stderr
            .contains("✓ Unplugging the mount at /mnt/extra"),
        "{reload}"
    );
    assert_eq!(guest(&env, "mountpoint -q /mnt/extra"), None, "{reload}");
    assert_eq!(virtiofsd_sharing(&share), Vec::<u32>::new(), "{reload}");

    // A mount the guest cannot make (its target lies under a file): said,
    // and undone — no virtiofsd left, and the port free for the next one.
    toml(
        &env,
        &format!(
            "[[mounts]]\nsource = \"{}\"\ntarget = \"/etc/hostname/extra\"\n\n",
            share.display()
        ),
    );
    let refused = env.rum(&["reload"]);
    assert_eq!(refused.status.code(), Some(1), "{refused}");
    assert!(
        refused
            .stderr
            .contains("The guest could not mount `etc-hostname-extra` at /etc/hostname/extra"),
        "{refused}"
    );
    assert_eq!(virtiofsd_sharing(&share), Vec::<u32>::new(), "{refused}");
    toml(&env, &mount);
    env.rum(&["reload"]).assert_success();
    assert_eq!(guest(&env, "cat /mnt/extra/hello.txt"), hello_txt);
    toml(&env, "");
    env.rum(&["reload"]).assert_success();

    // An edit a retry cannot apply: it runs and names it, or --strict refuses.
    toml(&env, "[user]\nname = \"alice\"\n");
    let strict = env.rum(&["retry", "--strict"]);
    assert_eq!(strict.status.code(), Some(2), "{strict}");
    assert!(strict.stderr.contains("[user] name"), "{strict}");
    assert!(
        !strict.stderr.contains("Restoring"),
        "refused before restoring: {strict}"
    );
    let retry = env.rum(&["retry"]);
    retry.assert_success();
    assert!(retry.stderr.contains("[user] name: rum → alice"), "{retry}");
    assert!(retry.stderr.contains("`rum retry --reset`"), "{retry}");
    let json = env.rum(&["-o", "json", "config", "check"]);
    let event: serde_json::Value =
        serde_json::from_str(json.stdout.lines().last().unwrap()).unwrap();
    let changes = event["data"]["changes"].as_array().unwrap().clone();
    assert_eq!(changes.len(), 1, "{json}");
    assert_eq!(changes[0]["key"], "[user] name");
    assert_eq!(changes[0]["applies"], "reset");
    env.rum(&["destroy", "-f"]).assert_success();
    assert!(env.procs.strays().is_empty());
}
