//! rum.toml's parser and validator on random, mutated and mistyped input:
//! they never panic, and every rejection names where (line and column) or
//! what (the key) the problem is, in a report that names the file.

use proptest::prelude::*;
use rum::config::{ConfigError, parse_str};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A config using every section, valid in the project directory below.
const FULL: &str = r#"name = "web"

[image]
base = "img.qcow2"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[resources]
cpus = 4
memory_mb = 4096
disk = "40G"

[network]
hostname = "web-1"

[[mounts]]
source = "."
target = "/mnt/project"
readonly = false
default = true

[[mounts]]
source = "sub"
target = "/srv/data"
tag = "data"

[[ports]]
host = 8080
guest = 80
bind = "127.0.0.1"

[drives.data]
size = "10G"

[drives.more]
size = "1.5G"

[[fs.ext4]]
drive = "data"
target = "/mnt/data"

[[fs.btrfs]]
drives = ["more"]
target = "/mnt/more"
mode = "single"

[[provision.system]]
name = "packages"
script = "apt-get update"
retries = 2

[[provision.system]]
name = "app"
file = "provision/app.sh"
checkpoint = false

[provision.boot]
script = "echo boot"

[user]
name = "dev"

[ssh]

[advanced]
guest_ram = "auto"
"#;

/// A project directory with what FULL names; made once.
fn project() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("img.qcow2"), b"").unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::create_dir_all(dir.path().join("provision")).unwrap();
        std::fs::write(dir.path().join("provision/app.sh"), b"true\n").unwrap();
        dir
    })
    .path()
}

fn file() -> PathBuf {
    project().join("rum.toml")
}

/// Parses `source`; a rejection must locate every problem and name the file.
fn check(source: &str) -> Result<(), TestCaseError> {
    match parse_str(source, &file()) {
        Ok(_) => Ok(()),
        Err(ConfigError::Invalid {
            file: named,
            problems,
        }) => {
            prop_assert!(!problems.is_empty(), "a rejection without a problem");
            for p in &problems {
                prop_assert!(
                    p.location.is_some() || !p.path().segments().is_empty(),
                    "neither a line nor a key: {:?}\nsource:\n{}",
                    p,
                    source
                );
            }
            let report = ConfigError::Invalid {
                file: named,
                problems,
            }
            .to_string();
            prop_assert!(report.contains("rum.toml"), "{}", report);
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "not a config problem: {other}"
        ))),
    }
}

/// Byte offsets of `s` that are char boundaries, scaled from `at` in 0..1.
fn boundary(s: &str, at: f64) -> usize {
    let mut i = ((s.len() as f64) * at) as usize;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(f64, f64),
    Insert(f64, String),
    DuplicateLine(f64),
    DropLine(f64),
    SwapLines(f64, f64),
}

fn snippet() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[".to_owned()),
        Just("]]".to_owned()),
        Just("\"".to_owned()),
        Just("'''".to_owned()),
        Just(" = ".to_owned()),
        Just("\n[[mounts]]\n".to_owned()),
        Just("\n[image]\n".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("1e308".to_owned()),
        Just("nan".to_owned()),
        Just("é😀\u{0}\u{85}".to_owned()),
        Just("\r\n".to_owned()),
        Just("\t#".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("[1, \"a\", true]".to_owned()),
        any::<String>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0.0..1.0, 0.0..0.05).prop_map(|(a, l)| Mutation::Delete(a, l)),
        (0.0..1.0, snippet()).prop_map(|(a, s)| Mutation::Insert(a, s)),
        (0.0..1.0).prop_map(Mutation::DuplicateLine),
        (0.0..1.0).prop_map(Mutation::DropLine),
        (0.0..1.0, 0.0..1.0).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
    ]
}

fn apply(source: &str, mutations: &[Mutation]) -> String {
    let mut s = source.to_owned();
    for m in mutations {
        let line_index =
            |at: f64, lines: &[&str]| ((lines.len() as f64) * at) as usize % lines.len().max(1);
        match m {
            Mutation::Delete(at, len) => {
                let start = boundary(&s, *at);
                let end = boundary(&s, (*at + len).min(1.0)).max(start);
                s.replace_range(start..end, "");
            }
            Mutation::Insert(at, text) => {
                let i = boundary(&s, *at);
                s.insert_str(i, text);
            }
            Mutation::DuplicateLine(at) | Mutation::DropLine(at) => {
                let mut lines: Vec<&str> = s.lines().collect();
                if lines.is_empty() {
                    continue;
                }
                let i = line_index(*at, &lines);
                if matches!(m, Mutation::DropLine(_)) {
                    lines.remove(i);
                } else {
                    lines.insert(i, lines[i]);
                }
                s = lines.join("\n");
            }
            Mutation::SwapLines(a, b) => {
                let mut lines: Vec<&str> = s.lines().collect();
                if lines.is_empty() {
                    continue;
                }
                let (i, j) = (line_index(*a, &lines), line_index(*b, &lines));
                lines.swap(i, j);
                s = lines.join("\n");
            }
        }
    }
    s
}

/// A TOML value of any type, as text.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0i64..70000).prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("TOML has no NaN literal text here", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<String>().prop_map(|s| toml_string(&s)),
        "[0-9]{0,4}(\\.[0-9])?[KMGTkmgt]?(i?B)?".prop_map(|s| toml_string(&s)),
        "[/.~a-z ]{0,20}".prop_map(|s| toml_string(&s)),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("[\"data\", \"data\"]".to_owned()),
    ]
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Every `key = value` line of FULL, with the value replaced by `values[i]`
/// where one is given.
fn retyped(values: &[Option<String>]) -> String {
    let mut n = 0;
    FULL.lines()
        .map(|line| match line.split_once(" = ") {
            Some((key, _)) => {
                let v = values.get(n).cloned().flatten();
                n += 1;
                match v {
                    Some(v) => format!("{key} = {v}"),
                    None => line.to_owned(),
                }
            }
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_full_config_is_valid() {
    parse_str(FULL, &file()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_text_is_parsed_or_located(source in any::<String>()) {
        check(&source)?;
    }

    #[test]
    fn mutated_configs_are_parsed_or_located(mutations in proptest::collection::vec(mutation(), 1..6)) {
        check(&apply(FULL, &mutations))?;
    }

    #[test]
    fn values_of_any_type_are_accepted_or_located(
        values in proptest::collection::vec(proptest::option::weighted(0.3, value()), 40)
    ) {
        check(&retyped(&values))?;
    }
}
