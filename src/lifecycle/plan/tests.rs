use super::*;
use crate::instance::{BaseDirs, InstanceId};
use std::path::{Path, PathBuf};

fn config(extra: &str) -> Config {
    let text = format!(
        "[image]\nbase = \"debian-12\"\n\n[resources]\ncpus = 2\nmemory_mb = 1024\n\n{extra}"
    );
    crate::config::parse_str(&text, Path::new("/srv/web/rum.toml"))
        .expect("a valid config")
        .config
}

fn paths() -> InstancePaths {
    let dirs = BaseDirs {
        data: "/home/u/.local/share/rum".into(),
        runtime: Some("/run/user/1000/rum".into()),
        runtime_fallback: "/tmp/rum-1000".into(),
        cache: "/home/u/.cache/rum".into(),
    };
    InstancePaths::resolve(
        InstanceId::new("web", Path::new("/srv/web/rum.toml")),
        &dirs,
    )
    .unwrap()
}

fn host(kvm: bool, vhost_vsock: bool) -> Host {
    Host {
        qemu: PathBuf::from("qemu-system-x86_64"),
        qemu_version: "10.0.2".into(),
        kvm: if kvm { Kvm::Hardware } else { Kvm::Absent },
        vhost_vsock,
    }
}

fn inputs<'a>(
    config: &'a Config,
    paths: &'a InstancePaths,
    host: &'a Host,
    accel_env: Option<&'a str>,
) -> Inputs<'a> {
    Inputs {
        config,
        paths,
        host,
        machine: "pc-q35-10.0".into(),
        accel_env,
        firmware: Firmware::Bios { file: None },
        mac: "52:54:00:00:00:01",
        ssh_port: 40022,
        paused: false,
        hotplug_ports: 4,
        shares: &[],
        plugged: &[],
        ram: None,
        free_page_reporting: true,
        vm_generation_id: true,
        tcg_la57_off: true,
    }
}

#[test]
fn kvm_where_it_works_else_tcg_with_a_warning() {
    let (c, p) = (config(""), paths());
    let kvm = host(true, false);
    let plan = super::plan(&inputs(&c, &p, &kvm, None)).unwrap();
    assert_eq!(plan.spec.accel, Accel::Kvm);
    assert!(plan.warnings.is_empty());
    let no_kvm = host(false, false);
    let plan = super::plan(&inputs(&c, &p, &no_kvm, None)).unwrap();
    assert_eq!(plan.spec.accel, Accel::Tcg);
    assert_eq!(plan.warnings.len(), 1);
    // RUM_ACCEL wins over the config, and a wrong value is named.
    let plan = super::plan(&inputs(&c, &p, &kvm, Some("tcg"))).unwrap();
    assert_eq!(plan.spec.accel, Accel::Tcg);
    let err = super::plan(&inputs(&c, &p, &kvm, Some("hvf")))
        .err()
        .unwrap();
    assert!(err.is_usage(), "{err}");
    let err = super::plan(&inputs(&c, &p, &no_kvm, Some("kvm")))
        .err()
        .unwrap();
    assert!(err.to_string().contains("RUM_ACCEL"), "{err}");
    // A software KVM: `auto` says why it takes TCG; `kvm` is obeyed.
    let emulated = Host {
        kvm: Kvm::Emulated,
        ..no_kvm
    };
    let plan = super::plan(&inputs(&c, &p, &emulated, None)).unwrap();
    assert_eq!(plan.spec.accel, Accel::Tcg);
    assert!(
        plan.warnings[0].contains("software KVM"),
        "{:?}",
        plan.warnings
    );
    let plan = super::plan(&inputs(&c, &p, &emulated, Some("kvm"))).unwrap();
    assert_eq!(plan.spec.accel, Accel::Kvm);
}

#[test]
fn the_agent_uses_vsock_only_where_the_host_has_it() {
    let (c, p) = (config(""), paths());
    let without = host(false, false);
    let spec = super::plan(&inputs(&c, &p, &without, None)).unwrap().spec;
    assert_eq!(
        spec.agent,
        AgentChannel::Serial {
            socket: p.agent_socket()
        }
    );
    let with = host(false, true);
    let spec = super::plan(&inputs(&c, &p, &with, None)).unwrap().spec;
    let cid = vsock_cid(p.id.as_str());
    assert!(cid >= 3);
    assert_eq!(spec.agent, AgentChannel::Vsock { cid });
    let asked = config("[advanced]\nagent_transport = \"vsock\"\n");
    assert!(matches!(
        super::plan(&inputs(&asked, &p, &without, None)),
        Err(UpError::NoVsock)
    ));
}

#[test]
fn disks_shares_and_forwards_come_from_the_config() {
    let c = config(
        "[drives.a-rather-long-drive-name-indeed]\nsize = \"1G\"\n\n[[mounts]]\nsource = \"/tmp\"\ntarget = \"/mnt/tmp\"\n\n[[ports]]\nhost = 8080\nguest = 80\n",
    );
    let p = paths();
    let h = host(false, false);
    let shares: Vec<ShareRecord> = c.mounts.iter().map(ShareRecord::of).collect();
    let plugged = [Plugged {
        port: 2,
        share: ShareRecord {
            tag: "mnt-later".into(),
            source: "/srv".into(),
            target: "/mnt/later".into(),
            readonly: true,
        },
    }];
    let spec = super::plan(&Inputs {
        shares: &shares,
        plugged: &plugged,
        ..inputs(&c, &p, &h, None)
    })
    .unwrap()
    .spec;
    assert_eq!(spec.drives.len(), 1);
    assert_eq!(spec.drives[0].serial, "a-rather-long-drive-");
    assert_eq!(spec.shares[0].socket, p.virtiofs_socket(0));
    assert_eq!(
        (spec.shares[1].port, &spec.shares[1].socket),
        (
            Some(2),
            &p.virtiofs_socket(crate::vm::spec::PLUGGED_INDEX + 2)
        ),
        "a snapshot's plugged share starts on its port"
    );
    assert_eq!(DeviceSet::of(&spec).plugged, plugged);
    assert_eq!(DeviceSet::of(&spec).mounts, ["mnt-tmp"]);
    assert_eq!(spec.forwards[0].to_string(), "127.0.0.1:8080 → 80");
    let info = record(&spec, 7, 100, "10.0.2", vec![8]);
    assert_eq!(info.devices, DeviceSet::of(&spec));
    assert_eq!(
        info.snapshot_nodes,
        ["root", "drive-a-rather-long-drive-name-indeed"]
    );
    assert_eq!(info.mounts[0].to_string(), "/tmp → /mnt/tmp");
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["accel"], "tcg");
    assert_eq!(json["firmware"], "bios");
    assert_eq!(json["agent_transport"], "serial");
}

#[test]
fn uefi_only_for_images_that_need_it() {
    let auto = FirmwareChoice::Auto;
    assert_eq!(
        firmware_interface(auto, Some(BootNeeds::Uefi)),
        Interface::Uefi
    );
    assert_eq!(
        firmware_interface(auto, Some(BootNeeds::Bios)),
        Interface::Bios
    );
    assert_eq!(firmware_interface(auto, None), Interface::Bios);
    assert_eq!(
        firmware_interface(FirmwareChoice::Uefi, None),
        Interface::Uefi
    );
}
