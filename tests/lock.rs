//! A mutating command on a locked instance says who holds the lock instead
//! of waiting silently.

mod cli;

use cli::Sandbox;
use rum::instance::{InstanceLock, LockWait};

#[test]
fn a_second_mutating_command_names_the_holder() {
    let sandbox = Sandbox::new();
    sandbox.write_config("rum.toml", "[image]\nbase = \"img.qcow2\"\n");
    // Creates the instance (its keys) without a VM.
    assert!(sandbox.rum(&["seed", "dump", "seed"]).status.success());
    let instance = std::fs::read_dir(sandbox.root().join("data/rum"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let _held =
        InstanceLock::acquire(&instance.join("lock"), "test", "rum up", LockWait::No).unwrap();
    let me = std::process::id();
    for command in [
        &["down"][..],
        &["destroy", "-f"],
        &["up"],
        &["seed", "dump", "seed2"],
    ] {
        let out = sandbox.rum(command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {stderr}");
        assert!(
            stderr.contains(&format!("`rum up` (pid {me}) holds its lock")),
            "{command:?}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("kill {me}")),
            "{command:?}: {stderr}"
        );
    }
    assert!(
        instance.join("ssh/id_ed25519").is_file(),
        "nothing was removed while locked"
    );
    let status = sandbox.rum(&["-o", "json", "status"]);
    let event: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        event["data"]["busy"]["Process"]["pid"], me,
        "status says who is busy"
    );
}
