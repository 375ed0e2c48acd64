//! The real agent on random well-framed requests: malformed headers, and
//! calls of every kind with hostile fields (env with `=` and NUL, unknown
//! users and directories, wrong sizes and checksums, out-of-range script
//! ranges, input for calls that do not exist). Every call gets its terminal
//! event, and the agent answers a ping after each batch. Calls are kept
//! harmless for the host: commands are `sh -c "exit N"`, files stay in the
//! test's directory, and the clock is left alone (`session.rs` sets it).

mod common;

use common::Agent;
use common::raw::{Raw, request};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rum_agent::protocol::frame;
use rum_agent::protocol::{
    Command, ExecRequest, ProvisionRequest, PullRequest, PushRequest, Request, ReseedRequest,
    RunOn, Script,
};
use std::collections::BTreeSet;
use std::time::Duration;

/// What a batch sends: a request and what follows it on the wire.
#[derive(Debug, Clone)]
enum Send {
    /// A header that is not a request (its id expects a bad-request error).
    Malformed(serde_json::Value),
    /// A call, its input frames, and whether it ends with Eof or Cancel.
    Call(Request, Vec<Vec<u8>>, bool),
    /// Input or a cancel for a call that does not exist.
    Stray(Request, Vec<u8>),
}

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("=".to_owned()),
        Just("a=b".to_owned()),
        Just("\0".to_owned()),
        Just("..".to_owned()),
        Just("/nonexistent/dir".to_owned()),
        Just("relative".to_owned()),
        Just("4294967295".to_owned()),
        Just("65534".to_owned()),
        Just("root".to_owned()),
        Just("no-such-user".to_owned()),
        "[ -~]{0,16}",
        any::<String>(),
    ]
}

/// A file name inside the test directory (no `/`, so no way out of it).
fn inside(dir: String) -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}".prop_map(String::from),
        Just("missing/deeper/file".to_owned()),
        Just("".to_owned()),
    ]
    .prop_map(move |name| format!("{dir}/{name}"))
}

fn exec() -> impl Strategy<Value = (Request, Vec<Vec<u8>>, bool)> {
    (
        0i32..300,
        any::<bool>(),
        proptest::collection::btree_map(hostile(), hostile(), 0..4),
        proptest::option::of(hostile()),
        proptest::option::of(hostile()),
        any::<bool>(),
        proptest::option::of(0u64..3000),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2000), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(code, argv, env, cwd, user, stdin, timeout_ms, input, cancel)| {
                let script = format!("exit {code}");
                let command = if argv {
                    Command::Argv(vec!["sh".into(), "-c".into(), script])
                } else {
                    Command::Shell(script)
                };
                let request = Request::Exec(ExecRequest {
                    command,
                    env,
                    cwd,
                    user,
                    stdin,
                    timeout_ms,
                });
                (request, if stdin { input } else { Vec::new() }, cancel)
            },
        )
}

fn push(dir: String) -> impl Strategy<Value = (Request, Vec<Vec<u8>>, bool)> {
    (
        inside(dir),
        any::<u32>(),
        0u64..5000,
        prop_oneof![Just("0".repeat(64)), "[0-9a-f]{0,70}", hostile()],
        proptest::option::of(hostile()),
        any::<bool>(),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..3),
        any::<bool>(),
    )
        .prop_map(
            |(path, mode, size, sha256, owner, create_dirs, input, cancel)| {
                let request = Request::Push(PushRequest {
                    path,
                    mode,
                    size,
                    sha256,
                    owner,
                    create_dirs,
                });
                (request, input, cancel)
            },
        )
}

fn provision() -> impl Strategy<Value = Request> {
    let script =
        (hostile(), 0i32..3, any::<i64>(), any::<bool>()).prop_map(|(name, code, order, boot)| {
            Script {
                name,
                content: format!("exit {code}"),
                order,
                run_on: if boot { RunOn::Boot } else { RunOn::System },
            }
        });
    (
        proptest::collection::vec(script, 0..4),
        proptest::option::of((0usize..8, 0usize..8)),
    )
        .prop_map(|(scripts, run)| {
            Request::Provision(ProvisionRequest {
                scripts,
                run: run.map(|(a, b)| a..b),
            })
        })
}

