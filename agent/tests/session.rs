//! Handshake, sessions, reconnects, set_time.

mod common;

use std::time::{Duration, SystemTime};

use common::raw::{self, Raw};
use common::{Agent, alive, eventually};
use rum_agent::protocol::{ErrorKind, Event, ExecRequest, PROTOCOL_VERSION, Request};
use rum_agent::{Client, ConnectOptions, PushOptions};

#[tokio::test]
async fn handshake_reports_version_build_and_boot_id() {
    let agent = Agent::start();
    let client = agent.client().await;
    let info = client.agent().clone();
    assert_eq!(info.version, PROTOCOL_VERSION);
    assert_eq!(info.boot_id, "boot-1");
    assert_eq!(info.build_id.len(), 16);
    assert_eq!(client.ping().await.unwrap(), info);
    let skew = client.agent_time_unix_ns() - rum_agent::client::unix_ns(SystemTime::now());
    assert!(skew.abs() < 5_000_000_000, "same clock here: {skew} ns");
}

#[tokio::test]
async fn set_time_reaches_the_clock() {
    let agent = Agent::start();
    let client = agent.client().await;
    // "Now" is the only time that is safe to set on a shared host clock.
    match client.set_time(SystemTime::now()).await {
        Ok(set) => {
            assert!(set.offset_ns().abs() < 1_000_000_000, "{set:?}");
            assert!(set.applied_unix_ns > 0);
        }
        Err(e) => {
            // Without CAP_SYS_TIME the request still got to clock_settime.
            assert_eq!(e.agent_kind(), Some(ErrorKind::PermissionDenied), "{e}");
            assert_ne!(nix::unistd::geteuid().as_raw(), 0);
        }
    }
}

#[tokio::test]
async fn requests_before_the_handshake_are_refused_and_garbage_is_skipped() {
    let agent = Agent::start();
    let mut conn = Raw::connect(&agent.socket).await;
    // Stale bytes (a half frame of an earlier session, noise), then a sync.
    let mut junk = raw::request(5, Request::Ping, &[1; 100]);
    junk.truncate(40);
    junk.extend(b"\xff\xff\xff\xffnoise");
    conn.send(&junk).await.unwrap();
    // A frame right after a sync but with no session yet.
    let mut bytes = rum_agent::protocol::frame::SYNC.to_vec();
    bytes.extend(raw::request(9, Request::Ping, &[]));
    conn.send(&bytes).await.unwrap();
    let (msg, _) = conn.next().await.unwrap();
    assert_eq!(msg.id, 9);
    assert!(matches!(msg.event, Event::Error(e) if e.kind == ErrorKind::NoSession));
    conn.handshake("s1").await;
    conn.send(&raw::request(10, Request::Ping, &[]))
        .await
        .unwrap();
    let (msg, _) = conn.next().await.unwrap();
    assert!(matches!(msg.event, Event::Pong(_)));
    // An undecodable request gets an error, not a dead session.
    conn.send(&rum_agent::protocol::frame::encode(
        br#"{"id":11,"type":"warp"}"#,
        &[],
    ))
    .await
    .unwrap();
    let (msg, _) = conn.next().await.unwrap();
    assert_eq!(msg.id, 11);
    assert!(matches!(msg.event, Event::Error(e) if e.kind == ErrorKind::BadRequest));
}

#[tokio::test]
async fn a_new_handshake_resets_the_session() {
    let agent = Agent::start();
    let mut conn = Raw::connect(&agent.socket).await;
    conn.handshake("first").await;
    conn.send(&raw::request(
        1,
        Request::Exec(ExecRequest::argv(["sleep", "300"])),
        &[],
    ))
    .await
    .unwrap();
    let (msg, _) = conn.next().await.unwrap();
    let Event::Started { pid } = msg.event else {
        panic!("{msg:?}")
    };
    assert!(alive(pid));

    // The same session id again only repeats the answer.
    conn.handshake("first").await;
    assert!(alive(pid));

    // A new one (a restored snapshot, a reconnected host) ends the old session's calls.
    conn.handshake("second").await;
    assert!(eventually(Duration::from_secs(3), || !alive(pid)).await);
    conn.send(&raw::request(2, Request::Ping, &[]))
        .await
        .unwrap();
    let (msg, _) = conn.next().await.unwrap();
    // Nothing of the old session (its `exited`) comes through.
    assert_eq!(msg.id, 2, "{msg:?}");
    assert!(matches!(msg.event, Event::Pong(_)));
}

