//! `rum image bake`, end to end: a provisioned, running VM's disk becomes a
//! base image in the shared cache, and the VM goes on running untouched.
//! Baked from `pre-provision` of a VM whose provisioning failed, the image
//! holds none of that attempt (read offline; needs root for the mount).
//! Refused bakes (bad, built-in or taken names, an unknown snapshot) exit 2
//! and write nothing. The image stands alone (no backing file, no
//! snapshots), and a VM made from it in another project, after the first
//! VM is gone, has the package and files the first one installed but its
//! own user, host name, SSH host key, machine-id and cloud-init instance.
//! Between the two, the image goes out by `rum image export` and back by
//! `rum image import`, which refuses a damaged copy. The image cannot be
//! deleted while that VM uses it. A bake killed while its copy runs puts
//! nothing in the cache, and the next bake stops the copy it left. Two VMs
//! boot, and two throwaway copies, one at a time beside an idle VM (one
//! VM slot).

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::E2e;

/// Project 1's guest user; the baked image must not carry it.
const USER1: &str = "builder";
/// Project 2's guest user.
const USER2: &str = "alice";

/// Project 1's only system step: a Debian package built and installed
/// offline, and a plain file.
const SETUP: &str = "set -e
mkdir -p /tmp/pkg/DEBIAN /tmp/pkg/usr/share/rum-baked-test
printf 'Package: rum-baked-test\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: t <t@t>\\nDescription: x\\n' > /tmp/pkg/DEBIAN/control
echo hello > /tmp/pkg/usr/share/rum-baked-test/hello
dpkg-deb --build /tmp/pkg /tmp/rum-baked-test.deb
dpkg -i /tmp/rum-baked-test.deb
echo baked > /opt/baked-marker
";

/// What makes a guest this VM and no other.
#[derive(Debug, PartialEq)]
struct Identity {
    hostname: String,
    /// Type and key of the ed25519 host key, without its comment.
    host_key: String,
    machine_id: String,
    /// The instance cloud-init last ran for.
    instance_id: String,
}

impl Identity {
    /// Prints the four lines `parse` reads.
    const COMMAND: &'static str = "hostname; cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub; \
        cat /etc/machine-id; cat /var/lib/cloud/data/instance-id";

    fn parse(out: &str) -> Identity {
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines.len() == 4 && lines.iter().all(|l| !l.trim().is_empty()),
            "hostname, host key, machine-id, instance-id: {out:?}"
        );
        Identity {
            hostname: lines[0].to_owned(),
            host_key: lines[1].to_owned(),
            machine_id: lines[2].to_owned(),
            instance_id: lines[3].to_owned(),
        }
    }
}

/// QEMUs of throwaway copies (their files are in a bake's work dir).
fn throwaway_qemus(env: &E2e) -> Vec<u32> {
    env.procs
        .strays()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(".bake/"))
        })
        .collect()
}

/// `sh -c COMMAND` as root in the VM of the project in `dir`; it must
/// succeed. Returns its stdout.
fn root_in(env: &E2e, dir: &Path, command: &str) -> String {
    let run = env.rum_in(dir, &["exec", "--user", "root", "--", "sh", "-c", command]);
    run.assert_success();
    run.stdout
}

/// Whether `user` exists in the VM of the project in `dir`.
fn has_user(env: &E2e, dir: &Path, user: &str) -> bool {
    let out = root_in(
        env,
        dir,
        &format!("if id {user} >/dev/null 2>&1; then echo yes; else echo no; fi"),
    );
    out == "yes\n"
}

/// The rows of `rum image list`.
fn images(env: &E2e) -> Vec<Value> {
    let data = env.rum_data(&["image", "list"]);
    data.as_array()
        .unwrap_or_else(|| panic!("image list data is an array: {data}"))
        .clone()
}

