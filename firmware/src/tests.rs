use super::*;

fn uefi_descriptor(code: &Path, vars: &Path, features: &[&str], machines: &str) -> String {
    format!(
        r#"{{
  "description": "a test build",
  "interface-types": ["uefi"],
  "mapping": {{
    "device": "flash",
    "executable": {{"filename": "{}", "format": "raw"}},
    "nvram-template": {{"filename": "{}", "format": "raw"}}
  }},
  "targets": [{{"architecture": "x86_64", "machines": ["{machines}"]}}],
  "features": {features:?},
  "tags": [],
  "some-future-field": 1
}}"#,
        code.display(),
        vars.display()
    )
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["share", "etc", "user"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        for file in ["CODE.fd", "VARS.fd", "CODE.secboot.fd", "CODE.user.fd"] {
            std::fs::write(dir.path().join(file), file).unwrap();
        }
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn dirs(&self) -> Vec<PathBuf> {
        vec![self.path("share"), self.path("etc"), self.path("user")]
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.path(rel), text).unwrap();
    }

    fn select(
        &self,
        interface: Interface,
        secure_boot: bool,
        machine: &str,
    ) -> Result<Firmware, FirmwareError> {
        let descriptors = load(&self.dirs()).unwrap();
        let request = Request {
            architecture: "x86_64",
            machine,
            interface,
            secure_boot,
        };
        select(&descriptors, &request, &self.dirs())
    }
}

fn code_of(firmware: Firmware) -> PathBuf {
    match firmware {
        Firmware::Uefi { code, .. } => code.filename,
        other => panic!("not UEFI: {other:?}"),
    }
}

#[test]
fn picks_plain_uefi_unless_secure_boot_is_asked_for() {
    let f = Fixture::new();
    // Debian's order: the secure-boot descriptors sort first.
    f.write(
        "share/40-secure.json",
        &uefi_descriptor(
            &f.path("CODE.secboot.fd"),
            &f.path("VARS.fd"),
            &["requires-smm", "secure-boot"],
            "pc-q35-*",
        ),
    );
    f.write(
        "share/60-plain.json",
        &uefi_descriptor(
            &f.path("CODE.fd"),
            &f.path("VARS.fd"),
            &["acpi-s3"],
            "pc-q35-*",
        ),
    );
    assert_eq!(
        code_of(f.select(Interface::Uefi, false, "pc-q35-10.0").unwrap()),
        f.path("CODE.fd")
    );
    let secure = f.select(Interface::Uefi, true, "pc-q35-10.0").unwrap();
    assert!(matches!(
        &secure,
        Firmware::Uefi {
            requires_smm: true,
            ..
        }
    ));
    assert_eq!(code_of(secure), f.path("CODE.secboot.fd"));
}

#[test]
fn later_directories_override_by_file_name() {
    let f = Fixture::new();
    f.write(
        "share/60-plain.json",
        &uefi_descriptor(&f.path("CODE.fd"), &f.path("VARS.fd"), &[], "pc-q35-*"),
    );
    f.write(
        "user/60-plain.json",
        &uefi_descriptor(&f.path("CODE.user.fd"), &f.path("VARS.fd"), &[], "pc-q35-*"),
    );
    assert_eq!(
        code_of(f.select(Interface::Uefi, false, "pc-q35-9.2").unwrap()),
        f.path("CODE.user.fd")
    );
    // An empty file masks the distro's descriptor of the same name.
    f.write("user/60-plain.json", "");
    assert!(matches!(
        f.select(Interface::Uefi, false, "pc-q35-9.2"),
        Err(FirmwareError::NoUefi { .. })
    ));
}

#[test]
fn lower_file_names_win_across_directories() {
    let f = Fixture::new();
    f.write(
        "share/70-share.json",
        &uefi_descriptor(&f.path("CODE.fd"), &f.path("VARS.fd"), &[], "pc-q35-*"),
    );
    f.write(
        "etc/10-etc.json",
        &uefi_descriptor(&f.path("CODE.user.fd"), &f.path("VARS.fd"), &[], "pc-q35-*"),
    );
    assert_eq!(
        code_of(f.select(Interface::Uefi, false, "pc-q35-9.2").unwrap()),
        f.path("CODE.user.fd")
    );
}

