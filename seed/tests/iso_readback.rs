//! The ISO writer's output read back by independent readers: libarchive's
//! `bsdtar` (through Rock Ridge and through Joliet) and genisoimage's `isoinfo`.

use rum_seed::iso::{IsoError, IsoFile, MAX_NAME_CHARS, write};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// The readers are host tools; without them the test is skipped unless
/// RUM_E2E=1 says every prerequisite must be present.
fn have(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("RUM_E2E").as_deref() != Ok("1"),
            "{tool} is missing: install {package} (scripts/install-prereqs does)"
        );
        eprintln!("skipped: {tool} is not installed (package {package})");
    }
    found
}

fn build(files: &[IsoFile<'_>]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("seed.iso");
    let mut out = std::fs::File::create(&iso).unwrap();
    let size = write("cidata", files, &mut out).unwrap();
    assert_eq!(size, std::fs::metadata(&iso).unwrap().len());
    assert_eq!(size % 2048, 0);
    (dir, iso)
}

/// Extracts the image with bsdtar; `joliet` ignores the Rock Ridge tree.
fn extract(iso: &Path, joliet: bool) -> BTreeMap<String, (Vec<u8>, u32)> {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("bsdtar");
    if joliet {
        cmd.args(["--options", "iso9660:!rockridge"]);
    }
    let status = cmd
        .arg("-xf")
        .arg(iso)
        .arg("-C")
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "bsdtar could not read {}", iso.display());
    std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let mode = e.metadata().unwrap().permissions().mode() & 0o7777;
            (
                e.file_name().into_string().unwrap(),
                (std::fs::read(e.path()).unwrap(), mode),
            )
        })
        .collect()
}

fn assert_reads_back(files: &[IsoFile<'_>]) {
    let (_dir, iso) = build(files);
    let rock_ridge = extract(&iso, false);
    let joliet = extract(&iso, true);
    assert_eq!(rock_ridge.len(), files.len(), "Rock Ridge file count");
    assert_eq!(joliet.len(), files.len(), "Joliet file count");
    for file in files {
        let (data, mode) = rock_ridge
            .get(&file.name)
            .unwrap_or_else(|| panic!("Rock Ridge lacks {:?}", file.name));
        assert!(
            data == file.data.as_ref(),
            "Rock Ridge bytes of {:?}",
            file.name
        );
        assert_eq!(*mode, file.mode, "Rock Ridge mode of {:?}", file.name);
        let (data, _) = joliet
            .get(&file.name)
            .unwrap_or_else(|| panic!("Joliet lacks {:?}", file.name));
        assert!(
            data == file.data.as_ref(),
            "Joliet bytes of {:?}",
            file.name
        );
    }
}

#[test]
fn a_seed_reads_back_with_names_modes_and_bytes() {
    if !have("bsdtar", "libarchive-tools") || !have("isoinfo", "genisoimage") {
        return;
    }
    let agent: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let files = [
        IsoFile::new(
            "user-data",
            b"#cloud-config\nhostname: x\n".as_slice(),
            0o644,
        ),
        IsoFile::new("meta-data", b"instance-id: i-1\n".as_slice(), 0o644),
        IsoFile::new("network-config", b"version: 2\n".as_slice(), 0o600),
        IsoFile::new("rum-agent", agent, 0o755),
        IsoFile::new("empty", Vec::new(), 0o644),
    ];
    assert_reads_back(&files);

    let (_dir, iso) = build(&files);
    let info = Command::new("isoinfo")
        .arg("-d")
        .arg("-i")
        .arg(&iso)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Volume id: cidata"), "{info}");
    assert!(info.contains("Joliet with UCS level 3 found"), "{info}");
    assert!(
        info.contains("Rock Ridge signatures version 1 found"),
        "{info}"
    );
    let listing = Command::new("isoinfo")
        .args(["-R", "-l", "-i"])
        .arg(&iso)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let agent_line = listing
        .lines()
        .find(|l| l.ends_with(" rum-agent "))
        .expect(&listing);
    assert!(agent_line.starts_with("-rwxr-xr-x"), "{agent_line}");
    assert!(
        agent_line.contains(&(3 * 1024 * 1024 + 17).to_string()),
        "{agent_line}"
    );
}

/// xorshift64*: a seeded generator so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Characters a name may hold: printable ASCII but Joliet's forbidden ones,
/// Latin-1, Greek, CJK and other BMP characters of several UTF-8 lengths.
fn name_char(rng: &mut Rng) -> char {
    const ASCII: &str = " !\"#$%&'()+,-.0123456789<=>@ABCXYZ[]^_`abcxyz{|}~";
    const WIDE: &[char] = &[
        'é', 'ü', 'ß', 'Ω', 'ж', 'ש', '中', '文', 'ア', '\u{FFFD}', '€', '가',
    ];
    if rng.below(3) == 0 {
        WIDE[rng.below(WIDE.len() as u64) as usize]
    } else {
        ASCII.as_bytes()[rng.below(ASCII.len() as u64) as usize] as char
    }
}

fn random_files(rng: &mut Rng) -> Vec<IsoFile<'static>> {
    let count = rng.below(40) as usize + 1;
    let mut names = std::collections::BTreeSet::new();
    while names.len() < count {
        let len = match rng.below(4) {
            0 => 1,
            1 => MAX_NAME_CHARS,
            _ => rng.below(MAX_NAME_CHARS as u64) as usize + 1,
        };
        let name: String = (0..len).map(|_| name_char(rng)).collect();
        if name != "." && name != ".." {
            names.insert(name);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let size = match rng.below(8) {
                0 => 0,
                1 => 2048,
                2 => 2047 + rng.below(3) as usize,
                3 if rng.below(10) == 0 => 2 * 1024 * 1024 + rng.below(4096) as usize,
                _ => rng.below(20_000) as usize,
            };
            let seed = rng.next();
            let data: Vec<u8> = (0..size)
                .map(|i| (seed.wrapping_add(i as u64 * 31) >> 3) as u8)
                .collect();
            let mode = [0o644, 0o755, 0o600, 0o700, 0o444, 0o4755][rng.below(6) as usize];
            IsoFile::new(name, data, mode)
        })
        .collect()
}