/// What the image cache holds, apart from rum's own `.partial` and `.locks`.
fn cached(env: &E2e) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.xdg.cache.join("rum/images"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// The names of the project's snapshots.
fn snapshots(env: &E2e) -> Vec<String> {
    let data = env.rum_data(&["snapshot", "list"]);
    data["snapshots"]
        .as_array()
        .unwrap_or_else(|| panic!("snapshot list: {data}"))
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

/// `PROGRAM ARGS IMAGE`, which must succeed; its stdout.
fn host(program: &Path, args: &[&str], image: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(image)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} {}: {}{}",
        program.display(),
        image.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether each of `paths` (relative to /) exists in the root filesystem
/// of the qcow2 `image`, read offline: made raw, and its root partition
/// (the third, as `tests/image/build` lays it out) loop-mounted read-only.
fn exist_in(env: &E2e, image: &Path, paths: &[&str]) -> Vec<bool> {
    use std::os::unix::fs::FileExt;
    let raw = env.dir("offline").join("disk.raw");
    let _ = std::fs::remove_file(&raw);
    let out = Command::new(&env.tools.qemu_img)
        .args(["convert", "-O", "raw"])
        .arg(image)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // GPT: the header at LBA 1 says where the entries are and their size.
    let f = std::fs::File::open(&raw).unwrap();
    let mut header = [0u8; 92];
    f.read_exact_at(&mut header, 512).unwrap();
    assert_eq!(&header[..8], b"EFI PART", "a GPT disk");
    let entries = u64::from_le_bytes(header[72..80].try_into().unwrap()) * 512;
    let size = u64::from(u32::from_le_bytes(header[84..88].try_into().unwrap()));
    let mut first = [0u8; 8];
    f.read_exact_at(&mut first, entries + 2 * size + 32)
        .unwrap();
    let offset = u64::from_le_bytes(first) * 512;
    let mount = env.dir("offline").join("root");
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "ext4", "-o"])
        .arg(format!("ro,noload,loop,offset={offset}"))
        .arg(&raw)
        .arg(&mount)
        .output()
        .unwrap();
    assert!(
        mounted.status.success(),
        "{}",
        String::from_utf8_lossy(&mounted.stderr)
    );
    let found = paths.iter().map(|p| mount.join(p).exists()).collect();
    let _ = Command::new("umount").arg(&mount).status();
    let _ = std::fs::remove_file(&raw);
    found
}

