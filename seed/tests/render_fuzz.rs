//! The cloud-config renderer on hostile strings: whatever rum.toml or a key
//! file puts into the seed, PyYAML (what cloud-init parses it with) reads
//! back exactly the values rum meant, for meta-data, user-data and
//! network-config alike.

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

struct PyYaml {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

static PYYAML: Mutex<Option<PyYaml>> = Mutex::new(None);

/// What PyYAML makes of each document.
fn pyyaml(docs: &[String]) -> Vec<serde_json::Value> {
    let mut guard = PYYAML.lock().unwrap_or_else(|e| e.into_inner());
    let py = guard.get_or_insert_with(|| {
        let mut child = Command::new("python3")
            .args(["-c", READ_BACK])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        PyYaml {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            _child: child,
        }
    });
    let mut line = serde_json::to_string(docs).unwrap();
    line.push('\n');
    py.stdin.write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    py.stdout.read_line(&mut answer).unwrap();
    let parsed = serde_json::from_str(&answer);
    if parsed.is_err() {
        // PyYAML raised (its traceback is on stderr); the next case needs a new one.
        *guard = None;
    }
    parsed.expect("PyYAML refused a document (its error is above)")
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
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        prop_assert_eq!(keys, args.authorized_keys.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert_eq!(
            read[2]["ethernets"]["eth0"]["match"]["macaddress"].as_str(),
            Some(args.mac_address.as_str())
        );
    }
}
