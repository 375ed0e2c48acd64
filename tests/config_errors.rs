//! Every bad rum.toml exits with status 2, names the offending key and its
//! line, and leaves nothing behind on disk. Drives the real `rum` binary.

mod cli;

use cli::Sandbox;

/// (what is wrong, rum.toml besides the `[image]` lines, key named, line).
/// Top-level keys go before `[image]`, everything else after it.
const CASES: &[(&str, &str, &str, Option<usize>)] = &[
    (
        "syntax: unclosed header",
        "[resources\ncpus = 2\n",
        "resources",
        Some(3),
    ),
    (
        "syntax: missing value",
        "[resources]\ncpus =\n",
        "cpus",
        Some(4),
    ),
    (
        "syntax: duplicate key",
        "[resources]\ncpus = 1\ncpus = 2\n",
        "cpus",
        Some(5),
    ),
    ("unknown top-level key", "nmae = \"x\"\n", "nmae", Some(1)),
    (
        "unknown key in section",
        "[resources]\nmemory = 1024\n",
        "resources.memory",
        Some(4),
    ),
    (
        "unknown section",
        "[resource]\ncpus = 2\n",
        "resource",
        Some(3),
    ),
    (
        "wrong type: string for number",
        "[resources]\ncpus = \"two\"\n",
        "resources.cpus",
        Some(4),
    ),
    (
        "wrong type: float for integer",
        "[resources]\nmemory_mb = 1.5\n",
        "resources.memory_mb",
        Some(4),
    ),
    (
        "wrong type: table for array",
        "[ports]\nhost = 1\n",
        "ports",
        Some(3),
    ),
    (
        "bad size unit",
        "[resources]\ndisk = \"20X\"\n",
        "resources.disk",
        Some(4),
    ),
    (
        "size below minimum",
        "[resources]\ndisk = \"10M\"\n",
        "resources.disk",
        Some(4),
    ),
    (
        "zero cpus",
        "[resources]\ncpus = 0\n",
        "resources.cpus",
        Some(4),
    ),
    (
        "too little memory",
        "[resources]\nmemory_mb = 64\n",
        "resources.memory_mb",
        Some(4),
    ),
    ("image path missing", "", "image.base", Some(2)),
    (
        "port 0",
        "[[ports]]\nhost = 0\nguest = 80\n",
        "ports[0].host",
        Some(4),
    ),
    (
        "duplicate host port",
        "[[ports]]\nhost = 8080\nguest = 80\n\n[[ports]]\nhost = 8080\nguest = 81\n",
        "ports[1].host",
        Some(8),
    ),
    (
        "port missing guest",
        "[[ports]]\nhost = 8080\n",
        "ports[0].guest",
        Some(3),
    ),
    (
        "port out of range",
        "[[ports]]\nhost = 70000\nguest = 80\n",
        "ports[0].host",
        Some(4),
    ),
    (
        "bind not an address",
        "[[ports]]\nhost = 1\nguest = 2\nbind = \"localhost\"\n",
        "ports[0].bind",
        Some(6),
    ),
    (
        "relative mount target",
        "[[mounts]]\nsource = \"share\"\ntarget = \"mnt/x\"\n",
        "mounts[0].target",
        Some(5),
    ),
    (
        "overlapping mount targets",
        "[[mounts]]\nsource = \"share\"\ntarget = \"/mnt/a\"\n\n[[mounts]]\nsource = \"share\"\ntarget = \"/mnt/a/b\"\n",
        "mounts[1].target",
        Some(9),
    ),
    (
        "mount source missing",
        "[[mounts]]\nsource = \"nowhere\"\ntarget = \"/mnt/x\"\n",
        "mounts[0].source",
        Some(4),
    ),
    (
        "mount over a system dir",
        "[[mounts]]\nsource = \"share\"\ntarget = \"/etc\"\n",
        "mounts[0].target",
        Some(5),
    ),
    (
        "mount target with ..",
        "[[mounts]]\nsource = \"share\"\ntarget = \"/mnt/../etc\"\n",
        "mounts[0].target",
        Some(5),
    ),
    (
        "mount without target",
        "[[mounts]]\nsource = \"share\"\n",
        "mounts[0].target",
        Some(3),
    ),
    (
        "mount tag too long",
        "[[mounts]]\nsource = \"share\"\ntarget = \"/mnt/x\"\ntag = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n",
        "mounts[0].tag",
        Some(6),
    ),
    (
        "fs drive not defined",
        "[[fs.ext4]]\ndrive = \"data\"\ntarget = \"/mnt/data\"\n",
        "fs.ext4[0].drive",
        Some(4),
    ),
    (
        "drive without size",
        "[drives.data]\n",
        "drives.data.size",
        Some(3),
    ),
    (
        "drive with bad size",
        "[drives.data]\nsize = \"lots\"\n",
        "drives.data.size",
        Some(4),
    ),
    (
        "drive with bad name",
        "[drives.\"a..b\"]\nsize = \"1G\"\n",
        "drives.a..b",
        Some(3),
    ),
    (
        "drive names alike in their first 20 chars",
        "[drives.scratch-volume-0001-a]\nsize = \"1G\"\n[drives.scratch-volume-0001-b]\nsize = \"1G\"\n",
        "drives.scratch-volume-0001-b",
        Some(5),
    ),
    (
        "unknown fs type",
        "[[fs.ntfs]]\ndrive = \"x\"\n",
        "fs.ntfs",
        Some(3),
    ),
    (
        "ext4 on two drives",
        "[drives.a]\nsize = \"1G\"\n[drives.b]\nsize = \"1G\"\n[[fs.ext4]]\ndrives = [\"a\", \"b\"]\ntarget = \"/mnt/d\"\n",
        "fs.ext4[0].drives",
        Some(8),
    ),
    (
        "drive used twice",
        "[drives.a]\nsize = \"1G\"\n[[fs.ext4]]\ndrive = \"a\"\ntarget = \"/mnt/d\"\n[[fs.xfs]]\ndrive = \"a\"\ntarget = \"/mnt/e\"\n",
        "fs.xfs[0].drive",
        Some(9),
    ),
    (
        "bad zfs mode",
        "[drives.a]\nsize = \"1G\"\n[[fs.zfs]]\ndrive = \"a\"\ntarget = \"/mnt/d\"\nmode = \"mirorr\"\n",
        "fs.zfs[0].mode",
        Some(8),
    ),
    (
        "pool on ext4",
        "[drives.a]\nsize = \"1G\"\n[[fs.ext4]]\ndrive = \"a\"\ntarget = \"/mnt/d\"\npool = \"p\"\n",
        "fs.ext4[0].pool",
        Some(8),
    ),
    (
        "fs target inside a mount",
        "[drives.a]\nsize = \"1G\"\n[[mounts]]\nsource = \"share\"\ntarget = \"/mnt\"\n[[fs.ext4]]\ndrive = \"a\"\ntarget = \"/mnt/d\"\n",
        "fs.ext4[0].target",
        Some(10),
    ),
    (
        "name with a path separator",
        "name = \"a/b\"\n",
        "name",
        Some(1),
    ),
    ("name with ..", "name = \"a..b\"\n", "name", Some(1)),
    (
        "name with a control char",
        "name = \"a\\u0007b\"\n",
        "name",
        Some(1),
    ),
    (
        "name over 64 chars",
        "name = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n",
        "name",
        Some(1),
    ),
    (
        "bad hostname",
        "[network]\nhostname = \"bad_host\"\n",
        "network.hostname",
        Some(4),
    ),
    (
        "unknown accel",
        "[advanced]\naccel = \"kvmm\"\n",
        "advanced.accel",
        Some(4),
    ),
    (
        "unknown firmware",
        "[advanced]\nfirmware = \"efi\"\n",
        "advanced.firmware",
        Some(4),
    ),
    (
        "unknown agent transport",
        "[advanced]\nagent_transport = \"tcp\"\n",
        "advanced.agent_transport",
        Some(4),
    ),
    (
        "machine with options",
        "[advanced]\nmachine = \"q35,accel=kvm\"\n",
        "advanced.machine",
        Some(4),
    ),
    (
        "qemu binary missing",
        "[advanced]\nqemu = \"/nonexistent/qemu\"\n",
        "advanced.qemu",
        Some(4),
    ),
    (
        "bad authorized key",
        "[ssh]\nauthorized_keys = [\"hello\"]\n",
        "ssh.authorized_keys[0]",
        Some(4),
    ),
    (
        "root user",
        "[user]\nname = \"root\"\n",
        "user.name",
        Some(4),
    ),
    (
        "bad group",
        "[user]\ngroups = [\"Wheel!\"]\n",
        "user.groups[0]",
        Some(4),
    ),
    (
        "script and file",
        "[provision.system]\nscript = \"true\"\nfile = \"s.sh\"\n",
        "provision.system.file",
        Some(5),
    ),
    (
        "script file missing",
        "[provision.boot]\nfile = \"missing.sh\"\n",
        "provision.boot.file",
        Some(4),
    ),
    (
        "provision without script",
        "[provision.system]\n",
        "provision.system.script",
        Some(3),
    ),
    (
        "duplicate step name across phases",
        "[[provision.system]]\nname = \"app\"\nscript = \"true\"\n[[provision.boot]]\nname = \"app\"\nscript = \"true\"\n",
        "provision.boot[0].name",
        Some(7),
    ),
    (
        "reserved step name",
        "[[provision.system]]\nname = \"boot\"\nscript = \"true\"\n",
        "provision.system[0].name",
        Some(4),
    ),
    (
        "bad step name",
        "[[provision.system]]\nscript = \"true\"\n[[provision.system]]\nname = \"my step\"\nscript = \"true\"\n",
        "provision.system[1].name",
        Some(6),
    ),
    (
        "script and file in a step",
        "[[provision.system]]\nscript = \"true\"\n[[provision.system]]\nscript = \"true\"\nfile = \"s.sh\"\n",
        "provision.system[1].file",
        Some(7),
    ),
    (
        "too many retries",
        "[[provision.system]]\nscript = \"true\"\nretries = 9\n",
        "provision.system[0].retries",
        Some(5),
    ),
    (
        "checkpoint on a boot step",
        "[[provision.boot]]\nscript = \"true\"\ncheckpoint = false\n",
        "provision.boot[0].checkpoint",
        Some(5),
    ),
    (
        "no checkpoints",
        "[advanced]\ncheckpoints = 0\n",
        "advanced.checkpoints",
        Some(4),
    ),
    (
        "step table and step array mixed",
        "[provision.system]\nscript = \"true\"\n[[provision.system]]\nscript = \"true\"\n",
        "provision.system",
        Some(5),
    ),
];

