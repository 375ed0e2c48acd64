//! `rum up` with `[image] base` set to a URL served by a local HTTP server
//! (127.0.0.1) that fails twice with 503 and then drops the connection: the
//! download resumes, verifies against the SHA256SUMS beside it, the retries
//! land in the instance's history, and the guest boots from the cached
//! image. Then `rum image` sees the VM using it. One boot.

mod support;

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{Fault, FileServer};

const DROP_AFTER: u64 = 64 << 20;

fn sha256_file(path: &std::path::Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn json_result(run: &support::RumRun) -> Value {
    let event: Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    event["data"].clone()
}

#[test]
fn up_from_a_url_downloads_once_resumes_and_boots() {
    let Some(env) = support::e2e() else { return };
    let server = FileServer::start();
    let image = &env.tools.image;
    let size = std::fs::metadata(image).unwrap().len();
    server.add_file("/cloud/test.qcow2", image);
    server.add(
        "/cloud/SHA256SUMS",
        format!("{}  test.qcow2\n", sha256_file(image)).into_bytes(),
    );
    server.faults(
        "/cloud/test.qcow2",
        vec![
            Fault::Status(503),
            Fault::Status(503),
            Fault::DropAfter(DROP_AFTER),
        ],
    );
    let url = server.url("/cloud/test.qcow2");
    std::fs::write(
        env.project.join("rum.toml"),
        format!("[image]\nbase = \"{url}\"\n\n[resources]\ncpus = 2\nmemory_mb = 1024\n"),
    )
    .unwrap();

    let up = env.rum(&["up", "-d"]);
    up.assert_success();
    assert_eq!(up.stderr.matches("retrying in").count(), 3, "{up}");
    let exec = env.rum(&["exec", "--", "cat", "/etc/hostname"]);
    exec.assert_success();

    let served = server.served("/cloud/test.qcow2");
    let statuses: Vec<u16> = served.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [503, 503, 200, 206], "{served:?}");
    assert_eq!(served[3].range_start, Some(DROP_AFTER));
    let sent: u64 = served
        .iter()
        .filter(|s| s.status < 300)
        .map(|s| s.body_bytes)
        .sum();
    assert_eq!(sent, size, "the image crossed the wire once");

    // The retries are in the instance's history.
    let status = json_result(&env.rum(&["-o", "json", "status"]));
    let instance = status["instance"].as_str().unwrap().to_owned();
    let state_file = env.xdg.data.join("rum").join(&instance).join("state.json");
    let state: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let retries: Vec<&str> = state["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["milestone"] == "image_ready" && h["event"] == "retrying")
        .map(|h| h["detail"].as_str().unwrap())
        .collect();
    assert_eq!(retries.len(), 3, "{retries:?}");
    assert!(retries[0].contains("HTTP 503"), "{retries:?}");
    assert!(
        retries[2].contains("broke") || retries[2].contains("ended"),
        "{retries:?}"
    );

    // The cache knows who uses the image and protects it.
    let list = json_result(&env.rum(&["-o", "json", "image", "list"]));
    let entry = &list.as_array().unwrap()[0];
    let name = entry["image"]["name"].as_str().unwrap().to_owned();
    assert_eq!(entry["image"]["source"], url);
    assert_eq!(entry["used_by"], serde_json::json!([instance]));
    let delete = env.rum(&["image", "delete", &name]);
    delete.assert_code(2);
    assert!(delete.stderr.contains(&instance), "{delete}");
    let clear = env.rum(&["image", "clear"]);
    clear.assert_success();
    assert!(
        clear.stdout.contains("Deleted 0 cached image(s)"),
        "{clear}"
    );
    env.rum(&["exec", "--", "true"]).assert_success();

    env.rum(&["destroy", "-f"]).assert_success();
    let clear = env.rum(&["image", "clear"]);
    clear.assert_success();
    assert!(
        clear.stdout.contains("Deleted 1 cached image(s)"),
        "{clear}"
    );
    let list = json_result(&env.rum(&["-o", "json", "image", "list"]));
    assert_eq!(list, serde_json::json!([]));
}