#[tokio::test]
async fn the_handshake_is_retried_until_the_agent_answers() {
    // Nothing listens at first; the agent appears later (a VM still booting).
    let mut agent = Agent::start();
    agent.stop();
    let endpoint = agent.endpoint();
    let connect = tokio::spawn(async move {
        Client::connect(
            &endpoint,
            &ConnectOptions {
                retry: Duration::from_millis(100),
                timeout: Duration::from_secs(20),
            },
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    agent.restart();
    let client = connect.await.unwrap().unwrap();
    client.ping().await.unwrap();
    drop(agent);
    // A dead agent is an error, not a hang.
    let err = tokio::time::timeout(Duration::from_secs(5), client.ping())
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(err, rum_agent::Error::Closed(_)), "{err}");
}

/// Reads up to `n` messages, for at most a second.
async fn read_some(conn: &mut Raw, n: u64) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        for _ in 0..n {
            if conn.next().await.is_none() {
                break;
            }
        }
    })
    .await;
}

/// Small xorshift: reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_100_disconnects_mid_stream() {
    let agent = Agent::start();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    // In the command lines of what this run starts (sleep adds its arguments up).
    let marker = format!("0.{}", seed % 1_000_000_000);
    let big = agent.path("big");
    std::fs::write(&big, vec![7u8; 8 * 1024 * 1024]).unwrap();

    for round in 0..100 {
        let mut conn = Raw::connect(&agent.socket).await;
        let session = format!("round-{round}");
        match rng.below(5) {
            // Cut anywhere in a request stream: hello, exec with stdin, push data.
            0 => {
                let mut bytes = raw::hello(&session);
                let mut exec = ExecRequest::argv(["cat"]);
                exec.stdin = true;
                bytes.extend(raw::request(1, Request::Exec(exec), &[]));
                bytes.extend(raw::request(1, Request::Data, &[b'a'; 5000]));
                bytes.extend(raw::request(
                    2,
                    Request::Push(rum_agent::protocol::PushRequest {
                        path: agent.path(&format!("push-{round}")).display().to_string(),
                        mode: 0o644,
                        size: 1 << 20,
                        sha256: "00".into(),
                        owner: None,
                        create_dirs: false,
                    }),
                    &[],
                ));
                bytes.extend(raw::request(2, Request::Data, &vec![b'b'; 300_000]));
                let cut = rng.below(bytes.len() as u64) as usize;
                let _ = conn.send(&bytes[..cut]).await;
            }
            // Mid-output of a chatty process.
            1 => {
                conn.handshake(&session).await;
                let cmd = ExecRequest::shell(format!("yes {marker} | head -c 20000000"));
                conn.send(&raw::request(1, Request::Exec(cmd), &[]))
                    .await
                    .unwrap();
                read_some(&mut conn, rng.below(50)).await;
            }
            // Mid-pull of a large file.
            2 => {
                conn.handshake(&session).await;
                let pull = rum_agent::protocol::PullRequest {
                    path: big.display().to_string(),
                };
                conn.send(&raw::request(1, Request::Pull(pull), &[]))
                    .await
                    .unwrap();
                read_some(&mut conn, rng.below(20)).await;
            }
            // With a long-running process the session's end must kill.
            3 => {
                conn.handshake(&session).await;
                let cmd = ExecRequest::argv(["sleep", "1000", &marker]);
                conn.send(&raw::request(1, Request::Exec(cmd), &[]))
                    .await
                    .unwrap();
                read_some(&mut conn, rng.below(2)).await;
            }
            // Mid-provision with output.
            _ => {
                conn.handshake(&session).await;
                let scripts = vec![rum_agent::protocol::Script {
                    name: "chatty".into(),
                    content: format!(
                        "for i in $(seq 1 2000); do echo line $i; done; sleep 1000 {marker}"
                    ),
                    order: 0,
                    run_on: rum_agent::protocol::RunOn::Boot,
                }];
                let req = Request::Provision(rum_agent::protocol::ProvisionRequest {
                    scripts,
                    run: None,
                });
                conn.send(&raw::request(1, req, &[])).await.unwrap();
                read_some(&mut conn, rng.below(30)).await;
            }
        }
        if rng.below(3) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
        }
        drop(conn);
    }

    assert!(alive(agent.pid()), "the agent survived");
    // A clean session works: every kind of call.
    let client = agent.client().await;
    client.ping().await.unwrap();
    let out = client
        .exec_output(ExecRequest::shell("echo fine"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"fine\n");
    let target = agent.path("after");
    client
        .push_bytes(b"after", target.to_str().unwrap(), &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(
        client.pull_bytes(target.to_str().unwrap()).await.unwrap().1,
        b"after"
    );
    assert!(client.status().await.is_ok());

    // Nothing the dropped sessions started is still running.
    let leftovers = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| alive(pid))
            .filter(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd);
                cmd.contains(&marker)
            })
            .count()
    };
    assert!(
        eventually(Duration::from_secs(10), || leftovers() == 0).await,
        "{} processes of dropped sessions still run",
        leftovers()
    );
    // And no file descriptors leaked.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
        .unwrap()
        .count();
    assert!(fds < 30, "{fds} open fds");
}
