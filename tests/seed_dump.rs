//! `rum seed dump DIR` through the real binary.

mod cli;

use cli::Sandbox;
use std::os::unix::fs::PermissionsExt;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn dump_writes_the_seed_files_and_keeps_the_identity() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "rum.toml",
        "[image]\nbase = \"img.qcow2\"\n[user]\nname = \"dev\"\n[[mounts]]\nsource = \"share\"\ntarget = \"/mnt/share\"\n",
    );
    let out = sandbox.rum(&["-o", "json", "seed", "dump", "seed"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dir = sandbox.project().join("seed");
    for (name, want) in [
        ("meta-data", 0o644),
        ("user-data", 0o644),
        ("network-config", 0o644),
        ("rum-setup.sh", 0o755),
        ("rum-agent.service", 0o644),
        ("rum-agent", 0o755),
    ] {
        assert_eq!(mode(&dir.join(name)), want, "{name}");
    }
    assert_eq!(
        std::fs::read(dir.join("rum-agent")).unwrap(),
        rum::agent_binary::BYTES
    );
    let user_data = std::fs::read_to_string(dir.join("user-data")).unwrap();
    assert!(user_data.starts_with("#cloud-config\n"));
    let setup = std::fs::read_to_string(dir.join("rum-setup.sh")).unwrap();
    assert!(
        setup.contains("mnt-share /mnt/share virtiofs defaults,nofail 0 0"),
        "{setup}"
    );

    // The identity lives in the instance's private data dir and is reused.
    let data = std::fs::read_dir(sandbox.root().join("data/rum"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("ssh/id_ed25519")), 0o600);
    let public = std::fs::read_to_string(data.join("ssh/id_ed25519.pub")).unwrap();
    assert!(
        user_data.contains(public.trim()),
        "the generated client key is authorized"
    );
    let last_event = |stdout: &[u8]| -> serde_json::Value {
        let text = String::from_utf8_lossy(stdout).into_owned();
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    };
    let first = last_event(&out.stdout);

    let again = sandbox.rum(&["-o", "json", "seed", "dump", "seed2"]);
    let second = last_event(&again.stdout);
    assert_eq!(
        first["data"]["identity"], second["data"]["identity"],
        "same config, same seed"
    );
}

#[test]
fn dump_refuses_a_non_empty_directory() {
    let sandbox = Sandbox::new();
    sandbox.write_config("rum.toml", "[image]\nbase = \"img.qcow2\"\n");
    let out = sandbox.rum(&["seed", "dump", "share"]);
    std::fs::write(sandbox.project().join("share/keep"), "mine").unwrap();
    let out2 = sandbox.rum(&["seed", "dump", "share"]);
    assert!(out.status.success());
    assert_eq!(
        out2.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out2.stderr)
    );
    assert!(String::from_utf8_lossy(&out2.stderr).contains("is not empty"));
    assert_eq!(
        std::fs::read_to_string(sandbox.project().join("share/keep")).unwrap(),
        "mine"
    );
}
