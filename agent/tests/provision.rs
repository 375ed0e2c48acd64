//! Provisioning against the real agent binary, with a temp state root.

mod common;

use std::time::Duration;

use common::{Agent, eventually, read};
use rum_agent::ProvisionEvent;
use rum_agent::protocol::{OutputStream, RunOn, Script, ScriptState, Trigger};

fn script(name: &str, order: i64, run_on: RunOn, content: &str) -> Script {
    Script {
        name: name.into(),
        content: content.into(),
        order,
        run_on,
    }
}

/// Scripts that append their name to `trace`.
fn traced(agent: &Agent, spec: &[(&str, i64, RunOn, &str)]) -> Vec<Script> {
    let trace = agent.path("trace");
    spec.iter()
        .map(|(name, order, run_on, extra)| {
            script(
                name,
                *order,
                *run_on,
                &format!(
                    "echo {name} >> {}; echo out-{name}; echo err-{name} >&2; {extra}",
                    trace.display()
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn runs_in_order_streams_output_and_writes_the_sentinel() {
    let agent = Agent::start();
    let client = agent.client().await;
    // Given out of order on purpose.
    let scripts = traced(
        &agent,
        &[
            ("boot", 200, RunOn::Boot, ""),
            ("system", 100, RunOn::System, ""),
            ("drives", 0, RunOn::System, ""),
        ],
    );
    let mut events = Vec::new();
    let result = client
        .provision(scripts.clone(), |e| events.push(e))
        .await
        .unwrap();
    assert!(result.ok, "{result:?}");
    assert_eq!(read(&agent.path("trace")), "drives\nsystem\nboot\n");
    let names: Vec<_> = result.scripts.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["drives", "system", "boot"]);
    assert!(
        result
            .scripts
            .iter()
            .all(|s| s.state == ScriptState::Succeeded)
    );
    assert!(agent.state.join(".system-provisioned").exists());

    // Output arrived as events, attributed to its script and stream.
    let out_of = |index: usize, stream: OutputStream| -> String {
        events
            .iter()
            .filter_map(|e| match e {
                ProvisionEvent::Output {
                    index: i,
                    stream: s,
                    data,
                } if *i == index && *s == stream => {
                    Some(String::from_utf8_lossy(data).into_owned())
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(out_of(1, OutputStream::Stdout), "out-system\n");
    assert_eq!(out_of(2, OutputStream::Stderr), "err-boot\n");
    assert!(
        matches!(&events[0], ProvisionEvent::ScriptStarted { index: 0, name } if name == "drives")
    );

    // The log has everything.
    let log = read(std::path::Path::new(&result.log));
    assert!(
        log.contains("out-drives") && log.contains("err-boot"),
        "{log}"
    );
    assert!(
        result
            .log
            .starts_with(agent.state.join("logs").to_str().unwrap())
    );

    // Cached, and reported by status.
    let status = client.status().await.unwrap();
    assert!(status.system_provisioned);
    let cached: Vec<_> = status
        .scripts
        .iter()
        .map(|s| (s.name.as_str(), s.run_on))
        .collect();
    assert_eq!(
        cached,
        [
            ("drives", RunOn::System),
            ("system", RunOn::System),
            ("boot", RunOn::Boot)
        ]
    );
    for s in &status.scripts {
        assert!(std::path::Path::new(&s.path).is_file());
    }
    let last = status.last_provision.unwrap();
    assert_eq!(last.trigger, Trigger::Host);
    assert!(last.result.ok);
    assert_eq!(status.boot_scripts_ran_for.as_deref(), Some("boot-1"));

    // Second run: system scripts are skipped, boot scripts run again.
    std::fs::remove_file(agent.path("trace")).unwrap();
    let result = client.provision(scripts, |_| {}).await.unwrap();
    assert!(result.ok);
    assert_eq!(read(&agent.path("trace")), "boot\n");
    let states: Vec<_> = result.scripts.iter().map(|s| s.state.clone()).collect();
    assert_eq!(
        states,
        [
            ScriptState::Skipped,
            ScriptState::Skipped,
            ScriptState::Succeeded
        ]
    );
}

#[tokio::test]
async fn stops_at_the_first_failure_and_writes_no_sentinel() {
    let agent = Agent::start();
    let client = agent.client().await;
    let scripts = traced(
        &agent,
        &[
            ("first", 0, RunOn::System, ""),
            ("broken", 100, RunOn::System, "exit 7"),
            ("later", 150, RunOn::System, ""),
            ("boot", 200, RunOn::Boot, ""),
        ],
    );
    let result = client.provision(scripts, |_| {}).await.unwrap();
    assert!(!result.ok);
    let failed = result.failed.clone().unwrap();
    assert_eq!(failed.name, "broken");
    assert_eq!(failed.exit.code, Some(7));
    assert_eq!(read(&agent.path("trace")), "first\nbroken\n");
    let states: Vec<_> = result.scripts.iter().map(|s| s.state.clone()).collect();
    assert_eq!(states[0], ScriptState::Succeeded);
    assert!(matches!(states[1], ScriptState::Failed { exit } if exit.code == Some(7)));
    assert_eq!(&states[2..], [ScriptState::NotRun, ScriptState::NotRun]);
    assert!(!agent.state.join(".system-provisioned").exists());
    let status = client.status().await.unwrap();
    assert!(!status.system_provisioned);
    assert_eq!(
        status.last_provision.unwrap().result.failed.unwrap().name,
        "broken"
    );

    // Fixed script: everything runs again, and the sentinel appears.
    std::fs::remove_file(agent.path("trace")).unwrap();
    let scripts = traced(
        &agent,
        &[
            ("first", 0, RunOn::System, ""),
            ("broken", 100, RunOn::System, "true"),
            ("later", 150, RunOn::System, ""),
            ("boot", 200, RunOn::Boot, "exit 1"),
        ],
    );
    let result = client.provision(scripts, |_| {}).await.unwrap();
    assert!(!result.ok, "the boot script fails");
    assert_eq!(result.failed.unwrap().name, "boot");
    // Every system script succeeded: the sentinel is there despite the boot failure.
    assert!(agent.state.join(".system-provisioned").exists());
}

#[tokio::test]
async fn runs_cached_boot_scripts_by_itself_on_the_next_boot() {
    let mut agent = Agent::start();
    let marker = agent.path("boot-runs");
    let scripts = vec![
        script(
            "system",
            100,
            RunOn::System,
            &format!("echo system >> {}", agent.path("system-runs").display()),
        ),
        script(
            "boot",
            200,
            RunOn::Boot,
            &format!(
                "echo \"boot $RUM_SCRIPT\" >> {}; echo booted",
                marker.display()
            ),
        ),
    ];
    {
        let client = agent.client().await;
        assert!(client.provision(scripts, |_| {}).await.unwrap().ok);
    }
    assert_eq!(read(&marker), "boot boot\n");

    // Same boot, agent restarted (crash, upgrade): no second run.
    agent.restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(read(&marker), "boot boot\n");

    // A reboot: new boot id. Nobody connects; the agent runs the boot script itself.
    agent.set_boot_id("boot-2");
    agent.restart();
    assert!(
        eventually(Duration::from_secs(10), || read(&marker)
            == "boot boot\nboot boot\n")
        .await,
        "boot script did not run: {:?}",
        read(&marker)
    );
    assert_eq!(
        read(&agent.path("system-runs")),
        "system\n",
        "system scripts run once"
    );
    let client = agent.client().await;
    let status = client.status().await.unwrap();
    let boot = status.last_boot_run.expect("a boot run is recorded");
    assert_eq!(boot.trigger, Trigger::Boot);
    assert_eq!(boot.boot_id, "boot-2");
    assert!(boot.result.ok);
    assert!(read(std::path::Path::new(&boot.result.log)).contains("booted"));
    assert!(boot.result.log.contains("/logs/boot-"));
    assert_eq!(status.boot_scripts_ran_for.as_deref(), Some("boot-2"));
}

#[tokio::test]
async fn boot_scripts_wait_for_system_provisioning() {
    let mut agent = Agent::start();
    let marker = agent.path("boot-runs");
    let scripts = vec![
        script("system", 100, RunOn::System, "exit 1"),
        script(
            "boot",
            200,
            RunOn::Boot,
            &format!("echo boot >> {}", marker.display()),
        ),
    ];
    {
        let client = agent.client().await;
        assert!(!client.provision(scripts, |_| {}).await.unwrap().ok);
    }
    agent.set_boot_id("boot-2");
    agent.restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        read(&marker),
        "",
        "boot scripts need completed system provisioning"
    );
}

#[tokio::test]
async fn cancelling_a_run_kills_the_running_script() {
    let agent = Agent::start();
    let client = agent.client().await;
    let pidfile = agent.path("script.pid");
    let scripts = vec![script(
        "slow",
        0,
        RunOn::System,
        &format!("echo $$ > {}; sleep 60", pidfile.display()),
    )];
    let run = tokio::spawn({
        let client = client.clone();
        async move { client.provision(scripts, |_| {}).await }
    });
    assert!(eventually(Duration::from_secs(5), || !read(&pidfile).is_empty()).await);
    let pid: u32 = read(&pidfile).trim().parse().unwrap();
    run.abort(); // drops the call: cancel
    assert!(eventually(Duration::from_secs(5), || !common::alive(pid)).await);
    assert!(!agent.state.join(".system-provisioned").exists());
    client.ping().await.unwrap();
}

/// The host runs provisioning in two calls, the system phase and then the
/// boot phase (and `rum retry --from boot` sends only the boot phase). The
/// boot call must leave the cached system scripts alone: they still show in
/// `status`, and they still hold the boot scripts back on a VM whose system
/// provisioning has not completed.
#[tokio::test]
async fn a_boot_only_run_keeps_the_cached_system_scripts() {
    let mut agent = Agent::start();
    let system = traced(
        &agent,
        &[
            ("drives", 0, RunOn::System, ""),
            ("system", 100, RunOn::System, ""),
        ],
    );
    let boot = traced(&agent, &[("boot", 200, RunOn::Boot, "")]);
    {
        let client = agent.client().await;
        assert!(client.provision(system.clone(), |_| {}).await.unwrap().ok);
        assert!(client.provision(boot.clone(), |_| {}).await.unwrap().ok);
        let status = client.status().await.unwrap();
        let cached: Vec<_> = status
            .scripts
            .iter()
            .map(|s| (s.name.as_str(), s.run_on))
            .collect();
        assert_eq!(
            cached,
            [
                ("drives", RunOn::System),
                ("system", RunOn::System),
                ("boot", RunOn::Boot)
            ],
            "the boot call replaced the whole cache"
        );
        // Each cached file still holds its own script.
        for (cached, script) in status.scripts.iter().zip(system.iter().chain(&boot)) {
            assert_eq!(read(std::path::Path::new(&cached.path)), script.content);
        }
        // Once more, as after `rum retry --from boot`: still no duplicates.
        assert!(client.provision(boot, |_| {}).await.unwrap().ok);
        assert_eq!(client.status().await.unwrap().scripts.len(), 3);
    }
    assert_eq!(read(&agent.path("trace")), "drives\nsystem\nboot\nboot\n");

    // A reboot: the agent runs the boot script by itself, and only that.
    agent.set_boot_id("boot-2");
    agent.restart();
    assert!(
        eventually(Duration::from_secs(10), || read(&agent.path("trace"))
            == "drives\nsystem\nboot\nboot\nboot\n")
        .await,
        "{:?}",
        read(&agent.path("trace"))
    );

    // Without the sentinel (system provisioning undone), the cached system
    // scripts hold the boot script back on the next boot.
    std::fs::remove_file(agent.state.join(".system-provisioned")).unwrap();
    agent.set_boot_id("boot-3");
    agent.restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = agent.client().await.status().await.unwrap();
    assert_ne!(status.boot_scripts_ran_for.as_deref(), Some("boot-3"));
    assert_eq!(
        read(&agent.path("trace")),
        "drives\nsystem\nboot\nboot\nboot\n"
    );
}

/// The host runs the system steps one call at a time (a checkpoint after
/// each): every call caches the whole list, runs only its part, and the
/// sentinel waits for the last system step.
#[tokio::test]
async fn a_run_of_some_steps_caches_all_and_writes_the_sentinel_after_the_last() {
    let agent = Agent::start();
    let client = agent.client().await;
    let scripts = traced(
        &agent,
        &[
            ("one", 100, RunOn::System, ""),
            ("two", 101, RunOn::System, ""),
            ("three", 102, RunOn::System, ""),
        ],
    );
    let sentinel = agent.state.join(".system-provisioned");
    for (i, name) in ["one", "two", "three"].iter().enumerate() {
        let mut started = Vec::new();
        let result = client
            .provision_some(scripts.clone(), Some(i..i + 1), |e| {
                if let ProvisionEvent::ScriptStarted { index, .. } = e {
                    started.push(index);
                }
            })
            .await
            .unwrap();
        assert!(result.ok, "{result:?}");
        let ran: Vec<_> = result.scripts.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(ran, [*name], "only the asked-for step runs");
        assert_eq!(started, [i], "events index the whole list");
        assert_eq!(sentinel.exists(), i == 2, "after step {name}");
        let status = client.status().await.unwrap();
        assert_eq!(status.scripts.len(), 3, "the whole list is cached");
    }
    assert_eq!(read(&agent.path("trace")), "one\ntwo\nthree\n");
    // A step added after the last runs on the provisioned VM (never skipped);
    // it fails, so the VM is not system-provisioned until it succeeds.
    let mut more = scripts.clone();
    more.extend(traced(&agent, &[("four", 103, RunOn::System, "exit 1")]));
    let result = client
        .provision_some(more.clone(), Some(3..4), |_| {})
        .await
        .unwrap();
    assert_eq!(result.failed.map(|f| f.name), Some("four".to_owned()));
    assert!(!sentinel.exists());
    more[3] = traced(&agent, &[("four", 103, RunOn::System, "")]).remove(0);
    let result = client
        .provision_some(more, Some(3..4), |_| {})
        .await
        .unwrap();
    assert!(result.ok && sentinel.exists(), "{result:?}");
    assert_eq!(read(&agent.path("trace")), "one\ntwo\nthree\nfour\nfour\n");
    let bad = client.provision_some(scripts, Some(2..4), |_| {}).await;
    assert!(bad.is_err(), "a range past the list is refused");
}
