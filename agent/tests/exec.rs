//! `exec` against the real agent binary.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, alive, eventually};
use rum_agent::protocol::{ErrorKind, ExecRequest};
use rum_agent::{Error, ExecEvent};

#[tokio::test]
async fn streams_output_as_it_comes_and_reports_exit_codes() {
    let agent = Agent::start();
    let client = agent.client().await;

    let mut exec = client
        .exec(ExecRequest::shell(
            "echo one; echo err >&2; sleep 0.5; echo two; exit 3",
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let mut first_stdout_at = None;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let status = loop {
        match exec.next().await.unwrap().unwrap() {
            ExecEvent::Stdout(d) => {
                first_stdout_at.get_or_insert(started.elapsed());
                stdout.extend(d);
            }
            ExecEvent::Stderr(d) => stderr.extend(d),
            ExecEvent::Exited(status) => break status,
        }
    };
    assert_eq!(String::from_utf8_lossy(&stdout), "one\ntwo\n");
    assert_eq!(String::from_utf8_lossy(&stderr), "err\n");
    assert_eq!(status.code, Some(3));
    assert!(!status.success());
    // "one" came before the sleep ended: streamed, not collected.
    assert!(first_stdout_at.unwrap() < Duration::from_millis(400));
    assert!(exec.next().await.unwrap().is_none());

    let ok = client
        .exec_output(ExecRequest::argv(["true"]))
        .await
        .unwrap();
    assert!(ok.status.success());
}

#[tokio::test]
async fn reports_signals_env_cwd_and_user() {
    let agent = Agent::start();
    let client = agent.client().await;

    let out = client
        .exec_output(ExecRequest::shell("kill -TERM $$"))
        .await
        .unwrap();
    assert_eq!((out.status.code, out.status.signal), (None, Some(15)));

    let mut req = ExecRequest::argv(["sh", "-c", "echo $GREETING; pwd"]);
    req.env.insert("GREETING".into(), "hello".into());
    req.cwd = Some("/tmp".into());
    let out = client.exec_output(req).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n/tmp\n");

    // Privileges are dropped for `user` (the tests run as root).
    if nix::unistd::geteuid().is_root() {
        let mut req = ExecRequest::shell("id -u; id -g; echo $USER");
        req.user = Some("nobody".into());
        let out = client.exec_output(req).await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("65534\n"), "{text}");
        assert!(text.ends_with("nobody\n"), "{text}");
    }

    let err = client
        .exec(ExecRequest::argv(["/nonexistent/program"]))
        .await
        .err()
        .expect("no such program");
    assert_eq!(err.agent_kind(), Some(ErrorKind::NotFound), "{err}");
    let mut req = ExecRequest::shell("true");
    req.user = Some("no-such-user-here".into());
    assert!(matches!(client.exec(req).await, Err(Error::Agent { .. })));
}

#[tokio::test]
async fn feeds_stdin() {
    let agent = Agent::start();
    let client = agent.client().await;
    let mut req = ExecRequest::argv(["sh", "-c", "wc -c; cat >/dev/null"]);
    req.stdin = true;
    let exec = client.exec(req).await.unwrap();
    let data = vec![b'x'; 3 * 1024 * 1024 + 17];
    let writer = {
        let data = data.clone();
        async move {
            exec.write_stdin(&data).await.unwrap();
            exec.close_stdin().await.unwrap();
            exec
        }
    };
    let exec = writer.await;
    let out = exec.output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        data.len().to_string()
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let agent = Agent::start();
    let client = agent.client().await;
    let marker = agent.path("grandchild.pid");
    let mut req = ExecRequest::shell(format!("sleep 60 & echo $! > {}; wait", marker.display()));
    req.timeout_ms = Some(300);
    let started = Instant::now();
    let out = client.exec_output(req).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(out.status.timed_out);
    assert_eq!(out.status.signal, Some(9));
    let grandchild: u32 = common::read(&marker).trim().parse().unwrap();
    assert!(eventually(Duration::from_secs(2), || !alive(grandchild)).await);
}

#[tokio::test]
async fn cancel_and_drop_kill_the_process() {
    let agent = Agent::start();
    let client = agent.client().await;

    let exec = client
        .exec(ExecRequest::argv(["sleep", "60"]))
        .await
        .unwrap();
    let pid = exec.pid();
    assert!(alive(pid));
    exec.cancel().await.unwrap();
    let out = exec.output().await.unwrap();
    assert!(out.status.cancelled);
    assert_eq!(out.status.signal, Some(9));
    assert!(!alive(pid));

    // Dropping the handle cancels too.
    let exec = client
        .exec(ExecRequest::argv(["sleep", "60"]))
        .await
        .unwrap();
    let pid = exec.pid();
    drop(exec);
    assert!(eventually(Duration::from_secs(3), || !alive(pid)).await);

    // The session still works.
    client.ping().await.unwrap();
}

#[tokio::test]
async fn many_calls_run_concurrently_on_one_connection() {
    let agent = Agent::start();
    let client = agent.client().await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let out = client
                .exec_output(ExecRequest::shell(format!("sleep 0.5; echo {i}")))
                .await
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{i}\n"));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Sequentially that would be 10 s.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
