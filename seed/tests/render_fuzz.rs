//! The cloud-config renderer on hostile strings: whatever rum.toml or a key
//! file puts into the seed, PyYAML (what cloud-init parses it with) reads
//! back exactly the values rum meant, for meta-data, user-data and
//! network-config alike, and every user-data passes cloud-init's own schema
//! check (Debian 12's, as `cloud-init schema --config-file` runs it).

use proptest::prelude::*;
use rum_seed::{HostKey, MountArgs, SeedArgs, cloud_config};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

/// Loads each document of a line's JSON array with PyYAML's safe loader and
/// answers with one line: the documents as ASCII JSON. One process for every
/// case, as Python's start-up would dwarf the cases.
const READ_BACK: &str = r#"
import json, sys, yaml
for line in sys.stdin:
    docs = json.loads(line)
    print(json.dumps([yaml.safe_load(d) for d in docs], ensure_ascii=True), flush=True)
"#;

fn python_yaml_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(probe_python_yaml)
}

fn probe_python_yaml() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import yaml"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("RUM_E2E").as_deref() != Ok("1"),
            "python3 with PyYAML is missing: install python3-yaml (scripts/install-prereqs does)"
        );
        eprintln!("skipped: python3-yaml is not installed");
    }
    ok
}

/// Validates each line's JSON string as a user-data file with cloud-init's
/// own function for `cloud-init schema --config-file`; answers with one
/// line: `"valid"` or cloud-init's complaint (deprecations too, which it
/// prints rather than raises), as JSON.
const SCHEMA_CHECK: &str = r#"
import contextlib, io, json, os, sys, tempfile
from cloudinit.config.schema import get_schema, validate_cloudconfig_file
schema = get_schema()
for line in sys.stdin:
    fd, path = tempfile.mkstemp(suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.loads(line))
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            validate_cloudconfig_file(path, schema)
        said = printed.getvalue().replace("Cloud config schema deprecations:", "").strip()
        answer = "deprecated: " + said if said else "valid"
    except Exception as e:
        answer = "%s: %s" % (type(e).__name__, e)
    finally:
        os.unlink(path)
    print(json.dumps(answer), flush=True)
"#;

/// Where scripts/install-prereqs unpacked Debian's cloud-init.
fn cloud_init_root() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("RUM_CLOUD_INIT") {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache")
        });
    cache.join("rum-test/cloud-init")
}

fn cloud_init_library() -> std::path::PathBuf {
    cloud_init_root().join("usr/lib/python3/dist-packages")
}

fn cloud_init_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let ok = Command::new(SYSTEM_PYTHON)
            .args(["-c", "import cloudinit.config.schema"])
            .env("PYTHONPATH", cloud_init_library())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("RUM_E2E").as_deref() != Ok("1"),
                "cloud-init's schema check is missing from {}: scripts/install-prereqs unpacks it",
                cloud_init_root().display()
            );
            eprintln!("skipped: cloud-init is not unpacked (scripts/install-prereqs)");
        }
        ok
    })
}

/// Debian's own Python, whose modules apt installed for cloud-init.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A Python process that answers one JSON line with one JSON line.
struct Python {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Python {
    fn start(python: &str, program: &str, path: Option<std::path::PathBuf>) -> Self {
        let mut command = Command::new(python);
        command
            .args(["-c", program])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(path) = path {
            command.env("PYTHONPATH", path);
        }
        let mut child = command.spawn().unwrap();
        Python {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            _child: child,
        }
    }

    /// Sends `question`; the answer, or None when Python raised (its
    /// traceback is on stderr and the process must be started again).
    fn ask<T: serde::de::DeserializeOwned>(
        &mut self,
        question: &impl serde::Serialize,
    ) -> Option<T> {
        let mut line = serde_json::to_string(question).unwrap();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).ok()
    }
}

static PYYAML: Mutex<Option<Python>> = Mutex::new(None);
static SCHEMA: Mutex<Option<Python>> = Mutex::new(None);

/// What PyYAML makes of each document.
fn pyyaml(docs: &[String]) -> Vec<serde_json::Value> {
    let mut guard = PYYAML.lock().unwrap_or_else(|e| e.into_inner());
    let py = guard.get_or_insert_with(|| Python::start("python3", READ_BACK, None));
    let answer = py.ask(&docs);
    if answer.is_none() {
        *guard = None;
    }
    answer.expect("PyYAML refused a document (its error is above)")
}

/// What cloud-init's schema check says of a user-data file.
fn schema_check(user_data: &str) -> String {
    let mut guard = SCHEMA.lock().unwrap_or_else(|e| e.into_inner());
    let py = guard.get_or_insert_with(|| {
        Python::start(SYSTEM_PYTHON, SCHEMA_CHECK, Some(cloud_init_library()))
    });
    let answer = py.ask(&user_data);
    if answer.is_none() {
        *guard = None;
    }
    answer.expect("the schema check itself failed (its error is above)")
}

