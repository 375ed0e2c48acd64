//! `rum up`, `exec`, `cp`, `ssh`, `status`, `down` and `destroy` end to end
//! on the test guest image under TCG, with the seed rum builds itself.
//! One boot is shared by many checks: boots cost a minute or more here.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;
use support::{E2e, RumRun};

/// The last JSON event of a `-o json` run.
fn json(run: &RumRun) -> serde_json::Value {
    let line = run
        .stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output: {run}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {run}"))
}

/// The instance's data dir (there is one instance per test).
fn assert_no_strays(env: &E2e, when: &str) {
    let strays = env.procs.strays();
    assert!(
        strays.is_empty(),
        "{when}: QEMU/virtiofsd left running: {strays:?}"
    );
}

fn http_get(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(b"GET /marker.txt HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The security audit of a VM that is up, with a snapshot of its own: what
/// rum made on the host is the user's alone, QEMU forwards only loopback
/// ports, the guest takes no passwords and the agent listens on no network
/// socket, and a guest whose host key changed is refused by `rum ssh`.
fn audit(env: &E2e, data: &std::path::Path) {
    env.rum(&["snapshot", "create", "audited"]).assert_success();
    let uid = nix::unistd::getuid().as_raw();
    let shm = std::path::PathBuf::from(format!("/dev/shm/rum-{uid}"));
    let mut exposed = Vec::new();
    for dir in [
        env.xdg.data.join("rum"),
        env.xdg.runtime.join("rum"),
        env.xdg.cache.join("rum"),
        shm,
    ] {
        exposed.extend(support::exposed(&dir));
    }
    assert!(
        exposed.is_empty(),
        "open to other users:\n{}",
        exposed.join("\n")
    );
    assert!(
        data.join("ram/audited.ram").is_file(),
        "the audit saw the RAM copy"
    );

    let status = json(&env.rum(&["-o", "json", "status"]));
    let pid = status["data"]["pid"].as_u64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let forwards: Vec<&str> = cmdline
        .split(',')
        .filter(|p| p.starts_with("hostfwd="))
        .collect();
    assert_eq!(
        forwards.len(),
        2,
        "SSH and the one [[ports]] entry: {cmdline}"
    );
    for forward in &forwards {
        assert!(forward.starts_with("hostfwd=tcp:127.0.0.1:"), "{forward}");
    }
    assert!(
        !cmdline.contains("tcp:0.0.0.0") && !cmdline.contains(",host="),
        "{cmdline}"
    );

    let root = |command: &str| {
        let run = env.rum(&["exec", "--user", "root", "--", "sh", "-c", command]);
        run.assert_success();
        run.stdout.clone()
    };
    let sshd = root(
        "sshd -T | grep -Ei '^(passwordauthentication|kbdinteractiveauthentication|permitrootlogin) '",
    );
    assert!(sshd.contains("passwordauthentication no"), "{sshd}");
    assert!(sshd.contains("kbdinteractiveauthentication no"), "{sshd}");
    let locked = root("passwd -S dev | cut -d' ' -f2");
    assert_eq!(locked.trim(), "L", "the user's password is locked");
    let listening = root("ss -Hlntup");
    let tcp: Vec<&str> = listening.lines().filter(|l| l.starts_with("tcp")).collect();
    assert!(
        !tcp.is_empty() && tcp.iter().all(|l| l.contains("\"sshd\"")),
        "{listening}"
    );
    assert!(!listening.contains("rum-agent"), "{listening}");

    // A new host key in the guest: `rum ssh` refuses it, then the old one
    // is put back.
    root(
        "cp -p /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub /root/ && rm /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && systemctl restart ssh",
    );
    let refused = env.rum(&["ssh", "--", "true"]);
    assert_ne!(refused.status.code(), Some(0), "{refused}");
    assert!(
        refused
            .stderr
            .contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || refused.stderr.contains("Host key verification failed"),
        "{refused}"
    );
    root(
        "cp -p /root/ssh_host_ed25519_key /root/ssh_host_ed25519_key.pub /etc/ssh/ && systemctl restart ssh",
    );
    env.rum(&["ssh", "--", "true"]).assert_success();
    env.rum(&["snapshot", "delete", "audited"]).assert_success();
}

#[test]
fn bios_vm_lifecycle() {
    let Some(env) = support::e2e() else { return };
    let share = env.dir("share");
    std::fs::write(share.join("from-host.txt"), "hello from the host\n").unwrap();
    let extra_key = support::SshKey::generate(&env.root, "extra");
    let port = support::free_port();
    env.write_rum_toml(&format!(
        "[network]\nhostname = \"lifecycle-vm\"\n\n[user]\nname = \"dev\"\ngroups = [\"adm\", \"docker\"]\n\n[ssh]\nauthorized_keys = [\"{}\"]\n\n[[mounts]]\nsource = \"{}\"\ntarget = \"/mnt/share\"\ndefault = true\n\n[[ports]]\nhost = {port}\nguest = 8080\n",
        extra_key.public.trim(),
        share.display()
    ));

    // `rum wait` beside a `rum up` that is still creating the VM: a short
    // deadline runs out (124), a long one sees it provisioned.
    let up_log = env.root.join("up.log");
    let mut up = env.rum_command();
    up.args(["up", "-d"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&up_log).unwrap());
    let up_pid = env.procs.spawn(&mut up);
    let early = env.rum(&["wait", "--timeout", "1"]);
    assert_eq!(early.status.code(), Some(124), "{early}");
    let waited = env.rum(&["wait"]);
    waited.assert_success();
    assert!(waited.stdout.contains("is up and provisioned"), "{waited}");
    let up_status = env
        .procs
        .wait_timeout(up_pid, std::time::Duration::from_secs(60))
        .expect("rum up ended");
    let up_text = std::fs::read_to_string(&up_log).unwrap();
    assert!(up_status.success(), "{up_text}");
    assert!(
        up_text.contains("✓ Waiting for the guest agent"),
        "{up_text}"
    );

    // `rum list` from elsewhere: this VM, running, with its rum.toml; a
    // broken instance dir and one whose project is gone are listed too.
    let instances = env.xdg.data.join("rum");
    std::fs::create_dir_all(instances.join("broken-0123abcd")).unwrap();
    std::fs::write(instances.join("broken-0123abcd/state.json"), "{").unwrap();
    std::fs::create_dir_all(instances.join("gone-89abcdef")).unwrap();
    std::fs::write(
        instances.join("gone-89abcdef/project.json"),
        r#"{"config": "/nonexistent/rum.toml", "name": "gone"}"#,
    )
    .unwrap();
    let listed = env
        .rum_command()
        .current_dir(&env.root)
        .args(["-o", "json", "list"])
        .output()
        .unwrap();
    assert!(listed.status.success());
    let listed: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    let rows = listed["data"]["instances"].as_array().unwrap();
    let state_of = |prefix: &str| {
        rows.iter()
            .find(|r| r["instance"].as_str().unwrap().starts_with(prefix))
            .map(|r| r["state"].as_str().unwrap().to_owned())
    };
    assert_eq!(state_of("broken-").as_deref(), Some("broken"), "{listed}");
    assert_eq!(
        state_of("gone-").as_deref(),
        Some("config gone"),
        "{listed}"
    );
    let ours = rows
        .iter()
        .find(|r| r["config"].as_str() == Some(env.project.join("rum.toml").to_str().unwrap()))
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(ours["state"], "running", "{listed}");
    assert!(ours["pid"].as_u64().is_some() && ours["disk_bytes"].as_u64().unwrap() > 0);
    assert_eq!(ours["snapshots"], 1, "pre-provision: {listed}");
    std::fs::remove_dir_all(instances.join("broken-0123abcd")).unwrap();
    std::fs::remove_dir_all(instances.join("gone-89abcdef")).unwrap();

    // The seed rum built: user, groups, hostname, agent unit, pinned host key.
    let who = env.rum(&[
        "ssh",
        "--",
        "id -un; id -Gn; hostname; systemctl is-active rum-agent",
    ]);
    who.assert_success();
    let lines: Vec<&str> = who.stdout.lines().collect();
    assert_eq!(lines[0], "dev", "{who}");
    assert!(
        lines[1].contains("adm") && lines[1].contains("docker"),
        "{who}"
    );
    assert_eq!(lines[2], "lifecycle-vm", "{who}");
    assert_eq!(lines[3], "active", "{who}");
    let config = json(&env.rum(&["-o", "json", "ssh-config"]));
    let ssh_port = config["data"]["port"].as_u64().unwrap() as u16;
    let data = env.instance_dir().expect("instance dir");
    // The user's own key logs in too, checked against the pinned host key only.
    let extra = std::process::Command::new("ssh")
        .args([
            "-i",
            extra_key.private.to_str().unwrap(),
            "-p",
            &ssh_port.to_string(),
        ])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            data.join("ssh/known_hosts").display()
        ))
        .arg("-o")
        .arg(format!(
            "HostKeyAlias={}",
            config["data"]["config"]
                .as_str()
                .unwrap()
                .lines()
                .find(|l| l.contains("HostKeyAlias"))
                .unwrap()
                .split_whitespace()
                .last()
                .unwrap()
        ))
        .args(["dev@127.0.0.1", "true"])
        .output()
        .unwrap();
    assert!(
        extra.status.success(),
        "extra key: {}",
        String::from_utf8_lossy(&extra.stderr)
    );

    // exec: output, exit status, user.
    // The user-data rum wrote passes the guest's own cloud-init schema
    // (`ssh_genkeytypes: []` once failed it: "too short").
    let schema = env.rum(&[
        "exec",
        "--user",
        "root",
        "--",
        "cloud-init",
        "schema",
        "--system",
    ]);
    assert!(
        schema.status.success() && schema.stdout.contains("Valid cloud-config"),
        "{schema}"
    );
    audit(&env, &data);
    let uname = env.rum(&["exec", "--", "uname", "-s"]);
    uname.assert_success();
    assert_eq!(uname.stdout.trim(), "Linux");
    env.rum(&["exec", "--", "sh", "-c", "echo oops >&2; exit 7"])
        .assert_code(7);
    // exec and ssh start in the default mount; --cwd wins.
    assert_eq!(env.rum(&["exec", "--", "pwd"]).stdout, "/mnt/share\n");
    assert_eq!(
        env.rum(&["exec", "--cwd", "/tmp", "--", "pwd"]).stdout,
        "/tmp\n"
    );
    assert_eq!(env.rum(&["ssh", "--", "pwd"]).stdout, "/mnt/share\n");
    // The serial console: a login prompt (no autologin); Ctrl-] detaches
    // and leaves the terminal as it was; without a terminal, a usage error.
    let mut console = attach_console(&env);
    console.type_keys(b"\r");
    assert!(
        console.wait_for("login:", Duration::from_secs(120)),
        "{}",
        console.output()
    );
    detach_console(&env, console);
    let no_tty = env.rum(&["console"]);
    assert_eq!(no_tty.status.code(), Some(2), "{no_tty}");
    assert!(no_tty.stderr.contains("needs a terminal"), "{no_tty}");
    // A deadline kills the command's process group; the agent serves on.
    let timed = env.rum(&[
        "exec",
        "--timeout",
        "2",
        "--",
        "sh",
        "-c",
        "sleep 60 & sleep 60",
    ]);
    assert_eq!(timed.status.code(), Some(124), "{timed}");
    assert!(timed.stderr.contains("ran out of its 2s"), "{timed}");
    let left = env.rum(&[
        "exec",
        "--",
        "sh",
        "-c",
        "cat /proc/[0-9]*/comm 2>/dev/null | grep -cx sleep || true",
    ]);
    assert_eq!(
        left.stdout.trim(),
        "0",
        "the whole group was killed: {left}"
    );
    let root = env.rum(&["exec", "--user", "root", "--", "id", "-u"]);
    assert_eq!(root.stdout.trim(), "0", "{root}");

    // cp: 20 MiB there and back, byte for byte.
    let big: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let local = env.root.join("big.bin");
    std::fs::write(&local, &big).unwrap();
    env.rum(&["cp", local.to_str().unwrap(), ":/tmp/big.bin"])
        .assert_success();
    let back = env.root.join("back.bin");
    env.rum(&["cp", ":/tmp/big.bin", back.to_str().unwrap()])
        .assert_success();
    assert!(
        std::fs::read(&back).unwrap() == big,
        "cp round trip changed the bytes"
    );
    env.rum(&["cp", "a", "b"]).assert_code(2);

    // virtiofs both ways; files the guest user makes belong to the host user.
    let seen = env.rum(&["exec", "--", "cat", "/mnt/share/from-host.txt"]);
    assert_eq!(seen.stdout, "hello from the host\n", "{seen}");
    env.rum(&[
        "exec",
        "--",
        "sh",
        "-c",
        "echo from the guest > /mnt/share/from-guest.txt",
    ])
    .assert_success();
    let made = share.join("from-guest.txt");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "from the guest\n");
    let me = std::fs::metadata(&env.root).unwrap();
    assert_eq!(
        (
            std::fs::metadata(&made).unwrap().uid(),
            std::fs::metadata(&made).unwrap().gid()
        ),
        (me.uid(), me.gid())
    );

    // A [[ports]] forward reaches a listener in the guest.
    env.rum(&["exec", "--", "sh", "-c", "echo forwarded > /tmp/marker.txt"])
        .assert_success();
    env.rum(&[
        "exec",
        "--",
        "sh",
        "-c",
        "cd /tmp && setsid python3 -m http.server 8080 >/dev/null 2>&1 < /dev/null &",
    ])
    .assert_success();
    let mut body = None;
    support::wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        body = http_get(port).filter(|b| b.contains("forwarded"));
        body.is_some()
    });
    assert!(
        body.is_some(),
        "no answer through the port forward on {port}"
    );

    // status tells what runs.
    let status = json(&env.rum(&["-o", "json", "status"]));
    assert_eq!(status["data"]["state"], "running");
    let pid = status["data"]["pid"].as_u64().unwrap();
    assert_eq!(status["data"]["runtime"]["accel"], "tcg");
    assert_eq!(status["data"]["runtime"]["agent_transport"], "serial");
    env.rum(&["up"]).assert_success();
    assert!(env.rum(&["up"]).stdout.contains("already running"));

    // Something written to the root disk before down must survive down/up.
    env.rum(&[
        "exec",
        "--user",
        "root",
        "--",
        "sh",
        "-c",
        "echo kept > /var/tmp/kept && sync",
    ])
    .assert_success();
    let overlay = data.join("disk.qcow2");
    let inode = std::fs::metadata(&overlay).unwrap().ino();
    // `status --watch` prints a JSON line per change while the VM goes down.
    let watch_log = env.root.join("watch.log");
    let mut watch = env.rum_command();
    watch
        .args(["-o", "json", "status", "--watch"])
        .stdout(std::fs::File::create(&watch_log).unwrap());
    let watch = env.procs.spawn(&mut watch);
    env.rum(&["down"]).assert_success();
    let states = || -> Vec<String> {
        std::fs::read_to_string(&watch_log)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["data"]["state"].to_string()
            })
            .collect()
    };
    assert!(
        support::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            states().last().map(String::as_str) == Some("\"stopped\"")
        }),
        "{:?}",
        states()
    );
    assert_eq!(states()[0], "\"running\"", "{:?}", states());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watch as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let ended = env.procs.wait_timeout(watch, Duration::from_secs(10));
    assert!(ended.is_some_and(|s| s.success()), "Ctrl+C ends --watch");
    assert_no_strays(&env, "after down");
    // Gone, or a zombie waiting for init (which reaps late on some hosts).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let alive = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
    assert!(!alive, "QEMU {pid} still runs after down");
    assert_eq!(
        json(&env.rum(&["-o", "json", "status"]))["data"]["state"],
        "stopped"
    );

    // A failure in the middle of a resumed bring-up loses nothing.
    let failed = env.rum_env(&[("RUM_TEST_FAIL_AFTER", "booted")], &["up"]);
    assert_eq!(failed.status.code(), Some(1), "{failed}");
    assert!(failed.stderr.contains("Injected failure"), "{failed}");
    assert_no_strays(&env, "after the injected failure");
    assert_eq!(
        std::fs::metadata(&overlay).unwrap().ino(),
        inode,
        "the resumed instance's overlay survives"
    );
    assert!(data.join("ssh/id_ed25519").is_file() && data.join("seed.iso").is_file());

    env.rum(&["up", "-d"]).assert_success();
    assert_eq!(
        std::fs::metadata(&overlay).unwrap().ino(),
        inode,
        "up reuses the overlay"
    );
    let kept = env.rum(&["exec", "--", "cat", "/var/tmp/kept"]);
    assert_eq!(kept.stdout, "kept\n", "{kept}");
    let status = json(&env.rum(&["-o", "json", "status"]));
    assert_ne!(status["data"]["pid"].as_u64().unwrap(), pid, "a new QEMU");
    let milestones = &status["data"]["milestones"];
    assert_eq!(
        milestones["overlay_created"]["attempts"], 1,
        "the overlay was never made again"
    );
    assert_eq!(
        milestones["seed_built"]["attempts"], 1,
        "an unchanged seed is not rebuilt"
    );

    // The project directory deleted: `--instance ID` still reaches the VM
    // (from the copy of rum.toml rum keeps), and destroys it completely.
    let id = data.file_name().unwrap().to_str().unwrap().to_owned();
    std::fs::remove_dir_all(&env.project).unwrap();
    let by_id = |args: &[&str]| {
        let mut all = vec!["--instance", id.as_str()];
        all.extend_from_slice(args);
        env.rum_command()
            .current_dir(&env.root)
            .args(&all)
            .output()
            .unwrap()
    };
    let status = by_id(&["-o", "json", "status"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&status.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["data"]["state"], "running", "{status}");
    let kept = by_id(&["exec", "--", "cat", "/var/tmp/kept"]);
    assert_eq!(String::from_utf8_lossy(&kept.stdout), "kept\n");
    let up = by_id(&["up"]);
    assert_eq!(up.status.code(), Some(2), "up needs the project");
    let unknown = env
        .rum_command()
        .current_dir(&env.root)
        .args(["--instance", "nope-01234567", "status"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains(&format!("there are: {id}")),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let destroyed = by_id(&["destroy", "-f"]);
    assert!(
        destroyed.status.success(),
        "{}",
        String::from_utf8_lossy(&destroyed.stderr)
    );
    assert_no_strays(&env, "after destroy");
    assert!(
        env.instance_dir().is_none(),
        "destroy leaves no file of the instance"
    );
    assert!(env.tools.image.is_file(), "the base image is never touched");
}

#[test]
fn uefi_vm_boots_through_ovmf() {
    let Some(env) = support::e2e() else { return };
    env.write_rum_toml("[advanced]\nfirmware = \"uefi\"\nautologin = true\n");
    // `rum up` on a terminal stays in the foreground, waiting for one key.
    let mut cmd = env.rum_command();
    cmd.arg("up");
    let mut up = env.spawn_on_pty(&mut cmd);
    assert!(
        up.wait_for("r retries provisioning", Duration::from_secs(600)),
        "{}",
        up.output()
    );
    let efi = env.rum(&["exec", "--", "test", "-d", "/sys/firmware/efi"]);
    efi.assert_success();
    assert_eq!(
        json(&env.rum(&["-o", "json", "status"]))["data"]["runtime"]["firmware"],
        "uefi"
    );
    // With autologin the serial console is a shell of the configured user.
    let mut console = attach_console(&env);
    console.type_keys(b"echo CONSOLE-$((6*7)) $(id -un)\r");
    assert!(
        console.wait_for("CONSOLE-42 rum", Duration::from_secs(120)),
        "{}",
        console.output()
    );
    detach_console(&env, console);
    // The foreground keys: c shows the console, r retries, Ctrl+C stops.
    up.type_keys(b"c");
    assert!(
        up.wait_for("The console's last lines", Duration::from_secs(10)),
        "{}",
        up.output()
    );
    up.type_keys(b"r");
    assert!(
        up.wait_for("Provisioned after the rollback", Duration::from_secs(300)),
        "{}",
        up.output()
    );
    assert!(
        up.output()
            .contains("Restoring the `pre-provision` snapshot")
    );
    up.type_keys(&[0x03]);
    let stopped = env
        .procs
        .wait_timeout(up.pid, Duration::from_secs(200))
        .expect("Ctrl+C stops rum up");
    assert!(stopped.success(), "{}", up.output());
    assert!(up.is_cooked(), "the terminal modes are restored");
    assert_eq!(
        json(&env.rum(&["-o", "json", "status"]))["data"]["state"],
        "stopped"
    );
    let data = env.instance_dir().unwrap();
    assert!(
        data.join("nvram.fd").is_file(),
        "the VM has its own UEFI variable store"
    );
    env.rum(&["destroy", "-f"]).assert_success();
    assert_no_strays(&env, "after destroy");
}

/// `rum console` on a pseudo-terminal, once it says how to detach.
fn attach_console(env: &E2e) -> support::Pty {
    let mut cmd = env.rum_command();
    cmd.arg("console");
    let console = env.spawn_on_pty(&mut cmd);
    assert!(
        console.wait_for("Ctrl-] detaches", Duration::from_secs(30)),
        "{}",
        console.output()
    );
    console
}

fn detach_console(env: &E2e, mut console: support::Pty) {
    console.type_keys(&[0x1d]);
    let status = env
        .procs
        .wait_timeout(console.pid, Duration::from_secs(10))
        .expect("Ctrl-] detaches");
    assert!(status.success(), "{}", console.output());
    assert!(
        console.output().contains("Detached"),
        "{}",
        console.output()
    );
    assert!(console.is_cooked(), "the terminal modes are restored");
}

/// Each bring-up step fails on purpose in turn: a fresh instance leaves
/// nothing behind, and no process survives.
#[test]
fn injected_failures_leave_nothing_behind() {
    let Some(env) = support::e2e() else { return };
    let share = env.dir("share");
    env.write_rum_toml(&format!(
        "[drives.data]\nsize = \"1G\"\n\n[[mounts]]\nsource = \"{}\"\ntarget = \"/mnt/share\"\n",
        share.display()
    ));
    for step in [
        "image_ready",
        "overlay_created",
        "drives_created",
        "seed_built",
        "booted",
    ] {
        let run = env.rum_env(&[("RUM_TEST_FAIL_AFTER", step)], &["up"]);
        assert_eq!(run.status.code(), Some(1), "{step}: {run}");
        assert!(
            run.stderr
                .contains(&format!("Injected failure after `{step}`")),
            "{step}: {run}"
        );
        assert_no_strays(&env, step);
        assert!(
            env.instance_dir().is_none(),
            "{step}: a fresh instance must leave no files"
        );
        let runtime = std::fs::read_dir(env.xdg.runtime.join("rum"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(runtime, 0, "{step}: runtime files left behind");
    }
}

#[test]
fn missing_binaries_are_clear_errors() {
    let Some(env) = support::e2e() else { return };
    let share = env.dir("share");
    env.write_rum_toml(&format!(
        "[[mounts]]\nsource = \"{}\"\ntarget = \"/mnt/share\"\n",
        share.display()
    ));
    let run = env.rum_env(&[("RUM_VIRTIOFSD", "/nonexistent/virtiofsd")], &["up"]);
    assert_eq!(run.status.code(), Some(1), "{run}");
    assert!(
        run.stderr
            .contains("RUM_VIRTIOFSD names /nonexistent/virtiofsd"),
        "{run}"
    );
    assert!(env.instance_dir().is_none());

    env.write_rum_toml("[advanced]\nqemu = \"/bin/false\"\n");
    let run = env.rum(&["up"]);
    assert_eq!(run.status.code(), Some(1), "{run}");
    assert!(
        run.stderr
            .contains("QEMU (/bin/false) is not installed or cannot run"),
        "{run}"
    );
    assert!(env.instance_dir().is_none());
    assert_no_strays(&env, "after the failures");
}

#[test]
fn a_taken_host_port_fails_before_qemu_starts() {
    let Some(env) = support::e2e() else { return };
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    env.write_rum_toml(&format!("[[ports]]\nhost = {port}\nguest = 80\n"));
    let run = env.rum(&["up"]);
    assert_eq!(run.status.code(), Some(1), "{run}");
    assert!(
        run.stderr
            .contains(&format!("Host port {port} on 127.0.0.1 is already in use")),
        "{run}"
    );
    assert!(
        run.stderr.contains(&format!("[[ports]] host = {port}")),
        "{run}"
    );
    assert_no_strays(&env, "after the port clash");
    assert!(
        env.instance_dir().is_none(),
        "nothing is left of the new instance"
    );
}