#[test]
fn every_bad_config_names_its_key_exits_2_and_writes_nothing() {
    assert!(CASES.len() >= 30);
    let mut failures = Vec::new();
    for (what, body, key, line) in CASES {
        let sandbox = Sandbox::new();
        let header = if *what == "image path missing" {
            "[image]\nbase = \"./missing.qcow2\"\n"
        } else {
            "[image]\nbase = \"img.qcow2\"\n"
        };
        let text = if body.starts_with('[') || body.is_empty() {
            format!("{header}{body}")
        } else {
            format!("{body}{header}")
        };
        let file = sandbox.write_config("rum.toml", &text);
        let before = sandbox.tree();
        let out = sandbox.rum(&["-c", file.to_str().unwrap(), "config", "check"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut wrong = Vec::new();
        if out.status.code() != Some(2) {
            wrong.push(format!("exit status {:?}, want 2", out.status.code()));
        }
        if !stderr.contains(&format!("`{key}`")) {
            wrong.push(format!("does not name `{key}`"));
        }
        if let Some(line) = line
            && !stderr.contains(&format!("rum.toml:{line}:"))
        {
            wrong.push(format!("does not point at line {line}"));
        }
        if sandbox.tree() != before {
            wrong.push("changed files on disk".into());
        }
        if !wrong.is_empty() {
            failures.push(format!("{what}: {}\n{stderr}", wrong.join(", ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}

#[test]
fn unknown_keys_suggest_the_nearest_valid_one() {
    let sandbox = Sandbox::new();
    let file = sandbox.write_config(
        "rum.toml",
        "[image]\nbase = \"img.qcow2\"\n[resources]\nmemory = 1024\n",
    );
    let out = sandbox.rum(&["-c", file.to_str().unwrap(), "config", "check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did you mean `memory_mb`?"), "{stderr}");
    assert!(stderr.contains("cpus, memory_mb, disk"), "{stderr}");
}

#[test]
fn missing_image_section_says_what_to_add() {
    let sandbox = Sandbox::new();
    let file = sandbox.write_config("rum.toml", "[resources]\ncpus = 2\n");
    let out = sandbox.rum(&["-c", file.to_str().unwrap(), "config", "check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`image` is missing"), "{stderr}");
    assert!(stderr.contains("base = \"debian-12\""), "{stderr}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let sandbox = Sandbox::new();
    let file = sandbox.write_config(
        "rum.toml",
        "[image]\nbase = \"img.qcow2\"\n[resources]\ncpus = 0\nmemory_mb = 1\n[[ports]]\nhost = 0\nguest = 1\n",
    );
    let out = sandbox.rum(&[
        "-c",
        file.to_str().unwrap(),
        "-o",
        "json",
        "config",
        "check",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2));
    let event: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(event["event"], "error");
    assert_eq!(event["exit_code"], 2);
    let message = event["message"].as_str().unwrap();
    assert!(message.contains("has 3 problems"), "{message}");
    for key in ["resources.cpus", "resources.memory_mb", "ports[0].host"] {
        assert!(message.contains(key), "{key} missing from {message}");
    }
}

#[test]
fn a_missing_config_file_is_a_usage_error() {
    let sandbox = Sandbox::new();
    let out = sandbox.rum(&["config", "check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("rum init"), "{stderr}");
}

#[test]
fn an_unknown_image_name_lists_the_known_ones() {
    let sandbox = Sandbox::new();
    let file = sandbox.write_config("rum.toml", "[image]\nbase = \"fedora-40\"\n");
    let out = sandbox.rum(&["-c", file.to_str().unwrap(), "config", "check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`image.base`"), "{stderr}");
    assert!(stderr.contains("rum.toml:2:"), "{stderr}");
    for known in ["ubuntu-24.04", "ubuntu-22.04", "debian-12", "debian-13"] {
        assert!(stderr.contains(known), "{known} missing: {stderr}");
    }
    for known in ["ubuntu-24.04", "debian-13"] {
        let file = sandbox.write_config("rum.toml", &format!("[image]\nbase = \"{known}\"\n"));
        let out = sandbox.rum(&["-c", file.to_str().unwrap(), "config", "check"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_bad_sha256_is_named_with_its_line() {
    let sandbox = Sandbox::new();
    let file = sandbox.write_config(
        "rum.toml",
        "[image]\nbase = \"img.qcow2\"\nsha256 = \"abc123\"\n",
    );
    let before = sandbox.tree();
    let out = sandbox.rum(&["-c", file.to_str().unwrap(), "config", "check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`image.sha256`"), "{stderr}");
    assert!(stderr.contains("rum.toml:3:"), "{stderr}");
    assert!(stderr.contains("`abc123` is not a SHA-256"), "{stderr}");
    assert_eq!(sandbox.tree(), before);
}
