//! Guest RAM in a file on /dev/shm, which snapshots copy beside the disks
//! instead of writing it into the qcow2: the snapshot really holds the
//! guest's memory (a file on the guest's tmpfs comes back), `status` and
//! `snapshot list` say so with its cost, a RAM copy deleted or truncated
//! behind rum's back is refused with the VM left as it was, a rum killed
//! in the middle of the copy leaves no listed snapshot and a VM that goes
//! on, and a snapshot loads into a fresh QEMU after `down`. One boot; a
//! second on XFS, where each copy shares the blocks of the one before, and
//! a copy in the layout an earlier rum wrote still loads.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use support::{At, E2e, LoopFs, may_mount};

/// Memory only: a file on the guest's tmpfs is in RAM, not on its disk.
const IN_RAM: &str = "/dev/shm/rum-test-marker";

fn snapshots(env: &E2e) -> Vec<Value> {
    env.rum_data(&["snapshot", "list"])["snapshots"]
        .as_array()
        .unwrap()
        .clone()
}

fn ram_file_of(env: &E2e, name: &str) -> PathBuf {
    let found = snapshots(env)
        .into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no snapshot {name}"));
    PathBuf::from(found["ram_file"].as_str().expect("a RAM file"))
}

/// Rewrites the packed copy `path` in the guest's own layout (page n at
/// n × 4 KiB, zero pages holes) and drops its record's layout: a snapshot
/// as rum made it before copies were packed.
fn as_made_before_packing(path: &Path) {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const PAGE: usize = 4096;
    let packed = std::fs::read(path).unwrap();
    assert_eq!(&packed[..8], b"RUMPACK1");
    let pages = u64::from_le_bytes(packed[8..16].try_into().unwrap()) as usize;
    let slots = PAGE + (pages * 4).div_ceil(PAGE) * PAGE;
    std::fs::remove_file(path).unwrap();
    let old = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    old.set_len((pages * PAGE) as u64).unwrap();
    for page in 0..pages {
        let at = PAGE + page * 4;
        let slot = u32::from_le_bytes(packed[at..at + 4].try_into().unwrap()) as usize;
        if slot != 0 {
            let bytes = &packed[slots + (slot - 1) * PAGE..][..PAGE];
            old.write_all_at(bytes, (page * PAGE) as u64).unwrap();
        }
    }
    let state = path.parent().unwrap().parent().unwrap().join("state.json");
    let mut record: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let copies = record["snapshots"].as_object_mut().unwrap().values_mut();
    for snapshot in copies {
        if snapshot["ram"]["file"].as_str() == path.to_str() {
            let ram = snapshot["ram"].as_object_mut().unwrap();
            assert_eq!(ram.remove("layout"), Some("packed".into()));
        }
    }
    std::fs::write(&state, serde_json::to_vec(&record).unwrap()).unwrap();
}

fn marker(env: &E2e) -> String {
    env.guest_sh(&format!("cat {IN_RAM} 2>/dev/null || echo none"))
}

#[test]
fn snapshots_of_a_vm_whose_ram_is_a_file() {
    let Some(env) = support::e2e() else { return };
    env.write_rum_toml("");
    env.rum(&["up", "-d"]).assert_success();

    let status = env.rum_data(&["status"]);
    let live = PathBuf::from(status["ram"]["live"].as_str().expect("RAM in a file"));
    assert!(live.starts_with("/dev/shm"), "{status}");
    assert!(
        live.exists(),
        "the live RAM file is there while the VM runs"
    );
    let pre = snapshots(&env);
    assert_eq!(pre.len(), 1, "{pre:?}");
    // The qcow2 holds device state only; the RAM copy holds what the guest
    // touched, far less than its 1024 MiB.
    assert!(
        pre[0]["vm_state_size"].as_u64().unwrap() < 16 << 20,
        "{pre:?}"
    );
    let cost = pre[0]["disk_bytes"].as_u64().unwrap();
    assert!(cost > 16 << 20 && cost < 900 << 20, "{pre:?}");
    let list = env.rum(&["snapshot", "list"]);
    assert!(list.stdout.contains("RAM file"), "{list}");

    // The snapshot holds the guest's memory: a file only in RAM comes back.
    env.guest_sh(&format!("echo kept > {IN_RAM}"));
    env.rum(&["snapshot", "create", "a"]).assert_success();
    env.guest_sh(&format!("echo changed > {IN_RAM}"));
    env.rum(&["snapshot", "restore", "a"]).assert_success();
    assert_eq!(marker(&env), "kept\n");
    // Page hashes beside the copy make the restore read only what changed;
    // torn (a crash before they reached the disk), pages are compared.
    let hashes = PathBuf::from(format!("{}.sum", ram_file_of(&env, "a").display()));
    assert!(hashes.exists(), "{}", hashes.display());
    std::fs::write(&hashes, b"torn").unwrap();
    env.guest_sh(&format!("echo changed > {IN_RAM}"));
    env.rum(&["snapshot", "restore", "a"]).assert_success();
    assert_eq!(marker(&env), "kept\n");

    // A RAM copy cut short, then gone: refused, naming the snapshot and the
    // file; the running VM is untouched.
    env.guest_sh(&format!("echo after > {IN_RAM}"));
    let copy = ram_file_of(&env, "a");
    std::fs::File::options()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let refused = env.rum(&["snapshot", "restore", "a"]);
    assert_eq!(refused.status.code(), Some(1), "{refused}");
    assert!(
        refused.stderr.contains("`a` snapshot's RAM file")
            && refused.stderr.contains(copy.to_str().unwrap())
            && refused.stderr.contains("truncated"),
        "{refused}"
    );
    assert_eq!(marker(&env), "after\n", "the VM went on as it was");
    std::fs::remove_file(&copy).unwrap();
    let refused = env.rum(&["snapshot", "restore", "a"]);
    assert_eq!(refused.status.code(), Some(1), "{refused}");
    assert!(refused.stderr.contains("is gone"), "{refused}");
    assert_eq!(marker(&env), "after\n");
    env.rum(&["snapshot", "delete", "a"]).assert_success();

    // rum killed while it copies the RAM (the VM paused): the snapshot is
    // not listed, and the next command lets the VM go on.
    env.kill_rum(&["snapshot", "create", "b"], At::Point("ram_copy"));
    let names: Vec<_> = snapshots(&env).iter().map(|s| s["name"].clone()).collect();
    assert_eq!(
        names,
        ["pre-provision"],
        "only complete snapshots are listed"
    );
    env.rum(&["snapshot", "create", "c"]).assert_success();
    assert_eq!(marker(&env), "after\n", "the VM runs again");
    let names: Vec<_> = snapshots(&env).iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, ["pre-provision", "c"]);

    // After `down`, the live file is gone and a snapshot loads into a fresh
    // QEMU; the pre-provision one has no marker at all.
    env.rum(&["down"]).assert_success();
    assert!(!live.exists(), "the VM's memory is freed with it");
    env.rum(&["snapshot", "restore", "c"]).assert_success();
    assert_eq!(marker(&env), "after\n");
    env.rum(&["snapshot", "restore", "pre-provision"])
        .assert_success();
    assert_eq!(marker(&env), "none\n");

    env.rum(&["destroy", "-f"]).assert_success();
    assert!(!live.exists());
    assert!(
        !copy.parent().unwrap().exists(),
        "the copies go with the VM"
    );
    assert!(env.procs.strays().is_empty());
}