/// Pieces that YAML 1.1 or a shell treats specially, and characters from
/// every UTF-8 length, including YAML's own line breaks (NEL, LS, PS) and
/// the characters PyYAML's reader refuses (DEL, C1 controls, U+FFFE/F).
fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("yes".to_owned()),
        Just("on".to_owned()),
        Just("~".to_owned()),
        Just("null".to_owned()),
        Just("0x1F".to_owned()),
        Just("1:20".to_owned()),
        Just("52:54:00:12:34:56".to_owned()),
        Just("- ".to_owned()),
        Just(": ".to_owned()),
        Just(" #".to_owned()),
        Just("&a *a !!str %TAG @`|>".to_owned()),
        Just("'\"\\".to_owned()),
        Just("\t\r\n".to_owned()),
        Just("\u{85}\u{2028}\u{2029}".to_owned()),
        Just("\u{7f}\u{80}\u{9f}\u{a0}".to_owned()),
        Just("\u{feff}\u{fffe}\u{ffff}\u{fffd}".to_owned()),
        Just("😀𝄞".to_owned()),
        Just("\0\u{1b}[31m".to_owned()),
        any::<char>().prop_map(String::from),
        "[ -~]{0,12}",
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

fn args_strategy() -> impl Strategy<Value = SeedArgs<'static>> {
    (
        (hostile(), hostile(), hostile(), hostile()),
        proptest::collection::vec(hostile(), 0..3),
        proptest::collection::vec(hostile(), 0..3),
        (hostile(), hostile()),
        proptest::collection::vec((hostile(), any::<bool>()), 0..3),
        proptest::option::of(hostile()),
    )
        .prop_map(
            |((id, host, user, mac), groups, keys, (private, public), mounts, autologin)| {
                SeedArgs {
                    instance_id: id,
                    hostname: host,
                    user,
                    groups,
                    authorized_keys: keys,
                    host_key: HostKey { private, public },
                    mac_address: mac,
                    mounts: mounts
                        .into_iter()
                        .enumerate()
                        .map(|(i, (target, readonly))| MountArgs {
                            tag: format!("mount{i}"),
                            target,
                            readonly,
                        })
                        .collect(),
                    autologin,
                    agent: Vec::new().into(),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn pyyaml_reads_back_what_rum_meant(args in args_strategy()) {
        if !python_yaml_available() {
            return Ok(());
        }
        let files = cloud_config::render(&args).unwrap();
        let doc = |name: &str| {
            let file = files.iter().find(|f| f.name == name).unwrap();
            String::from_utf8(file.data.to_vec()).unwrap()
        };
        let docs = [doc("meta-data"), doc("user-data"), doc("network-config")];
        let read = pyyaml(&docs);
        for (text, read) in docs.iter().zip(&read) {
            // The documents are JSON, so serde_json says what was meant.
            let body = text.strip_prefix("#cloud-config\n").unwrap_or(text);
            let meant: serde_json::Value = serde_json::from_str(body).unwrap();
            prop_assert_eq!(read, &meant, "document:\n{}", text);
        }
        let user = &read[1];
        prop_assert_eq!(user["hostname"].as_str(), Some(args.hostname.as_str()));
        prop_assert_eq!(user["users"][0]["name"].as_str(), Some(args.user.as_str()));
        let keys: Vec<&str> = user["users"][0]["ssh_authorized_keys"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        prop_assert_eq!(keys, args.authorized_keys.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert_eq!(
            read[2]["ethernets"]["eth0"]["match"]["macaddress"].as_str(),
            Some(args.mac_address.as_str())
        );
        if cloud_init_available() {
            prop_assert_eq!(schema_check(&docs[1]), "valid", "user-data:\n{}", docs[1]);
        }
    }
}

/// The checker itself: what Debian 12's cloud-init said of rum's first
/// user-data, and a seed as `rum up` renders it.
#[test]
fn cloud_init_schema_check_tells_valid_from_invalid() {
    if !cloud_init_available() {
        return;
    }
    let invalid = schema_check("#cloud-config\nssh_genkeytypes: []\n");
    assert!(
        invalid.contains("ssh_genkeytypes: [] is too short"),
        "{invalid}"
    );
    let args = SeedArgs {
        instance_id: "i-0123456789abcdef".into(),
        hostname: "web".into(),
        user: "dev".into(),
        groups: vec!["docker".into(), "kvm".into()],
        authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB rum".into()],
        host_key: HostKey {
            private:
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbg==\n-----END OPENSSH PRIVATE KEY-----\n"
                    .into(),
            public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC host".into(),
        },
        mac_address: "52:54:00:12:34:56".into(),
        mounts: vec![MountArgs {
            tag: "mount0".into(),
            target: "/home/dev/project".into(),
            readonly: false,
        }],
        autologin: Some("dev".into()),
        agent: b"\x7fELF".as_slice().into(),
    };
    let files = cloud_config::render(&args).unwrap();
    let user_data = files.iter().find(|f| f.name == "user-data").unwrap();
    let user_data = String::from_utf8(user_data.data.to_vec()).unwrap();
    assert_eq!(schema_check(&user_data), "valid", "{user_data}");
}