#[test]
fn a_baked_vm_is_the_base_of_a_new_vm_with_its_own_identity() {
    // One slot, though the VM and a bake's throwaway copy run at once: the
    // VM idles meanwhile, and every guest here has one vCPU.
    let Some(env) = support::e2e() else {
        return;
    };
    if !support::may_mount() {
        return;
    }
    let p1 = env.project.clone();

    // Project 1: provisioned with a package and a file, left running.
    std::fs::create_dir_all(p1.join("provision")).unwrap();
    std::fs::write(p1.join("provision/setup.sh"), SETUP).unwrap();
    let share = env.dir("share");
    env.write_rum_toml(&format!(
        "[user]\nname = \"{USER1}\"\n\n[[mounts]]\nsource = \"{}\"\ntarget = \"/mnt/share\"\n\n[[provision.system]]\nname = \"setup\"\nfile = \"provision/setup.sh\"\n",
        share.display()
    ));
    // First with a step that leaves a trace and fails.
    let good = std::fs::read_to_string(p1.join("rum.toml")).unwrap();
    std::fs::write(
        p1.join("rum.toml"),
        format!(
            "{good}\n[[provision.system]]\nname = \"broken\"\nscript = \"echo trace > /opt/failed-trace; exit 3\"\n"
        ),
    )
    .unwrap();
    let failed = env.rum(&["up", "-d"]);
    assert_eq!(failed.status.code(), Some(1), "{failed}");
    assert_eq!(env.guest_sh("cat /opt/failed-trace"), "trace\n");

    // Baked from `pre-provision`: none of the failed attempt is in it.
    env.rum_data(&["image", "bake", "clean", "--snapshot", "pre-provision"]);
    let clean = env.xdg.cache.join("rum/images/clean/image");
    let found = exist_in(
        &env,
        &clean,
        &["opt/failed-trace", "opt/baked-marker", "etc/hostname"],
    );
    assert_eq!(
        found,
        [false, false, true],
        "only what was there before provisioning"
    );
    env.rum(&["image", "delete", "clean"]).assert_success();

    // Fixed: the retry keeps the `setup` checkpoint and drops the trace.
    std::fs::write(p1.join("rum.toml"), &good).unwrap();
    env.rum(&["retry"]).assert_success();
    let vm1 = env.rum_data(&["status"])["instance"]
        .as_str()
        .expect("status names the instance")
        .to_owned();
    let id1 = Identity::parse(&env.guest_sh(Identity::COMMAND));
    let fstab1 = env.guest_sh("cat /etc/fstab");
    assert!(fstab1.contains("/mnt/share"), "rum's mount line: {fstab1}");
    assert!(has_user(&env, &p1, USER1));
    let pid1 = env.rum_data(&["status"])["pid"].clone();
    let snapshots1 = snapshots(&env);
    assert!(
        images(&env).is_empty(),
        "nothing cached yet: the test image is a local file"
    );

    // Refused: exit 2, with a reason, and nothing in the cache.
    for (why, args) in [
        ("a name with a slash", &["image", "bake", "Bad/Name"][..]),
        ("a built-in image's name", &["image", "bake", "debian-12"]),
        (
            "an unknown snapshot",
            &["image", "bake", "other", "--snapshot", "nope"],
        ),
    ] {
        let run = env.rum(args);
        assert_eq!(run.status.code(), Some(2), "{why}: {run}");
        assert!(!run.stderr.trim().is_empty(), "{why} is explained: {run}");
    }
    assert!(images(&env).is_empty(), "{:?}", images(&env));
    assert_eq!(cached(&env), Vec::<String>::new());

    // A bake killed while its throwaway copy runs: nothing enters the cache,
    // and the next bake stops the copy's QEMU, which outlived it.
    env.kill_rum(
        &["image", "bake", "golden"],
        support::At::Point("bake_generalise"),
    );
    assert!(images(&env).is_empty(), "{:?}", images(&env));
    assert_eq!(cached(&env), Vec::<String>::new());
    assert_eq!(throwaway_qemus(&env).len(), 1, "the killed bake's copy");

    // Baked from the running VM's current disk.
    let baked = env.rum_data(&["image", "bake", "golden"]);
    assert_eq!(baked["name"], "golden", "{baked}");
    let image = PathBuf::from(baked["path"].as_str().expect("a path"));
    assert_eq!(image, env.xdg.cache.join("rum/images/golden/image"));
    let meta = &baked["meta"];
    let sha256 = meta["sha256"].as_str().unwrap_or_default().to_owned();
    assert!(
        sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()),
        "{baked}"
    );
    assert_eq!(meta["baked"]["instance"], vm1.as_str(), "{baked}");
    assert!(
        meta["baked"]["snapshot"].is_null(),
        "from the current disk: {baked}"
    );

    // A read-only, standalone, sound qcow2 whose checksum is the one recorded.
    let file = std::fs::metadata(&image).unwrap();
    assert_eq!(file.permissions().mode() & 0o777, 0o400);
    assert!(image.with_file_name("meta.json").is_file());
    let summed = host(Path::new("sha256sum"), &[], &image);
    assert_eq!(summed.split_whitespace().next(), Some(sha256.as_str()));
    let info: Value = serde_json::from_str(&host(
        &env.tools.qemu_img,
        &["info", "--output=json"],
        &image,
    ))
    .unwrap();
    assert_eq!(info["format"], "qcow2", "{info}");
    assert!(info.get("backing-filename").is_none(), "standalone: {info}");
    assert!(
        info["snapshots"].as_array().is_none_or(|s| s.is_empty()),
        "none of the VM's snapshots came along: {info}"
    );
    host(&env.tools.qemu_img, &["check", "-q"], &image);

    let rows = images(&env);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let listed = &rows[0]["image"];
    assert_eq!(listed["name"], "golden", "{listed}");
    assert_eq!(listed["status"], "verified", "{listed}");
    assert_eq!(listed["sha256"], sha256.as_str(), "{listed}");
    assert!(listed["baked"].is_object(), "{listed}");
    assert_eq!(listed["baked"]["instance"], vm1.as_str(), "{listed}");
    assert!(
        throwaway_qemus(&env).is_empty(),
        "{:?}",
        throwaway_qemus(&env)
    );

    // A name taken: refused, and the image stays as it was.
    let again = env.rum(&["image", "bake", "golden"]);
    assert_eq!(again.status.code(), Some(2), "{again}");
    let kept = std::fs::metadata(&image).unwrap();
    assert_eq!(
        (kept.ino(), kept.mtime(), kept.mtime_nsec()),
        (file.ino(), file.mtime(), file.mtime_nsec())
    );
    assert_eq!(cached(&env), ["golden"]);
    assert_eq!(images(&env)[0]["image"]["sha256"], sha256.as_str());

    // Too little room beside the cache for the flattened image: refused with
    // the figures, exit 2, nothing written.
    let partial = env.xdg.cache.join("rum/images/.partial");
    std::fs::create_dir_all(&partial).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&partial)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a small tmpfs");
    let tight = env.rum(&["image", "bake", "other"]);
    let left = std::fs::read_dir(&partial).unwrap().count();
    let _ = Command::new("umount").arg(&partial).status();
    assert_eq!(tight.status.code(), Some(2), "{tight}");
    assert!(tight.stderr.contains(" MiB"), "the figures: {tight}");
    assert_eq!(left, 0, "nothing written: {tight}");
    assert_eq!(cached(&env), ["golden"]);

    // The baked VM never stopped and is as it was: only a copy was generalised.
    let status = env.rum_data(&["status"]);
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["pid"], pid1, "the same QEMU: {status}");
    assert_eq!(env.guest_sh("cat /opt/baked-marker"), "baked\n");
    assert_eq!(Identity::parse(&env.guest_sh(Identity::COMMAND)), id1);
    assert_eq!(env.guest_sh("cat /etc/fstab"), fstab1);
    assert!(has_user(&env, &p1, USER1));
    assert_eq!(
        snapshots(&env),
        snapshots1,
        "bake leaves no snapshot behind"
    );

    // Gone before the image is used: the image needs nothing of it.
    env.rum(&["destroy", "-f"]).assert_success();

    // Handed to another machine: exported to one file, deleted here and
    // imported back, verified; project 2 below boots from the import.
    let exports = env.dir("exports");
    let export = exports.join("golden.rumimage");
    let export_arg = export.to_str().unwrap();
    let exported = env.rum_data(&["image", "export", "golden", export_arg]);
    assert_eq!(exported["meta"]["sha256"], sha256.as_str(), "{exported}");
    assert_eq!(
        host(Path::new("tar"), &["tf"], &export),
        "rum-image.json\nimage\n"
    );
    assert_eq!(
        std::fs::metadata(&export).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = env.rum(&["image", "export", "golden", export_arg]);
    assert_eq!(again.status.code(), Some(2), "the file exists: {again}");
    // One byte of the image changed on the way: refused, nothing cached.
    let damaged = exports.join("damaged.rumimage");
    std::fs::copy(&export, &damaged).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&damaged)
            .unwrap();
        let mut byte = [0u8];
        f.read_exact_at(&mut byte, 4 << 20).unwrap();
        f.write_all_at(&[byte[0] ^ 0x80], 4 << 20).unwrap();
    }
    let refused = env.rum(&["image", "import", damaged.to_str().unwrap(), "copy"]);
    assert_eq!(refused.status.code(), Some(1), "{refused}");
    assert!(refused.stderr.contains("is damaged"), "{refused}");
    let not_export = env.rum(&["image", "import", p1.join("rum.toml").to_str().unwrap()]);
    assert_eq!(not_export.status.code(), Some(2), "{not_export}");
    assert!(
        not_export
            .stderr
            .contains("is not an image `rum image export` wrote"),
        "{not_export}"
    );
    let taken = env.rum(&["image", "import", export_arg]);
    assert_eq!(taken.status.code(), Some(2), "golden is cached: {taken}");
    assert_eq!(cached(&env), ["golden"]);
    env.rum(&["image", "delete", "golden"]).assert_success();
    let imported = env.rum_data(&["image", "import", export_arg]);
    assert_eq!(imported["name"], "golden", "{imported}");
    assert_eq!(cached(&env), ["golden"]);
    assert_eq!(
        host(Path::new("sha256sum"), &[], &image)
            .split_whitespace()
            .next(),
        Some(sha256.as_str())
    );
    assert_eq!(
        std::fs::metadata(&image).unwrap().permissions().mode() & 0o777,
        0o400
    );
    let listed = &images(&env)[0]["image"];
    assert_eq!(
        listed["baked"]["instance"],
        vm1.as_str(),
        "provenance kept: {listed}"
    );

    // Project 2, on the baked image, with its own VM name, host name and user.
    let p2 = env.dir("project2");
    std::fs::write(
        p2.join("rum.toml"),
        format!(
            "name = \"from-golden\"\n\n[image]\nbase = \"golden\"\n\n[resources]\ncpus = 1\nmemory_mb = 1024\n\n[network]\nhostname = \"vm-two\"\n\n[user]\nname = \"{USER2}\"\n"
        ),
    )
    .unwrap();
    let vm2 = env.rum_data_in(&p2, &["up", "-d"])["instance"]
        .as_str()
        .expect("up names the instance")
        .to_owned();
    assert_ne!(vm2, vm1);

    // What project 1 installed is there.
    assert_eq!(root_in(&env, &p2, "cat /opt/baked-marker"), "baked\n");
    let package = root_in(&env, &p2, "dpkg -s rum-baked-test");
    assert!(
        package.contains("Status: install ok installed"),
        "{package}"
    );
    assert_eq!(
        root_in(&env, &p2, "cat /usr/share/rum-baked-test/hello"),
        "hello\n"
    );

    // Its own identity: cloud-init ran again, for this VM.
    assert!(has_user(&env, &p2, USER2));
    assert!(
        !has_user(&env, &p2, USER1),
        "project 1's user was removed from the image"
    );
    let id2 = Identity::parse(&root_in(&env, &p2, Identity::COMMAND));
    assert_eq!(id2.hostname, "vm-two");
    assert_ne!(id2.host_key, id1.host_key, "a host key of its own");
    assert_ne!(id2.machine_id, id1.machine_id, "a machine-id of its own");
    assert_ne!(
        id2.instance_id, id1.instance_id,
        "a new cloud-init instance"
    );
    let fstab2 = root_in(&env, &p2, "cat /etc/fstab");
    assert!(
        !fstab2.contains("/mnt/share"),
        "project 1's mount is not in the image: {fstab2}"
    );
    let cloud_init = root_in(&env, &p2, "cloud-init status 2>&1 || true");
    assert!(cloud_init.contains("status: done"), "{cloud_init}");
    assert_eq!(
        root_in(&env, &p2, "ls /var/lib/cloud/instances"),
        format!("{}\n", id2.instance_id),
        "no cloud-init state of project 1's VM is left"
    );

    // `rum ssh` logs in as the new user against the new, pinned host key.
    let ssh = env.rum_in(&p2, &["ssh", "--", "id -un"]);
    ssh.assert_success();
    assert_eq!(ssh.stdout, format!("{USER2}\n"), "{ssh}");

    // In use: the image is listed as the base of VM 2 and cannot be deleted.
    let rows = images(&env);
    assert_eq!(rows[0]["used_by"], serde_json::json!([vm2]), "{rows:?}");
    let refused = env.rum_in(&env.home, &["image", "delete", "golden"]);
    assert_eq!(refused.status.code(), Some(2), "{refused}");
    assert!(
        refused.stderr.contains("used by") && refused.stderr.contains(&vm2),
        "{refused}"
    );
    assert!(image.is_file(), "{refused}");

    // Cleanup: once no VM uses it, the image goes.
    env.rum_in(&p2, &["destroy", "-f"]).assert_success();
    env.rum(&["image", "delete", "golden"]).assert_success();
    assert!(!image.exists());
    assert!(images(&env).is_empty(), "{:?}", images(&env));
    assert!(env.procs.strays().is_empty());
}
