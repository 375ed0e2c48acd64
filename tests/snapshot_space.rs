//! Snapshots against a small disk: a save that cannot fit is refused with
//! the figures, a disk that fills up in the middle of a save (into the
//! qcow2, or of a RAM copy beside it) leaves the older snapshots intact and
//! the image consistent, and a checkpoint that would not fit is skipped
//! while provisioning goes on. Needs root (loop mount).

mod support;

use std::path::Path;
use std::process::Command;
use support::{E2e, LoopFs, RumRun, may_mount};

/// rum with its data on the small disk.
fn rum(env: &E2e, data: &Path, vars: &[(&str, &str)], args: &[&str]) -> RumRun {
    let data = data.to_str().expect("UTF-8 path");
    let mut all = vec![("XDG_DATA_HOME", data)];
    all.extend_from_slice(vars);
    env.rum_env(&all, args)
}

/// Takes snapshots `s0`, `s1`, … (space check lifted, `after` run after
/// each) until one fails because the disk filled up in the middle of it,
/// which must say so; returns the names that were saved.
fn fill_with_snapshots(env: &E2e, data: &Path, after: impl Fn(usize)) -> Vec<String> {
    let skip = [("RUM_TEST_SKIP_SPACE_CHECK", "1")];
    let mut saved = Vec::new();
    // Bounded by the disk, not by a guess at a snapshot's size: the guest's
    // vmstate shrank from ~250 to ~130 MiB once, and six then fitted.
    for i in 0..24 {
        let name = format!("s{i}");
        let run = rum(env, data, &skip, &["snapshot", "create", &name]);
        if !run.status.success() {
            assert!(!saved.is_empty(), "not even one snapshot fit: {run}");
            assert!(
                run.stderr.contains("filled up while saving")
                    && run.stderr.contains("older ones are intact"),
                "{run}"
            );
            return saved;
        }
        saved.push(name);
        after(i);
    }
    panic!("the small disk never filled up");
}