/// Each file's bytes as `isoinfo` extracts them through Rock Ridge.
fn assert_isoinfo_reads_back(files: &[IsoFile<'_>]) {
    let (_dir, iso) = build(files);
    for file in files {
        let out = Command::new("isoinfo")
            .args(["-R", "-i"])
            .arg(&iso)
            .arg("-x")
            .arg(format!("/{}", file.name))
            .output()
            .unwrap();
        assert!(out.status.success(), "isoinfo on {:?}", file.name);
        assert!(
            out.stdout == file.data.as_ref(),
            "isoinfo bytes of {:?}: {} against {}",
            file.name,
            out.stdout.len(),
            file.data.len()
        );
    }
}

#[test]
fn random_file_sets_read_back_through_isoinfo() {
    if !have("isoinfo", "genisoimage") {
        return;
    }
    let mut rng = Rng(0x5EED_1234_ABCD_0002);
    for case in 0..8 {
        let files = random_files(&mut rng);
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        let result = std::panic::catch_unwind(|| assert_isoinfo_reads_back(&files));
        assert!(result.is_ok(), "case {case} failed; names: {names:?}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

    /// Any name and mode: written, or refused with an error naming it.
    #[test]
    fn any_name_is_written_or_refused_by_name(name in proptest::prelude::any::<String>(), mode in 0u32..0o20000) {
        match write("cidata", &[IsoFile::new(name.clone(), b"x".as_slice(), mode)], &mut Vec::new()) {
            Ok(size) => proptest::prop_assert!(size % 2048 == 0),
            Err(e) => {
                let text = e.to_string();
                proptest::prop_assert!(text.contains(&name) || text.contains("mode"), "{}", text);
            }
        }
    }
}

#[test]
fn random_file_sets_read_back() {
    if !have("bsdtar", "libarchive-tools") {
        return;
    }
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for case in 0..25 {
        let files = random_files(&mut rng);
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        eprintln!("case {case}: {} files", files.len());
        let result = std::panic::catch_unwind(|| assert_reads_back(&files));
        assert!(result.is_ok(), "case {case} failed; names: {names:?}");
    }
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let files = [
        IsoFile::new("user-data", b"a".as_slice(), 0o644),
        IsoFile::new("z", vec![7u8; 5000], 0o755),
    ];
    let (mut first, mut second) = (Vec::new(), Vec::new());
    write("cidata", &files, &mut first).unwrap();
    write("cidata", &files, &mut second).unwrap();
    assert!(first == second);
    let mut reordered = Vec::new();
    write(
        "cidata",
        &[files[1].clone(), files[0].clone()],
        &mut reordered,
    )
    .unwrap();
    assert_eq!(reordered.len(), first.len());
}

#[test]
fn unrepresentable_inputs_are_refused_by_name() {
    let cases: [(&str, u32, &str); 6] = [
        ("a/b", 0o644, "a/b"),
        ("", 0o644, "empty"),
        (&"x".repeat(65), 0o644, "64 characters"),
        ("colon:name", 0o644, "Joliet forbids"),
        ("emoji😀", 0o644, "UCS-2"),
        ("mode", 0o10000, "mode 10000"),
    ];
    for (name, mode, expect) in cases {
        let err = write(
            "cidata",
            &[IsoFile::new(name, b"x".as_slice(), mode)],
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains(expect), "{name:?}: {err}");
    }
    let dup = [
        IsoFile::new("a", b"".as_slice(), 0o644),
        IsoFile::new("a", b"".as_slice(), 0o644),
    ];
    assert!(
        matches!(write("cidata", &dup, &mut Vec::new()), Err(IsoError::Duplicate(n)) if n == "a")
    );
    assert!(matches!(
        write("has space", &[], &mut Vec::new()),
        Err(IsoError::BadVolumeId(_))
    ));
}
