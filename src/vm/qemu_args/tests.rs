use super::*;
use crate::vm::spec::{Drive, Forward, Share};
use rum_firmware::FlashFile;

fn spec() -> VmSpec {
    let run = PathBuf::from("/run/user/1000/rum/web-1234abcd");
    let data = PathBuf::from("/home/u/.local/share/rum/web-1234abcd");
    VmSpec {
        name: "web".into(),
        accel: Accel::Kvm,
        machine: "pc-q35-10.0".into(),
        cpus: 2,
        memory_mb: 2048,
        firmware: Firmware::Bios { file: None },
        nvram: data.join("nvram.fd"),
        overlay: data.join("disk.qcow2"),
        drives: vec![Drive {
            name: "data".into(),
            path: data.join("drives/data.qcow2"),
            serial: "data".into(),
        }],
        seed: data.join("seed.iso"),
        agent: AgentChannel::Serial {
            socket: run.join("agent.sock"),
        },
        mac: "52:54:00:9f:05:ca".into(),
        ssh_port: 40022,
        forwards: vec![Forward {
            bind: "127.0.0.1".parse().unwrap(),
            host: 8080,
            guest: 80,
        }],
        shares: vec![],
        hotplug_ports: 0,
        ram_file: None,
        free_page_reporting: false,
        vm_generation_id: false,
        tcg_la57_off: false,
        qmp: run.join("qmp.sock"),
        serial_log: data.join("logs/serial.log"),
        qemu_log: data.join("logs/qemu.log"),
        console: run.join("tty.sock"),
        pid_file: run.join("qemu.pid"),
        paused: false,
    }
}