/// Writes `file` until the filesystem has no byte left.
fn fill_up(file: &Path) {
    use std::io::Write;
    let mut out = std::fs::File::create(file).unwrap();
    let block = vec![0xa5u8; 1 << 20];
    loop {
        match out.write(&block) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let small = [0xa5u8; 512];
    while out.write(&small).is_ok_and(|n| n > 0) {}
    let _ = out.sync_all();
}

/// Allocates `len` bytes of blocks from the first hole of `file` on: its
/// data stays as it is (fallocate without KEEP_SIZE changes, in range).
fn give_blocks_to_next_clusters(file: &Path, len: i64) {
    use nix::fcntl::{FallocateFlags, fallocate};
    use nix::unistd::{Whence, lseek};
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    let hole = lseek(&f, 0, Whence::SeekHole).unwrap();
    fallocate(&f, FallocateFlags::FALLOC_FL_KEEP_SIZE, hole, len).unwrap();
}

#[test]
fn snapshots_on_a_disk_that_fills_up() {
    let Some(env) = support::e2e() else { return };
    if !may_mount() {
        return;
    }
    let disk = LoopFs::new(&env.root, "ext4", 1000);
    let data = disk.mount.join("data");
    // RAM in memfd: snapshots write it into the qcow2.
    env.write_rum_toml("[advanced]\nguest_ram = \"memfd\"\n");

    // Less free space than the guest's RAM: the pre-provision save is refused.
    let up = rum(&env, &data, &[], &["up", "-d"]);
    assert_eq!(up.status.code(), Some(1), "{up}");
    assert!(
        up.stderr.contains("MiB are free in") && up.stderr.contains("needs about 1024 MiB"),
        "{up}"
    );

    // Save until the disk is full in the middle of one.
    let saved = fill_with_snapshots(&env, &data, |_| {});

    let list = rum(&env, &data, &[], &["snapshot", "list"]);
    for name in &saved {
        assert!(list.stdout.contains(name.as_str()), "{name} lost: {list}");
    }

    // Not a byte left: a delete still deletes (QEMU needs a few clusters
    // for it: the data dir's reserve gives them), and the next command goes
    // by what the image holds.
    let filler = disk.mount.join("filler");
    fill_up(&filler);
    let delete = rum(&env, &data, &[], &["snapshot", "delete", "s0"]);
    delete.assert_success();
    let list = rum(&env, &data, &[], &["snapshot", "list"]);
    assert!(!list.stdout.contains("s0"), "{list}");
    std::fs::remove_file(&filler).unwrap();
    let state_file = std::fs::read_dir(data.join("rum"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("state.json");
    let recorded = |name: &str| {
        std::fs::read_to_string(&state_file)
            .unwrap()
            .contains(&format!("\"{name}\""))
    };
    let deleted = rum(&env, &data, &[], &["snapshot", "delete", "s1"]);
    deleted.assert_success();
    assert!(
        !recorded("s0") && !recorded("s1"),
        "the record agrees with the image again"
    );

    // A guest whose disk cannot grow on the full host disk is paused by
    // QEMU: rum says so (not that the agent went away), and `rum up` lets
    // it go on once there is room.
    env.write_rum_toml(
        "[advanced]\nguest_ram = \"memfd\"\n\n\
         [provision.boot]\nname = \"grow\"\n\
         script = \"dd if=/dev/urandom of=/opt/grow bs=1M count=64 conv=fsync\"\n",
    );
    fill_up(&filler);
    let grow = rum(&env, &data, &[], &["provision"]);
    assert_eq!(grow.status.code(), Some(1), "{grow}");
    let paused = "The VM is paused: QEMU could not write its disk because the disk holding";
    assert!(grow.stderr.contains(paused), "{grow}");
    let up = rum(&env, &data, &[], &["up"]);
    assert!(
        up.stderr.contains(paused) && up.stderr.contains("Free some space"),
        "still no room: {up}"
    );
    std::fs::remove_file(&filler).unwrap();
    let up = rum(&env, &data, &[], &["up"]);
    assert!(
        up.stderr.contains("there is room again, so it goes on"),
        "{up}"
    );
    let ssh = rum(&env, &data, &[], &["ssh", "--", "echo", "going-on"]);
    ssh.assert_success();
    assert_eq!(ssh.stdout, "going-on\n", "the guest runs again: {ssh}");

    // From here the guest must not pause: the clusters qcow2 hands out next
    // (the lowest free ones, holes since their snapshot was deleted) get
    // their blocks now, so the guest's own writes need none while full.
    let overlay_file = state_file.parent().unwrap().join("disk.qcow2");
    give_blocks_to_next_clusters(&overlay_file, 64 << 20);

    // Bookkeeping on a disk that fills up while a step runs: the run says
    // what it did, its records are written from the reserve, and the user
    // hears that the disk is full.
    env.write_rum_toml(
        "[advanced]\nguest_ram = \"memfd\"\n\n\
         [provision.boot]\nname = \"last\"\nscript = \"echo the-step-ran\"\n",
    );
    let data_var = [("XDG_DATA_HOME", data.to_str().unwrap())];
    let provision = |meanwhile: &dyn Fn()| {
        env.rum_paused(
            &data_var,
            &["provision"],
            "step:Running boot provisioning",
            meanwhile,
        )
    };
    let attempts = || -> u64 {
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap())
                .expect("state.json parses");
        state["provision_attempts"].as_u64().unwrap()
    };
    let before = attempts();
    let run = provision(&|| fill_up(&filler));
    std::fs::remove_file(&filler).unwrap();
    run.assert_success();
    assert!(
        run.stdout.contains("the-step-ran")
            && run
                .stderr
                .contains("is full: rum used the space it keeps in reserve"),
        "{run}"
    );
    assert_eq!(attempts(), before + 1, "recorded from the reserve");
    let instance_dir = state_file.parent().unwrap();
    let result = instance_dir.join(format!("logs/provision/{:04}/result.json", before + 1));
    assert!(result.exists(), "{} was written", result.display());

    // No reserve left either: the run still succeeds and says its record
    // could not be written; the old record stays whole.
    let reserve = instance_dir.join("reserve");
    let run = provision(&|| {
        let _ = std::fs::remove_file(&reserve);
        fill_up(&filler);
    });
    std::fs::remove_file(&filler).unwrap();
    run.assert_success();
    assert!(
        run.stdout.contains("the-step-ran") && run.stderr.contains("what rum did stands"),
        "{run}"
    );
    // The attempt was recorded as it began, before the disk filled; its end
    // was not.
    assert_eq!(attempts(), before + 2, "the record before the fill, untorn");
    let result = instance_dir.join(format!("logs/provision/{:04}/result.json", before + 2));
    assert!(
        !result.exists(),
        "{} could not be written",
        result.display()
    );
    assert!(
        std::fs::read_dir(instance_dir)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp")),
        "no temporary record left"
    );
    // With space again the next run records as always.
    let run = rum(&env, &data, &[], &["provision"]);
    run.assert_success();
    assert!(!run.stderr.contains("warning"), "{run}");
    assert_eq!(attempts(), before + 3);

    let saved = &saved[2..];
    rum(&env, &data, &[], &["down", "--force"]).assert_success();
    let overlay = std::fs::read_dir(data.join("rum"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("disk.qcow2");
    let check = Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "qemu-img check exited {:?}: {}{}",
        check.status.code(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The older snapshots are intact in the image itself. (Restoring one
    // would write state on the full disk; that path is tested elsewhere.)
    let listed = Command::new("qemu-img")
        .args(["snapshot", "-l", "-U"])
        .arg(&overlay)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for gone in ["s0", "s1"] {
        assert!(
            !listed.contains(&format!(" {gone} ")),
            "{gone} still in the image: {listed}"
        );
    }
    for name in saved {
        assert!(
            listed.contains(name.as_str()),
            "{name} missing from the image: {listed}"
        );
    }
    rum(&env, &data, &[], &["destroy", "-f"]).assert_success();
    assert!(env.procs.strays().is_empty());
}

#[test]
fn a_checkpoint_that_would_not_fit_is_skipped() {
    let Some(env) = support::e2e() else { return };
    if !may_mount() {
        return;
    }
    let disk = LoopFs::new(&env.root, "ext4", 2000);
    let data = disk.mount.join("data");
    let fill = disk.mount.join("fill");
    std::fs::create_dir_all(&fill).unwrap();
    // The first step leaves 600 MiB free on rum's disk, through a share on
    // it (virtiofs reports the host filesystem's free space): less than the
    // guest's 1024 MiB of RAM that a checkpoint may need.
    env.write_rum_toml(&format!(
        "[[mounts]]\nsource = \"{}\"\ntarget = \"/mnt/fill\"\n\n\
         [[provision.system]]\nname = \"one\"\nscript = \"\"\"\n\
         test -e /mnt/fill/ballast || fallocate -l $(( $(df -m --output=avail /mnt/fill | tail -1) - 600 ))M /mnt/fill/ballast\n\
         echo 1 >> /var/tmp/one\n\"\"\"\n\n\
         [[provision.system]]\nname = \"two\"\nscript = \"echo 2 >> /var/tmp/two\"\n\n\
         [advanced]\nguest_ram = \"memfd\"\n",
        fill.display()
    ));
    let up = rum(&env, &data, &[], &["up", "-d"]);
    up.assert_success();
    assert!(
        up.stderr
            .contains("— Keeping a checkpoint after `one` (not enough free space)"),
        "{up}"
    );
    assert!(
        up.stderr.contains("MiB are free in"),
        "the warning says why: {up}"
    );
    assert!(up.stderr.contains("✓ two"), "provisioning went on: {up}");
    let list = rum(&env, &data, &[], &["snapshot", "list"]);
    assert!(list.stdout.contains("pre-provision"), "{list}");
    assert!(!list.stdout.contains("step-one"), "{list}");

    // A retry then starts from the checkpoint there is.
    let retry = rum(&env, &data, &[], &["retry", "--from", "two"]);
    retry.assert_success();
    assert!(
        retry
            .stderr
            .contains("Restoring the `pre-provision` snapshot"),
        "{retry}"
    );
    let traces = rum(
        &env,
        &data,
        &[],
        &["exec", "--", "cat", "/var/tmp/one", "/var/tmp/two"],
    );
    traces.assert_success();
    assert_eq!(
        traces.stdout, "1\n2\n",
        "each step ran once since pre-provision"
    );
    rum(&env, &data, &[], &["destroy", "-f"]).assert_success();
    assert!(env.procs.strays().is_empty());
}

#[test]
fn ram_copies_on_a_disk_that_fills_up() {
    let Some(env) = support::e2e() else { return };
    if !may_mount() {
        return;
    }
    let disk = LoopFs::new(&env.root, "ext4", 1000);
    let data = disk.mount.join("data");
    env.write_rum_toml("");
    rum(&env, &data, &[], &["up", "-d"]).assert_success();
    let sh = |command: &str| {
        let run = rum(
            &env,
            &data,
            &[],
            &["exec", "--user", "root", "--", "sh", "-c", command],
        );
        run.assert_success();
        run.stdout.clone()
    };
    sh("echo first > /dev/shm/marker");

    // Each snapshot copies the RAM the guest touched: the disk fills up in
    // the middle of a copy.
    let saved = fill_with_snapshots(&env, &data, |i| {
        sh(&format!("echo {i} > /dev/shm/marker"));
    });
    let copies: Vec<_> = std::fs::read_dir(data.join("rum"))
        .unwrap()
        .flatten()
        .flat_map(|vm| std::fs::read_dir(vm.path().join("ram")).unwrap().flatten())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    // Each copy with its page hashes; nothing half-made (`.part`).
    assert!(
        copies
            .iter()
            .all(|c| c.ends_with(".ram") || c.ends_with(".ram.sum")),
        "no half-made copy is left: {copies:?}"
    );
    let whole = copies.iter().filter(|c| c.ends_with(".ram")).count();
    assert_eq!(whole, saved.len() + 1, "{copies:?}");
    let list = rum(&env, &data, &[], &["snapshot", "list"]);
    let failed = format!("s{}", saved.len());
    assert!(!list.stdout.contains(&failed), "{list}");
    for name in &saved {
        assert!(list.stdout.contains(name.as_str()), "{name} lost: {list}");
    }

    // The older ones restore, with the memory they had; the VM runs on.
    rum(&env, &data, &[], &["snapshot", "restore", "s0"]).assert_success();
    assert_eq!(sh("cat /dev/shm/marker"), "first\n");
    rum(&env, &data, &[], &["destroy", "-f"]).assert_success();
    assert!(env.procs.strays().is_empty());
}
