//! The guest agent end to end: the static binary embedded in rum, delivered
//! through a genisoimage NoCloud seed, started by systemd in the test guest
//! under TCG, reached over virtio-serial. One boot checks the handshake,
//! ping, exec, provisioning, host disconnects and reconnects, and measures
//! round trips and throughput beside the same binary over a Unix socket on
//! the host.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rum_agent::protocol::{ExecRequest, RunOn, Script};
use rum_agent::{Client, ConnectOptions, Endpoint, ExecEvent, PushOptions};
use support::Firmware;

/// Under TCG runcmd came after 90 s alone and 265 s beside other VMs and builds.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn agent_over_virtio_serial() {
    let Some(env) = support::e2e() else { return };
    let work = env.dir("agent-seed");
    let seed = seed_with_agent(&work);
    let socket = env.root.join("agent.sock");
    let guest = env
        .guest("agent", Firmware::Bios)
        .seed(&seed)
        .args(serial_port_args(&socket))
        .boot();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        // The host connects before the guest even booted: its hellos wait in
        // the socket until the agent opens the port, and are resent meanwhile.
        let endpoint = Endpoint::Serial(socket.clone());
        let options = ConnectOptions {
            retry: Duration::from_secs(1),
            timeout: BOOT_TIMEOUT,
        };
        let connecting = Instant::now();
        let client = match Client::connect(&endpoint, &options).await {
            Ok(c) => c,
            Err(e) => {
                guest.assert_running();
                panic!(
                    "no agent handshake: {e}\nserial console:\n{}",
                    guest.serial()
                );
            }
        };
        eprintln!(
            "[e2e] agent: handshake {:.1?} after QEMU started ({:.1?} of retrying)",
            guest.started.elapsed(),
            connecting.elapsed()
        );
        let info = client.agent().clone();
        assert_eq!(
            info.build_id,
            rum::agent_binary::build_id(),
            "the embedded agent runs"
        );

        // ping and exec over virtio-serial.
        client.ping().await.expect("ping");
        let out = client
            .exec_output(ExecRequest::shell(
                "cat /proc/sys/kernel/random/boot_id; id -u; uname -m",
            ))
            .await
            .expect("exec");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [info.boot_id.as_str(), "0", "x86_64"]
        );
        let out = client
            .exec_output(ExecRequest::shell("exit 4"))
            .await
            .unwrap();
        assert_eq!(out.status.code, Some(4));

        // Provisioning in the guest, with the real /var/lib/rum.
        let scripts = vec![
            script(
                "system",
                100,
                RunOn::System,
                "echo system-ran > /root/system",
            ),
            script("boot", 200, RunOn::Boot, "echo boot-ran; uptime"),
        ];
        let result = client.provision(scripts, |_| {}).await.expect("provision");
        assert!(result.ok, "{result:?}");
        let status = client.status().await.unwrap();
        assert!(status.system_provisioned);
        assert_eq!(status.state_dir, "/var/lib/rum");

        // The host goes away at any moment, mid-stream too; the next session works.
        drop(client);
        for round in 0..3 {
            let client = Client::connect(&endpoint, &quick())
                .await
                .expect("reconnect");
            if round == 1 {
                let mut exec = client
                    .exec(ExecRequest::shell("yes reconnect | head -c 5000000"))
                    .await
                    .unwrap();
                for _ in 0..3 {
                    exec.next().await.unwrap();
                }
                // Dropped mid-output.
            } else {
                client.ping().await.expect("ping after a reconnect");
            }
            drop(client);
            if round == 0 {
                // Time for the guest to notice the disconnect, if it does.
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        let started = Instant::now();
        let client = Client::connect(&endpoint, &quick())
            .await
            .expect("reconnect");
        let reconnect = started.elapsed();
        let out = client
            .exec_output(ExecRequest::argv(["echo", "still here"]))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"still here\n");
        eprintln!("[e2e] agent: reconnect + handshake in {reconnect:.1?}");

        // What the agent saw of the disconnects (EOF/POLLHUP, or only the next hello).
        let log = client
            .exec_output(ExecRequest::shell(
                "journalctl -u rum-agent -o cat --no-pager | tail -n 30",
            ))
            .await
            .unwrap();
        let journal = String::from_utf8_lossy(&log.stdout);
        eprintln!("[e2e] agent journal:\n{journal}");
        eprintln!(
            "[e2e] agent: the guest {} end of stream when the host disconnected",
            if journal.contains("the host disconnected") {
                "saw"
            } else {
                "never saw"
            }
        );
        // The exec dropped mid-output ended with its session.
        assert!(journal.contains("(1 calls cancelled)"), "{journal}");

        let serial = measure("virtio-serial (TCG guest)", &client, 8 << 20, 30).await;
        drop(client);

        // The same binary on the host over a Unix socket, for comparison.
        let host_agent = HostAgent::start(&env.dir("host-agent"));
        let client = Client::connect(&host_agent.endpoint(), &quick())
            .await
            .unwrap();
        let local = measure("unix socket (host)", &client, 64 << 20, 500).await;
        drop(client);
        eprintln!(
            "[bench] {:<28} {:>12} {:>12} {:>12} {:>12}",
            "channel", "ping", "exec true", "push MiB/s", "pull MiB/s"
        );
        for m in [serial, local] {
            eprintln!(
                "[bench] {:<28} {:>12.2?} {:>12.2?} {:>12.1} {:>12.1}",
                m.name, m.ping, m.exec, m.push_mib_s, m.pull_mib_s
            );
        }
    });
    drop(guest);
}

