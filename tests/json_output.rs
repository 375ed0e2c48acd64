//! `-o json` from every command that needs no running VM, and from every
//! VM command asked of a VM that does not exist: each line one JSON object
//! with an `event`, the last exactly one `result` or `error` (with the exit
//! status it reports). The e2e tests parse the results of a real VM's.

mod cli;

use cli::Sandbox;
use serde_json::Value;

/// The JSON lines of `rum -o json ARGS`; checks their shape.
fn events(sandbox: &Sandbox, args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let out = sandbox.rum(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<Value> = stdout
        .lines()
        .chain(stderr.lines().filter(|l| l.starts_with('{')))
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: `{l}` is not JSON: {e}"))
        })
        .collect();
    for line in &lines {
        assert!(line["event"].is_string(), "{args:?}: {line}");
    }
    let ends: Vec<_> = lines
        .iter()
        .filter(|l| l["event"] == "result" || l["event"] == "error")
        .collect();
    assert_eq!(ends.len(), 1, "{args:?}: one result or error: {lines:?}");
    if ends[0]["event"] == "error" {
        assert_eq!(
            ends[0]["exit_code"].as_i64().map(|c| c as i32),
            out.status.code(),
            "{args:?}"
        );
        assert!(ends[0]["message"].is_string(), "{args:?}");
    } else {
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
    (out.status.code(), lines)
}

fn result(lines: &[Value]) -> &Value {
    &lines.iter().find(|l| l["event"] == "result").unwrap()["data"]
}

#[test]
fn every_command_speaks_json() {
    let sandbox = Sandbox::new();
    let (_, init) = events(&sandbox, &["init", "--defaults"]);
    assert!(result(&init)["file"].is_string());
    sandbox.write_config("rum.toml", "[image]\nbase = \"img.qcow2\"\n");

    let (_, check) = events(&sandbox, &["config", "check"]);
    assert!(result(&check)["instance"].is_string() && result(&check)["config"].is_object());
    let (_, list) = events(&sandbox, &["list"]);
    assert_eq!(result(&list)["instances"], serde_json::json!([]));
    let (_, images) = events(&sandbox, &["image", "list"]);
    assert!(!result(&images).is_null());
    let (_, status) = events(&sandbox, &["status"]);
    assert_eq!(result(&status)["state"], "not created");
    let (_, down) = events(&sandbox, &["down"]);
    assert_eq!(result(&down)["stopped"], false);
    let (_, destroy) = events(&sandbox, &["destroy", "-f"]);
    assert_eq!(result(&destroy)["destroyed"], false);
    let (_, snapshots) = events(&sandbox, &["snapshot", "list"]);
    assert!(result(&snapshots)["snapshots"].is_array());
    let (_, logs) = events(&sandbox, &["log"]);
    assert_eq!(result(&logs)["logs"], serde_json::json!([]));
    let (_, reload) = events(&sandbox, &["reload"]);
    assert_eq!(result(&reload)["running"], false);
    // Last of these: it makes the instance's identity.
    let (_, seed) = events(&sandbox, &["seed", "dump", "seed-out"]);
    assert!(result(&seed)["files"].is_array());

    // A VM that does not run: an error event, with exit 1 (or 2 for usage).
    for args in [
        &["retry"][..],
        &["provision"],
        &["wait"],
        &["exec", "--", "true"],
        &["ssh-config"],
        &["cp", "x", ":/tmp/"],
        &["snapshot", "create", "a"],
        &["console"],
        &["--instance", "nope-01234567", "status"],
    ] {
        let (code, lines) = events(&sandbox, args);
        assert!(matches!(code, Some(1 | 2)), "{args:?}: {code:?} {lines:?}");
    }
}