fn one(dir: String) -> impl Strategy<Value = Send> {
    let malformed = prop_oneof![
        (1u64..1_000_000, hostile())
            .prop_map(|(id, kind)| serde_json::json!({"id": id, "type": kind})),
        (1u64..1_000_000, "[a-z_]{1,10}", any::<i64>()).prop_map(
            |(id, kind, n)| serde_json::json!({"id": id, "type": "exec", "command": {kind: n}})
        ),
        (1u64..1_000_000).prop_map(|id| serde_json::json!({"id": id, "type": "push", "path": 7})),
        (1u64..1_000_000)
            .prop_map(|id| serde_json::json!({"id": id, "type": "provision", "scripts": [{}]})),
        (1u64..1_000_000)
            .prop_map(|id| serde_json::json!({"id": id, "type": "reseed", "seed": "x"})),
    ];
    prop_oneof![
        malformed.prop_map(Send::Malformed),
        exec().prop_map(|(r, i, c)| Send::Call(r, i, c)),
        push(dir.clone()).prop_map(|(r, i, c)| Send::Call(r, i, c)),
        inside(dir).prop_map(|path| Send::Call(
            Request::Pull(PullRequest { path }),
            Vec::new(),
            false
        )),
        provision().prop_map(|r| Send::Call(r, Vec::new(), false)),
        Just(Send::Call(Request::Status, Vec::new(), false)),
        Just(Send::Call(Request::Ping, Vec::new(), false)),
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(|seed| Send::Call(
            Request::Reseed(ReseedRequest { seed }),
            Vec::new(),
            false
        )),
        (
            prop_oneof![
                Just(Request::Data),
                Just(Request::Eof),
                Just(Request::Cancel)
            ],
            proptest::collection::vec(any::<u8>(), 0..100)
        )
            .prop_map(|(r, b)| Send::Stray(r, b)),
    ]
}

/// Sends `batch` with ids from `next_id`, then a ping; waits until every
/// call and malformed request has its terminal event and the ping its pong.
async fn run_batch(raw: &mut Raw, batch: &[Send], next_id: &mut u64) -> Result<(), String> {
    let mut waiting = BTreeSet::new();
    for send in batch {
        *next_id += 1;
        let id = *next_id;
        match send {
            Send::Malformed(value) => {
                let mut value = value.clone();
                value["id"] = id.into();
                let header = serde_json::to_vec(&value).unwrap();
                raw.send(&frame::encode(&header, &[])).await.unwrap();
                waiting.insert(id);
            }
            Send::Call(req, input, cancel) => {
                raw.send(&request(id, req.clone(), &[])).await.unwrap();
                let takes_input =
                    matches!(req, Request::Push(_)) || matches!(req, Request::Exec(e) if e.stdin);
                if takes_input {
                    for chunk in input {
                        raw.send(&request(id, Request::Data, chunk)).await.unwrap();
                    }
                    let end = if *cancel {
                        Request::Cancel
                    } else {
                        Request::Eof
                    };
                    raw.send(&request(id, end, &[])).await.unwrap();
                }
                waiting.insert(id);
            }
            Send::Stray(req, body) => {
                // An id no call has: nothing answers it.
                raw.send(&request(id + 1_000_000_000, req.clone(), body))
                    .await
                    .unwrap();
            }
        }
    }
    *next_id += 1;
    let ping = *next_id;
    raw.send(&request(ping, Request::Ping, &[])).await.unwrap();
    waiting.insert(ping);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !waiting.is_empty() {
        let next = tokio::time::timeout_at(deadline, raw.next()).await;
        match next {
            Ok(Some((msg, _))) => {
                if msg.event.is_terminal() {
                    waiting.remove(&msg.id);
                }
            }
            Ok(None) => return Err("the agent closed the connection".into()),
            Err(_) => return Err(format!("no terminal event for calls {waiting:?}")),
        }
    }
    Ok(())
}

#[test]
fn random_requests_all_end_and_the_agent_keeps_answering() {
    let agent = Agent::start();
    let dir = agent.path("files");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.to_str().unwrap().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut raw = rt.block_on(Raw::connect(&agent.socket));
    rt.block_on(raw.handshake("fuzz"));
    let raw = std::cell::RefCell::new(raw);
    let next_id = std::cell::Cell::new(0u64);
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(one(dir), 1..12), |batch| {
        let mut id = next_id.get();
        let outcome = rt.block_on(run_batch(&mut raw.borrow_mut(), &batch, &mut id));
        next_id.set(id);
        prop_assert!(common::alive(agent.pid()), "the agent died");
        outcome.map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!("{} calls sent", next_id.get());
}