fn render(spec: &VmSpec) -> String {
    qemu_args(spec)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn bios_vm_with_a_drive_a_port_and_the_serial_agent() {
    let expected = "\
-name
web,process=rum-web
-nodefaults
-no-user-config
-display
none
-daemonize
-pidfile
/run/user/1000/rum/web-1234abcd/qemu.pid
-d
guest_errors
-D
/home/u/.local/share/rum/web-1234abcd/logs/qemu.log
-machine
pc-q35-10.0,accel=kvm
-cpu
host
-smp
2
-m
2048M
-qmp
unix:/run/user/1000/rum/web-1234abcd/qmp.sock,server=on,wait=off
-chardev
socket,id=serial0,path=/run/user/1000/rum/web-1234abcd/tty.sock,server=on,wait=off,logappend=on,logfile=/home/u/.local/share/rum/web-1234abcd/logs/serial.log
-serial
chardev:serial0
-blockdev
driver=file,node-name=root-file,discard=unmap,filename=/home/u/.local/share/rum/web-1234abcd/disk.qcow2
-blockdev
driver=qcow2,node-name=root,file=root-file
-device
virtio-blk-pci,drive=root,bootindex=0
-blockdev
driver=file,node-name=drive-data-file,discard=unmap,filename=/home/u/.local/share/rum/web-1234abcd/drives/data.qcow2
-blockdev
driver=qcow2,node-name=drive-data,file=drive-data-file
-device
virtio-blk-pci,drive=drive-data,serial=data
-device
virtio-scsi-pci,id=scsi0
-blockdev
driver=file,node-name=seed-file,read-only=on,filename=/home/u/.local/share/rum/web-1234abcd/seed.iso
-blockdev
driver=raw,node-name=seed,file=seed-file,read-only=on
-device
scsi-cd,drive=seed,bus=scsi0.0
-netdev
user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22,hostfwd=tcp:127.0.0.1:8080-:80
-device
virtio-net-pci,netdev=net0,mac=52:54:00:9f:05:ca
-device
virtio-serial-pci,id=vser0
-chardev
socket,id=agent0,server=on,wait=off,path=/run/user/1000/rum/web-1234abcd/agent.sock
-device
virtserialport,bus=vser0.0,chardev=agent0,name=org.rum.agent.0
-device
virtio-rng-pci";
    assert_eq!(render(&spec()), expected);
    assert_eq!(spec().snapshot_nodes(), ["root", "drive-data"]);
}

#[test]
fn spare_root_ports_come_last_with_shared_memory() {
    let mut spec = spec();
    spec.hotplug_ports = 2;
    let plain = render(&spec);
    spec.shares = vec![Share {
        tag: "mnt-later".into(),
        socket: "/run/x/fs101.sock".into(),
        source: "/srv".into(),
        target: "/mnt/later".into(),
        readonly: false,
        port: Some(1),
    }];
    assert!(
        render(&spec).ends_with("-chardev\nsocket,id=hpfs1,path=/run/x/fs101.sock\n-device\nvhost-user-fs-pci,id=hpdev1,chardev=hpfs1,tag=mnt-later,bus=hp1"),
        "a plugged share starts on its port, after the ports: {}",
        render(&spec)
    );
    spec.shares.clear();
    assert_eq!(render(&spec), plain);
    let args = render(&spec);
    assert!(
        args.contains("memory-backend=mem0")
            && args.contains("memory-backend-memfd,id=mem0,size=2048M,share=on"),
        "a share can be plugged in later only into shared memory:\n{args}"
    );
    assert!(
        args.ends_with("virtio-rng-pci\n-device\npcie-root-port,id=hp0,chassis=1,bus=pcie.0\n-device\npcie-root-port,id=hp1,chassis=2,bus=pcie.0"),
        "{args}"
    );
}

#[test]
fn ram_in_a_file_is_shared_and_its_path_escaped() {
    let mut spec = spec();
    spec.hotplug_ports = 1;
    spec.ram_file = Some("/dev/shm/rum-0/a,b.ram".into());
    spec.free_page_reporting = true;
    spec.vm_generation_id = true;
    let args = render(&spec);
    assert!(
        args.ends_with(
            "-device\nvirtio-balloon-pci,id=balloon0,free-page-reporting=on\n-device\nvmgenid,id=vmgenid0,guid=auto"
        ),
        "the balloon and the generation id come after the spare ports: {args}"
    );
    assert!(
        args.contains("-object\nmemory-backend-file,id=mem0,size=2048M,share=on,mem-path=/dev/shm/rum-0/a,,b.ram\n")
            && args.contains("memory-backend=mem0")
            && !args.contains("memfd"),
        "{args}"
    );
}

#[test]
fn uefi_tcg_vm_with_virtiofs_paused_and_vsock() {
    let mut spec = spec();
    spec.accel = Accel::Tcg;
    spec.paused = true;
    spec.firmware = Firmware::Uefi {
        code: FlashFile {
            filename: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            format: "raw".into(),
        },
        vars_template: FlashFile {
            filename: "/usr/share/OVMF/OVMF_VARS_4M.fd".into(),
            format: "raw".into(),
        },
        requires_smm: false,
        description: String::new(),
    };
    spec.shares = vec![Share {
        tag: "mnt-project".into(),
        socket: "/run/x/fs0.sock".into(),
        source: "/srv/project".into(),
        target: "/mnt/project".into(),
        readonly: false,
        port: None,
    }];
    spec.agent = AgentChannel::Vsock { cid: 1234 };
    let args = render(&spec);
    for expected in [
        "pc-q35-10.0,accel=tcg,smm=off,pflash0=fw-code,pflash1=fw-vars,memory-backend=mem0\n-cpu\nmax",
        "-object\nmemory-backend-memfd,id=mem0,size=2048M,share=on",
        "-S\n",
        "-blockdev\ndriver=file,node-name=fw-code,read-only=on,filename=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "-blockdev\ndriver=file,node-name=fw-vars,filename=/home/u/.local/share/rum/web-1234abcd/nvram.fd",
        "-chardev\nsocket,id=fs0,path=/run/x/fs0.sock\n-device\nvhost-user-fs-pci,chardev=fs0,tag=mnt-project",
        "-device\nvhost-vsock-pci,guest-cid=1234",
    ] {
        assert!(args.contains(expected), "missing {expected:?} in\n{args}");
    }
    assert!(!args.contains("virtserialport"));
    assert!(
        !args.contains("cfi.pflash01"),
        "no secure pflash without SMM"
    );
}

#[test]
fn a_tcg_vm_made_now_has_no_5_level_paging_and_kvm_keeps_the_host_cpu() {
    let mut spec = spec();
    spec.accel = Accel::Tcg;
    spec.tcg_la57_off = true;
    assert!(render(&spec).contains("-cpu\nmax,la57=off\n"));
    spec.accel = Accel::Kvm;
    assert!(render(&spec).contains("-cpu\nhost\n"));
}

#[test]
fn commas_in_paths_and_names_are_escaped() {
    let mut spec = spec();
    spec.name = "a,b".into();
    spec.overlay = "/data/with,comma/disk.qcow2".into();
    let args = render(&spec);
    assert!(args.contains("-name\na,,b,process=rum-a,,b\n"), "{args}");
    assert!(
        args.contains("filename=/data/with,,comma/disk.qcow2"),
        "{args}"
    );
}

#[test]
fn the_offline_qemu_has_only_the_disks_and_qmp() {
    let disks = crate::vm::spec::node_files(
        &["root".to_owned(), "drive-data".to_owned()],
        Path::new("/d/disk.qcow2"),
        |name| PathBuf::from(format!("/d/drives/{name}.qcow2")),
    );
    let args: Vec<String> = offline_args(Path::new("/run/x/offline-qmp.sock"), &disks)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let args = args.join("\n");
    assert!(
        args.starts_with("-nodefaults\n-machine\nnone\n-display\nnone\n-S\n"),
        "{args}"
    );
    assert!(
        args.contains("-qmp\nunix:/run/x/offline-qmp.sock,server=on,wait=off"),
        "{args}"
    );
    assert!(args.contains("driver=file,node-name=root-file,discard=unmap,filename=/d/disk.qcow2\n-blockdev\ndriver=qcow2,node-name=root,file=root-file"), "{args}");
    assert!(
        args.contains("node-name=drive-data-file,discard=unmap,filename=/d/drives/data.qcow2"),
        "{args}"
    );
    assert!(!args.contains("-device"), "no guest devices: {args}");
}
