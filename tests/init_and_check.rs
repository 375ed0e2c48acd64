//! `rum init` and `rum config check` through the real binary.

mod cli;

use cli::Sandbox;

#[test]
fn init_defaults_then_check_succeed_in_an_empty_directory() {
    let sandbox = Sandbox::new();
    let empty = sandbox.project().join("empty");
    std::fs::create_dir(&empty).unwrap();

    let init = sandbox.rum_in(&empty, &["init", "--defaults"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let text = std::fs::read_to_string(empty.join("rum.toml")).unwrap();
    assert!(text.contains("base = \"debian-12\""), "{text}");
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() > 20,
        "the file explains itself"
    );

    let check = sandbox.rum_in(&empty, &["config", "check"]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(stdout.contains("(valid)"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{} → /mnt/project",
            empty.canonicalize().unwrap().display()
        )),
        "{stdout}"
    );
}

#[test]
fn init_never_overwrites() {
    let sandbox = Sandbox::new();
    let file = sandbox.write_config("rum.toml", "# mine\n");
    let out = sandbox.rum(&["init", "--defaults"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(std::fs::read_to_string(file).unwrap(), "# mine\n");
}

#[test]
fn init_writes_where_dash_c_says() {
    let sandbox = Sandbox::new();
    let out = sandbox.rum(&["-c", "dev.rum.toml", "init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sandbox.project().join("dev.rum.toml").is_file());
    assert!(!sandbox.project().join("rum.toml").exists());
}

#[test]
fn check_prints_the_resolved_config_as_json() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "dev.rum.toml",
        "[image]\nbase = \"img.qcow2\"\n\n[[ports]]\nhost = 8080\nguest = 80\n\n[[mounts]]\nsource = \"share\"\ntarget = \"/srv/share/\"\nreadonly = true\n\n[drives.data]\nsize = \"1.5G\"\n\n[[fs.zfs]]\ndrives = [\"data\"]\ntarget = \"/tank\"\n",
    );
    let out = sandbox.rum(&["-c", "dev.rum.toml", "-o", "json", "config", "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stderr.is_empty(), "json mode keeps stderr clean");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let event: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(event["event"], "result");
    let data = &event["data"];
    let config = &data["config"];
    assert_eq!(config["name"], "dev", "dev.rum.toml gives the name dev");
    assert!(data["instance"].as_str().unwrap().starts_with("dev-"));
    assert_eq!(config["image"]["kind"], "path");
    assert_eq!(config["image"]["sha256"], serde_json::Value::Null);
    assert_eq!(config["resources"]["cpus"], 2);
    assert_eq!(config["resources"]["disk"], 20u64 << 30);
    assert_eq!(
        config["ports"][0]["bind"], "127.0.0.1",
        "ports bind to loopback by default"
    );
    assert_eq!(config["mounts"][0]["target"], "/srv/share");
    assert_eq!(config["mounts"][0]["tag"], "srv-share");
    assert_eq!(config["mounts"][0]["readonly"], true);
    assert_eq!(config["drives"][0]["size"], 3u64 << 29);
    assert_eq!(
        config["filesystems"][0]["pool"], "data",
        "zfs pool defaults to the first drive"
    );
    assert_eq!(config["advanced"]["accel"], "auto");
}

#[test]
fn check_finds_the_config_from_a_subdirectory() {
    let sandbox = Sandbox::new();
    sandbox.write_config("rum.toml", "[image]\nbase = \"img.qcow2\"\n");
    let out = sandbox.rum_in(&sandbox.project().join("share"), &["config", "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("instance    project-"));
}

#[test]
fn same_directory_names_get_different_instances() {
    let sandbox = Sandbox::new();
    let mut ids = Vec::new();
    for parent in ["a", "b"] {
        let dir = sandbox.project().join(parent).join("web");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rum.toml"), "[image]\nbase = \"debian-12\"\n").unwrap();
        let out = sandbox.rum_in(&dir, &["-o", "json", "config", "check"]);
        assert!(out.status.success());
        let event: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push(event["data"]["instance"].as_str().unwrap().to_owned());
    }
    assert!(ids[0].starts_with("web-") && ids[1].starts_with("web-"));
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn libvirt_era_keys_load_with_a_warning() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "rum.toml",
        "[image]\nbase = \"img.qcow2\"\n[network]\nnat = true\n[advanced]\nlibvirt_uri = \"qemu:///system\"\ndomain_type = \"qemu\"\n",
    );
    let out = sandbox.rum(&["-o", "json", "config", "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let warnings: Vec<_> = events.iter().filter(|e| e["event"] == "warning").collect();
    assert_eq!(warnings.len(), 2, "{stdout}");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("network.nat")
    );
    let result = events.last().unwrap();
    assert_eq!(
        result["data"]["config"]["advanced"]["accel"], "tcg",
        "domain_type = \"qemu\" means TCG"
    );
}
