//! Round-trip latency and bulk throughput of the agent protocol.
//!
//! `cargo bench -p rum-agent` runs the agent binary on the host over a Unix
//! socket. With `RUM_BENCH_SERIAL=/path/to/agent.sock` it also measures an
//! agent in a running VM through that virtio-serial socket (nothing else may
//! be connected to it), and prints both side by side. The end-to-end test
//! `tests/agent_e2e.rs` prints the same figures for a TCG guest it boots.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rum_agent::protocol::ExecRequest;
use rum_agent::{Client, ConnectOptions, Endpoint, PushOptions};

struct Figures {
    name: String,
    ping_p50: Duration,
    ping_p99: Duration,
    exec_p50: Duration,
    push_mib_s: f64,
    pull_mib_s: f64,
}

async fn measure(name: String, client: &Client, pings: usize, bytes: usize, path: &str) -> Figures {
    let mut rtts = Vec::with_capacity(pings);
    for _ in 0..pings {
        let t = Instant::now();
        client.ping().await.expect("ping");
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let mut execs = Vec::new();
    for _ in 0..(pings / 10).max(5) {
        let t = Instant::now();
        client
            .exec_output(ExecRequest::argv(["true"]))
            .await
            .expect("exec");
        execs.push(t.elapsed());
    }
    execs.sort();
    let data: Vec<u8> = (0..bytes).map(|i| (i * 31 % 253) as u8).collect();
    let t = Instant::now();
    client
        .push_bytes(&data, path, &PushOptions::default())
        .await
        .expect("push");
    let push = t.elapsed();
    let t = Instant::now();
    let (_, back) = client.pull_bytes(path).await.expect("pull");
    let pull = t.elapsed();
    assert!(back == data, "pulled data differs");
    let _ = client
        .exec_output(ExecRequest::argv(["rm", "-f", path]))
        .await;
    let mib = bytes as f64 / (1024.0 * 1024.0);
    Figures {
        name,
        ping_p50: rtts[rtts.len() / 2],
        ping_p99: rtts[rtts.len() * 99 / 100],
        exec_p50: execs[execs.len() / 2],
        push_mib_s: mib / push.as_secs_f64(),
        pull_mib_s: mib / pull.as_secs_f64(),
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: run small then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("agent.sock");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_rum-agent"))
        .arg("--listen-unix")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--no-boot-run")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rum-agent");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut results = Vec::new();
    rt.block_on(async {
        let options = ConnectOptions {
            retry: Duration::from_millis(100),
            timeout: Duration::from_secs(10),
        };
        let client = Client::connect(&Endpoint::Serial(socket.clone()), &options)
            .await
            .expect("connect to the local agent");
        let (pings, bytes) = if quick {
            (50, 4 << 20)
        } else {
            (2000, 256 << 20)
        };
        let path = dir.path().join("bulk").display().to_string();
        results.push(measure("unix socket (host)".into(), &client, pings, bytes, &path).await);

        if let Some(serial) = std::env::var_os("RUM_BENCH_SERIAL") {
            let options = ConnectOptions {
                retry: Duration::from_millis(500),
                timeout: Duration::from_secs(30),
            };
            let client = Client::connect(&Endpoint::Serial(PathBuf::from(&serial)), &options)
                .await
                .expect("connect to the guest agent");
            let (pings, bytes) = if quick {
                (20, 1 << 20)
            } else {
                (200, 16 << 20)
            };
            results.push(
                measure(
                    "virtio-serial (guest)".into(),
                    &client,
                    pings,
                    bytes,
                    "/tmp/rum-bench",
                )
                .await,
            );
        }
    });
    let _ = agent.kill();
    let _ = agent.wait();

    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>11} {:>11}",
        "channel", "ping p50", "ping p99", "exec p50", "push MiB/s", "pull MiB/s"
    );
    for f in results {
        println!(
            "{:<24} {:>10.1?} {:>10.1?} {:>10.1?} {:>11.1} {:>11.1}",
            f.name, f.ping_p50, f.ping_p99, f.exec_p50, f.push_mib_s, f.pull_mib_s
        );
    }
}
