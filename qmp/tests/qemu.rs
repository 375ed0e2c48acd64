//! rum-qmp against a real QEMU: handshake, typed commands, events, the
//! snapshot jobs, and what happens when QEMU dies or never answers.

use rum_qmp::{Qmp, QmpError, qmp};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A QEMU with no guest, a QMP socket and one qcow2 node (`disk0`); killed on drop.
struct Qemu {
    child: Child,
    dir: tempfile::TempDir,
}

impl Qemu {
    fn start() -> Option<Self> {
        let qemu = std::env::var("RUM_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
        let present = Command::new(&qemu)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !present {
            assert!(
                std::env::var("RUM_E2E").as_deref() != Ok("1"),
                "{qemu} is missing: run scripts/install-prereqs"
            );
            eprintln!("skipped: {qemu} is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.qcow2");
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("64M")
            .status()
            .unwrap();
        assert!(status.success());
        let socket = dir.path().join("qmp.sock");
        let child = Command::new(&qemu)
            .args([
                "-nodefaults",
                "-machine",
                "none",
                "-display",
                "none",
                "-S",
                "-qmp",
            ])
            .arg(format!("unix:{},server=on,wait=off", socket.display()))
            .arg("-blockdev")
            .arg(format!(
                "driver=file,node-name=file0,filename={}",
                disk.display()
            ))
            .args(["-blockdev", "driver=qcow2,node-name=disk0,file=file0"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let qemu = Self { child, dir };
        // The socket's file exists from QEMU's bind, before its listen: a
        // connect in between is refused, so wait for one that is taken.
        for _ in 0..100 {
            if std::os::unix::net::UnixStream::connect(qemu.socket()).is_ok() {
                return Some(qemu);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("QEMU did not listen on its QMP socket");
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("qmp.sock")
    }

    fn disk(&self) -> PathBuf {
        self.dir.path().join("disk.qcow2")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

fn snapshots(disk: &Path) -> String {
    let out = Command::new("qemu-img")
        .args(["snapshot", "-U", "-l"])
        .arg(disk)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn handshake_commands_and_events() {
    let Some(qemu) = Qemu::start() else { return };
    let qmp = Qmp::connect(&qemu.socket(), TIMEOUT).await.unwrap();
    assert!(
        qmp.version()
            .split('.')
            .next()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 9,
        "{}",
        qmp.version()
    );
    let status = qmp.execute(qmp::query_status {}).await.unwrap();
    assert_eq!(status.status, qmp::RunState::prelaunch);

    let mut events = qmp.events();
    qmp.execute(qmp::cont {}).await.unwrap();
    let event = tokio::time::timeout(TIMEOUT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(event, qmp::Event::RESUME { .. }), "{event:?}");

    let err = qmp
        .execute(qmp::job_dismiss {
            id: "no-such-job".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QmpError::Command { command: "job-dismiss", message } if message.contains("not found")),
        "{err}"
    );
}

#[tokio::test]
async fn snapshot_jobs_run_to_completion_and_report_errors() {
    let Some(qemu) = Qemu::start() else { return };
    let qmp = Qmp::connect(&qemu.socket(), TIMEOUT).await.unwrap();
    let devices = vec!["disk0".to_owned()];
    qmp.snapshot_save("first", "disk0", &devices, TIMEOUT)
        .await
        .unwrap();
    qmp.snapshot_load("first", "disk0", &devices, TIMEOUT)
        .await
        .unwrap();
    let err = qmp
        .snapshot_load("missing", "disk0", &devices, TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QmpError::Job { id, message } if id == "rum-load-missing" && message.contains("missing")),
        "{err}"
    );
    assert!(
        qmp.execute(qmp::query_jobs {}).await.unwrap().is_empty(),
        "concluded jobs are dismissed"
    );
    qmp.snapshot_save("second", "disk0", &devices, TIMEOUT)
        .await
        .unwrap();
    qmp.snapshot_delete("first", &devices, TIMEOUT)
        .await
        .unwrap();
}

#[tokio::test]
async fn snapshots_land_in_the_qcow2_file() {
    let Some(mut qemu) = Qemu::start() else {
        return;
    };
    let qmp = Qmp::connect(&qemu.socket(), TIMEOUT).await.unwrap();
    let devices = vec!["disk0".to_owned()];
    qmp.snapshot_save("kept", "disk0", &devices, TIMEOUT)
        .await
        .unwrap();
    qmp.snapshot_save("dropped", "disk0", &devices, TIMEOUT)
        .await
        .unwrap();
    qmp.snapshot_delete("dropped", &devices, TIMEOUT)
        .await
        .unwrap();
    let _ = qmp.execute(qmp::quit {}).await;
    let _ = qemu.child.wait();
    let listing = snapshots(&qemu.disk());
    assert!(listing.contains("kept"), "{listing}");
    assert!(!listing.contains("dropped"), "{listing}");
    qemu.kill();
}

#[tokio::test]
async fn a_dead_qemu_is_an_error_not_a_hang() {
    let Some(mut qemu) = Qemu::start() else {
        return;
    };
    let qmp = Qmp::connect(&qemu.socket(), TIMEOUT).await.unwrap();
    qemu.kill();
    let started = std::time::Instant::now();
    let err = qmp.execute(qmp::query_status {}).await.unwrap_err();
    assert!(matches!(err, QmpError::Disconnected { .. }), "{err}");
    assert!(
        started.elapsed() < TIMEOUT,
        "the error came from the closed socket, not the timeout"
    );
    let err = qmp.execute(qmp::query_status {}).await.unwrap_err();
    assert!(matches!(err, QmpError::Disconnected { .. }), "{err}");
}

#[tokio::test]
async fn a_silent_peer_times_out_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.map(|(stream, _)| stream) });
    let err = Qmp::connect(&path, Duration::from_millis(300))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, QmpError::HandshakeTimeout { .. }), "{err}");
    drop(accept);
    let err = Qmp::connect(&dir.path().join("absent.sock"), TIMEOUT)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, QmpError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn a_timed_out_command_closes_the_connection() {
    let Some(qemu) = Qemu::start() else { return };
    let qmp = Qmp::connect(&qemu.socket(), TIMEOUT).await.unwrap();
    let pid = qemu.child.id().to_string();
    let signal = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    signal("-STOP");
    let err = qmp
        .execute_within(qmp::query_status {}, Duration::from_millis(300))
        .await
        .unwrap_err();
    signal("-CONT");
    assert!(
        matches!(
            err,
            QmpError::Timeout {
                command: "query-status",
                ..
            }
        ),
        "{err}"
    );
    let err = qmp.execute(qmp::query_status {}).await.unwrap_err();
    assert!(
        matches!(&err, QmpError::Disconnected { reason } if reason.contains("timed out")),
        "{err}"
    );
}

/// `cont` on a running VM is no error: the load path sends it unasked.
#[tokio::test]
async fn cont_on_a_running_vm_is_no_error() {
    let Some(qemu) = Qemu::start() else { return };
    let qmp = Qmp::connect(&qemu.socket(), TIMEOUT).await.unwrap();
    qmp.execute(qmp::cont {}).await.unwrap();
    qmp.execute(qmp::cont {}).await.unwrap();
    assert!(qmp.execute(qmp::query_status {}).await.unwrap().running);
}
