//! `rum up` with `[image] base` set to a URL served by a local HTTP server
//! (127.0.0.1) that fails twice with 503 and then drops the connection: the
//! download resumes, verifies against the SHA256SUMS beside it, the retries
//! land in the instance's history, and the guest boots from the cached
//! image. Then `rum image` sees the VM using it. One boot. And two `rum up`s
//! of different projects that need one image transfer it once.

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

#[test]
fn two_ups_needing_one_image_download_it_once() {
    let Some(env) = support::e2e() else { return };
    let server = FileServer::start();
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8 | 0x40).collect();
    let sha = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    server.add("/shared.raw", data);
    // Slow (3 s), so that the second `up` starts while the first downloads.
    let slow = Fault::Slow {
        chunk: 128 << 10,
        delay: std::time::Duration::from_millis(100),
    };
    server.faults("/shared.raw", vec![slow]);
    let toml = format!(
        "[image]\nbase = \"{}\"\nsha256 = \"{sha}\"\n",
        server.url("/shared.raw")
    );
    let logs = env.dir("ups");
    let pids: Vec<(u32, std::path::PathBuf)> = ["a", "b"]
        .iter()
        .map(|name| {
            let project = env.dir(&format!("project-{name}"));
            std::fs::write(project.join("rum.toml"), &toml).unwrap();
            let stderr = logs.join(format!("{name}.stderr"));
            let mut cmd = env.rum_command();
            cmd.current_dir(&project)
                .env("RUM_TEST_FAIL_AFTER", "image_ready")
                .args(["up", "-d"])
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&stderr).unwrap());
            (env.procs.spawn(&mut cmd), stderr)
        })
        .collect();
    let mut waited = 0;
    for (pid, stderr) in pids {
        let status = env
            .procs
            .wait_timeout(pid, std::time::Duration::from_secs(300))
            .expect("rum up finishes");
        let stderr = std::fs::read_to_string(stderr).unwrap();
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("Injected failure after `image_ready`"),
            "{stderr}"
        );
        waited += usize::from(stderr.contains("waiting for another rum"));
    }
    assert_eq!(waited, 1, "the second `up` waits for the first");
    let served = server.served("/shared.raw");
    assert_eq!(served.len(), 1, "one transfer: {served:?}");

    // Both fresh instances were rolled back; the verified image stays cached.
    let instances = std::fs::read_dir(env.xdg.data.join("rum"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(instances, 0);
    let list = json_result(&env.rum(&["-o", "json", "image", "list"]));
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["image"]["status"], "verified");
}