#[test]
fn on_xfs_a_copy_costs_what_changed_since_the_last() {
    let Some(mut env) = support::e2e() else {
        return;
    };
    if !may_mount() {
        return;
    }
    let fs = LoopFs::new(&env.root, "xfs", 3072);
    env.xdg.data = fs.mount.join("data");
    env.write_rum_toml("");
    env.rum(&["up", "-d"]).assert_success();
    assert_eq!(env.rum_data(&["status"])["ram"]["reflink"], true);

    let free = || {
        let stat = nix::sys::statvfs::statvfs(&fs.mount).unwrap();
        stat.blocks_available() as u64 * stat.fragment_size() as u64
    };
    env.guest_sh(&format!("echo one > {IN_RAM}"));
    let before = free();
    env.rum(&["snapshot", "create", "one"]).assert_success();
    let used = before.saturating_sub(free());
    let all = snapshots(&env);
    let cost = |name: &str| {
        all.iter().find(|s| s["name"] == name).unwrap()["disk_bytes"]
            .as_u64()
            .unwrap()
    };
    // The first copy holds all the guest touched; the next only what changed.
    assert!(
        cost("one") * 4 < cost("pre-provision"),
        "one: {}, pre-provision: {}",
        cost("one"),
        cost("pre-provision")
    );
    assert!(
        used * 4 < cost("pre-provision"),
        "the filesystem lost {used} bytes for a copy of {}",
        cost("pre-provision")
    );

    env.guest_sh(&format!("echo two > {IN_RAM}"));
    env.rum(&["snapshot", "restore", "one"]).assert_success();
    assert_eq!(marker(&env), "one\n");
    env.rum(&["snapshot", "restore", "pre-provision"])
        .assert_success();
    assert_eq!(marker(&env), "none\n");

    // A copy an earlier rum made, in the guest's own layout, still loads,
    // and the next save against it (the only other copy left) makes a
    // whole copy of its own.
    as_made_before_packing(&ram_file_of(&env, "one"));
    env.rum(&["snapshot", "restore", "one"]).assert_success();
    assert_eq!(marker(&env), "one\n");
    env.rum(&["snapshot", "delete", "pre-provision"])
        .assert_success();
    env.guest_sh(&format!("echo three > {IN_RAM}"));
    env.rum(&["snapshot", "create", "three"]).assert_success();
    // A whole copy: this save wrote every slot of it, none shared.
    let listed = snapshots(&env);
    let three = listed.iter().find(|s| s["name"] == "three").unwrap()["disk_bytes"]
        .as_u64()
        .unwrap();
    let copy = ram_file_of(&env, "three");
    let mut header = [0u8; 24];
    std::io::Read::read_exact(&mut std::fs::File::open(&copy).unwrap(), &mut header).unwrap();
    let slots = u64::from_le_bytes(header[16..24].try_into().unwrap());
    let state = copy.parent().unwrap().parent().unwrap().join("state.json");
    assert!(
        slots > 1000 && three >= slots * 4096,
        "{three} bytes written for {slots} slots; {listed:?}; {}",
        std::fs::read_to_string(state).unwrap()
    );
    env.rum(&["snapshot", "restore", "one"]).assert_success();
    assert_eq!(marker(&env), "one\n");
    env.rum(&["snapshot", "restore", "three"]).assert_success();
    assert_eq!(marker(&env), "three\n");
    env.rum(&["destroy", "-f"]).assert_success();
    assert!(env.procs.strays().is_empty());
}