#[test]
fn machine_and_missing_files_rule_descriptors_out() {
    let f = Fixture::new();
    f.write(
        "share/10-i440fx.json",
        &uefi_descriptor(
            &f.path("CODE.user.fd"),
            &f.path("VARS.fd"),
            &[],
            "pc-i440fx-*",
        ),
    );
    f.write(
        "share/20-missing.json",
        &uefi_descriptor(&f.path("GONE.fd"), &f.path("VARS.fd"), &[], "pc-q35-*"),
    );
    f.write("share/30-broken.json", "{ not json");
    f.write(
        "share/40-ok.json",
        &uefi_descriptor(&f.path("CODE.fd"), &f.path("VARS.fd"), &[], "pc-q35-*"),
    );
    assert_eq!(
        code_of(f.select(Interface::Uefi, false, "pc-q35-10.0").unwrap()),
        f.path("CODE.fd")
    );
}

#[test]
fn no_uefi_names_the_package() {
    let f = Fixture::new();
    let err = f
        .select(Interface::Uefi, false, "pc-q35-10.0")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`ovmf`"), "{err}");
    assert!(err.contains(&f.path("user").display().to_string()), "{err}");
}

#[test]
fn bios_defaults_to_qemus_own() {
    let f = Fixture::new();
    assert_eq!(
        f.select(Interface::Bios, false, "pc-q35-10.0").unwrap(),
        Firmware::Bios { file: None }
    );
    f.write(
        "share/50-seabios.json",
        &format!(
            r#"{{"interface-types": ["bios"], "mapping": {{"device": "memory", "filename": "{}"}}, "targets": [{{"architecture": "x86_64", "machines": ["pc-*"]}}]}}"#,
            f.path("CODE.fd").display()
        ),
    );
    assert_eq!(
        f.select(Interface::Bios, false, "pc-q35-10.0").unwrap(),
        Firmware::Bios {
            file: Some(f.path("CODE.fd"))
        }
    );
}

#[test]
fn nvram_is_copied_once() {
    let f = Fixture::new();
    let nvram = f.path("vm/nvram.fd");
    std::fs::create_dir_all(f.path("vm")).unwrap();
    assert!(ensure_nvram(&f.path("VARS.fd"), &nvram).unwrap());
    std::fs::write(&nvram, "guest wrote variables").unwrap();
    assert!(!ensure_nvram(&f.path("VARS.fd"), &nvram).unwrap());
    assert_eq!(
        std::fs::read_to_string(&nvram).unwrap(),
        "guest wrote variables"
    );
}

#[test]
fn search_order_is_distro_sysadmin_user() {
    let dirs = search_dirs(Some(Path::new("/home/u/.config")));
    assert_eq!(
        dirs,
        [
            PathBuf::from("/usr/share/qemu/firmware"),
            PathBuf::from("/etc/qemu/firmware"),
            PathBuf::from("/home/u/.config/qemu/firmware")
        ]
    );
}

/// The descriptors installed on this machine, when there are any, parse and
/// yield the non-secure-boot build.
#[test]
fn host_descriptors_parse() {
    let dirs = search_dirs(None);
    let descriptors = load(&dirs).unwrap();
    if descriptors.is_empty() {
        assert!(
            std::env::var("RUM_E2E").as_deref() != Ok("1"),
            "no firmware descriptors: install ovmf"
        );
        eprintln!("skipped: no firmware descriptors on this host (package ovmf)");
        return;
    }
    let request = Request {
        architecture: "x86_64",
        machine: "pc-q35-10.0",
        interface: Interface::Uefi,
        secure_boot: false,
    };
    match select(&descriptors, &request, &dirs).unwrap() {
        Firmware::Uefi {
            requires_smm, code, ..
        } => {
            assert!(!requires_smm);
            assert!(code.filename.is_file());
        }
        other => panic!("{other:?}"),
    }
}