fn quick() -> ConnectOptions {
    ConnectOptions {
        retry: Duration::from_millis(500),
        timeout: Duration::from_secs(60),
    }
}

fn script(name: &str, order: i64, run_on: RunOn, content: &str) -> Script {
    Script {
        name: name.into(),
        content: content.into(),
        order,
        run_on,
    }
}

struct Figures {
    name: &'static str,
    ping: Duration,
    exec: Duration,
    push_mib_s: f64,
    pull_mib_s: f64,
}

/// Median ping round trip, median `true` exec, push and pull throughput.
async fn measure(name: &'static str, client: &Client, bytes: usize, pings: usize) -> Figures {
    let mut rtts = Vec::new();
    for _ in 0..pings {
        let t = Instant::now();
        client.ping().await.unwrap();
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let mut execs = Vec::new();
    for _ in 0..(pings / 5).max(5) {
        let t = Instant::now();
        let mut exec = client.exec(ExecRequest::argv(["true"])).await.unwrap();
        while let Some(ev) = exec.next().await.unwrap() {
            if matches!(ev, ExecEvent::Exited(_)) {
                break;
            }
        }
        execs.push(t.elapsed());
    }
    execs.sort();
    let data: Vec<u8> = (0..bytes).map(|i| (i * 7 % 251) as u8).collect();
    let t = Instant::now();
    client
        .push_bytes(&data, "/tmp/rum-bench", &PushOptions::default())
        .await
        .unwrap();
    let push = t.elapsed();
    let t = Instant::now();
    let (_, back) = client.pull_bytes("/tmp/rum-bench").await.unwrap();
    let pull = t.elapsed();
    assert!(back == data);
    let mib = bytes as f64 / (1024.0 * 1024.0);
    Figures {
        name,
        ping: rtts[rtts.len() / 2],
        exec: execs[execs.len() / 2],
        push_mib_s: mib / push.as_secs_f64(),
        pull_mib_s: mib / pull.as_secs_f64(),
    }
}

/// QEMU arguments for the agent's virtio-serial port on a Unix socket.
fn serial_port_args(socket: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!(
            "socket,id=agent0,path={},server=on,wait=off",
            socket.display()
        ),
        "-device".into(),
        "virtio-serial-pci,id=vser0".into(),
        "-device".into(),
        "virtserialport,bus=vser0.0,chardev=agent0,name=org.rum.agent.0".into(),
    ]
}

/// A NoCloud seed carrying the agent binary; runcmd installs it as a systemd service.
fn seed_with_agent(dir: &Path) -> PathBuf {
    fs::write(dir.join("rum-agent"), rum::agent_binary::BYTES).expect("write the agent");
    let token = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let user_data = "#cloud-config
write_files:
  - path: /etc/systemd/system/rum-agent.service
    content: |
      [Unit]
      Description=rum guest agent
      [Service]
      ExecStart=/usr/local/bin/rum-agent
      Restart=always
      RestartSec=1
      [Install]
      WantedBy=multi-user.target
runcmd:
  - [sh, -c, 'mkdir -p /run/rum-seed && mount -o ro \"$(blkid -L cidata || echo /dev/sr0)\" /run/rum-seed && install -m 0755 /run/rum-seed/rum-agent /usr/local/bin/rum-agent && umount /run/rum-seed']
  - [systemctl, daemon-reload]
  - [systemctl, enable, --now, rum-agent.service]
  - [sh, -c, 'echo \"rum-agent-installed-$((1 + 1))\" > /dev/ttyS0']
";
    fs::write(dir.join("user-data"), user_data).expect("write user-data");
    fs::write(
        dir.join("meta-data"),
        format!("instance-id: agent-e2e-{token}\nlocal-hostname: agent-e2e\n"),
    )
    .expect("write meta-data");
    let iso = dir.join("seed.iso");
    let out = Command::new("genisoimage")
        .current_dir(dir)
        .args(["-quiet", "-output"])
        .arg(&iso)
        .args([
            "-volid",
            "cidata",
            "-joliet",
            "-rock",
            "user-data",
            "meta-data",
            "rum-agent",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("run genisoimage ({e}); install it with scripts/install-prereqs")
        });
    assert!(
        out.status.success(),
        "genisoimage failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso
}

/// The embedded agent run on the host over a Unix socket, with a temp state root.
struct HostAgent {
    child: std::process::Child,
    socket: PathBuf,
}

impl HostAgent {
    fn start(dir: &Path) -> HostAgent {
        let binary = dir.join("rum-agent");
        fs::write(&binary, rum::agent_binary::BYTES).unwrap();
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.join("agent.sock");
        let child = Command::new(&binary)
            .arg("--listen-unix")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--no-boot-run")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the embedded agent on the host");
        HostAgent { child, socket }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Serial(self.socket.clone())
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
