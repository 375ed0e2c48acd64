//! One pass from `RawConfig` to `Config`: applies defaults and collects every
//! problem with the key it concerns, instead of stopping at the first.

use super::error::{Problem, Warning};
use super::model::*;
use super::names::{self, paths_overlap};
use super::raw::*;
use super::size::ByteSize;
use super::size::{GIB, MIB};
use super::span::KeyPath;
use super::suggest::closest;
use crate::image::source::resolve_host_path;
use crate::image::{Checksum, ImageSource, SourceError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};

pub const DEFAULT_CPUS: u32 = 2;
pub const DEFAULT_MEMORY_MB: u64 = 2048;
pub const DEFAULT_DISK: &str = "20G";
pub const DEFAULT_USER: &str = "rum";
pub const DEFAULT_MACHINE: &str = "q35";
const MIN_MEMORY_MB: u64 = 128;
const MAX_CPUS: u32 = 255;

/// What validation needs to know besides the file's contents.
pub struct Context<'a> {
    /// Directory that relative paths are resolved against.
    pub dir: &'a Path,
    /// Name used when the file sets none (from the file or directory name).
    pub default_name: String,
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
}

impl Checker {
    fn problem(&mut self, path: KeyPath, message: impl Into<String>) {
        self.problems.push(Problem {
            path,
            message: message.into(),
            help: None,
        });
    }

    fn problem_with_help(
        &mut self,
        path: KeyPath,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.problems.push(Problem {
            path,
            message: message.into(),
            help: Some(help.into()),
        });
    }

    fn ignored<T>(&mut self, value: &Option<T>, path: KeyPath, why: &str) {
        if value.is_some() {
            self.warnings.push(Warning {
                path,
                message: format!("has no effect: {why}"),
            });
        }
    }

    /// Checks a string against a config enum's names.
    fn choice<T>(
        &mut self,
        path: KeyPath,
        text: &str,
        names: &[&str],
        parse: fn(&str) -> Option<T>,
    ) -> Option<T> {
        let parsed = parse(text);
        if parsed.is_none() {
            self.not_allowed(path, text, names);
        }
        parsed
    }

    /// Reports a value outside `allowed`, suggesting the closest one.
    fn not_allowed(&mut self, path: KeyPath, text: &str, allowed: &[&str]) {
        let hint = closest(text, allowed.iter().copied())
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        self.problem_with_help(
            path,
            format!("is `{text}`, which is not an allowed value"),
            format!("{hint}Allowed: {}", allowed.join(", ")),
        );
    }
}

pub fn validate(raw: RawConfig, ctx: &Context<'_>) -> Result<(Config, Vec<Warning>), Vec<Problem>> {
    let mut c = Checker::default();
    let root = KeyPath::root();

    let name = match raw.name {
        Some(name) => {
            if let Err(why) = names::check_name(&name) {
                c.problem(root.key("name"), why);
            }
            name
        }
        None => ctx.default_name.clone(),
    };

    let image = image(&mut c, raw.image, ctx.dir);
    let resources = resources(&mut c, raw.resources.unwrap_or_default());
    let network = network(&mut c, raw.network, &name);
    let ports = ports(&mut c, raw.ports);
    let mounts = mounts(&mut c, raw.mounts, ctx.dir);
    let drives = drives(&mut c, raw.drives);
    let filesystems = filesystems(&mut c, raw.fs, &drives, &mounts);
    let provision = Provision {
        system: script(
            &mut c,
            raw.provision.system,
            root.key("provision").key("system"),
            ctx.dir,
        ),
        boot: script(
            &mut c,
            raw.provision.boot,
            root.key("provision").key("boot"),
            ctx.dir,
        ),
    };
    let user = user(&mut c, raw.user);
    let ssh = ssh(&mut c, raw.ssh, &user);
    let advanced = advanced(&mut c, raw.advanced, ctx.dir);

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    let config = Config {
        file: PathBuf::new(),
        dir: ctx.dir.to_path_buf(),
        name,
        image: image.expect("image is checked above"),
        resources,
        network,
        ports,
        mounts,
        drives,
        filesystems,
        provision,
        ssh,
        user,
        advanced,
    };
    Ok((config, c.warnings))
}

fn image(c: &mut Checker, raw: Option<RawImage>, dir: &Path) -> Option<Image> {
    let path = KeyPath::root().key("image");
    let sha256 = match raw.as_ref().and_then(|r| r.sha256.as_deref()) {
        None => None,
        Some(text) => match Checksum::sha256(text) {
            Some(sum) => Some(sum),
            None => {
                c.problem_with_help(
                    path.key("sha256"),
                    format!("`{text}` is not a SHA-256"),
                    "write the 64 hex digits `sha256sum IMAGE` prints",
                );
                return None;
            }
        },
    };
    let base = image_base(c, raw, dir, path)?;
    Some(Image { base, sha256 })
}

fn image_base(
    c: &mut Checker,
    raw: Option<RawImage>,
    dir: &Path,
    path: KeyPath,
) -> Option<ImageSource> {
    let Some(raw) = raw else {
        c.problem_with_help(
            path,
            "is missing; rum needs a base image",
            "add:\n    [image]\n    base = \"debian-12\"",
        );
        return None;
    };
    let path = path.key("base");
    let value = raw.base.unwrap_or_default();
    let source = match ImageSource::classify(&value, dir) {
        Ok(source) => source,
        Err(SourceError::Empty) => {
            c.problem_with_help(
                path,
                "is missing or empty",
                "set it to a local image file, an http(s) URL, or a name such as \"debian-12\"",
            );
            return None;
        }
        Err(e) => {
            match e.help() {
                Some(help) => c.problem_with_help(path, e.to_string(), help),
                None => c.problem(path, e.to_string()),
            }
            return None;
        }
    };
    // Only a local file can be checked now; downloads are checked when fetched.
    if let ImageSource::Path(file) = &source {
        match std::fs::metadata(file) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                c.problem(path, format!("`{}` is not a file", file.display()));
                return None;
            }
            Err(e) => {
                c.problem(path, format!("`{}` cannot be read: {e}", file.display()));
                return None;
            }
        }
    }
    Some(source)
}

fn resources(c: &mut Checker, raw: RawResources) -> Resources {
    let path = KeyPath::root().key("resources");
    let cpus = raw.cpus.unwrap_or(DEFAULT_CPUS);
    if cpus == 0 || cpus > MAX_CPUS {
        c.problem(path.key("cpus"), format!("is {cpus}; give 1 to {MAX_CPUS}"));
    }
    let memory_mb = raw.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    if memory_mb < MIN_MEMORY_MB {
        c.problem(
            path.key("memory_mb"),
            format!("is {memory_mb}; a guest needs at least {MIN_MEMORY_MB} (MiB)"),
        );
    }
    let disk_text = raw.disk.unwrap_or_else(|| DEFAULT_DISK.into());
    let disk = size(c, path.key("disk"), &disk_text, GIB, "1G");
    Resources {
        cpus,
        memory_mb,
        disk,
    }
}

fn size(c: &mut Checker, path: KeyPath, text: &str, minimum: u64, minimum_text: &str) -> ByteSize {
    match ByteSize::parse(text) {
        Ok(size) if size.bytes() < minimum => {
            c.problem(path, format!("is {text}; the minimum is {minimum_text}"));
            size
        }
        Ok(size) => size,
        Err(why) => {
            c.problem(path, why);
            ByteSize::from_bytes(0)
        }
    }
}

fn network(c: &mut Checker, raw: RawNetwork, name: &str) -> Network {
    let path = KeyPath::root().key("network");
    let why = "rum uses QEMU user-mode networking, not libvirt";
    c.ignored(&raw.nat, path.key("nat"), why);
    c.ignored(&raw.wait_for_ip, path.key("wait_for_ip"), why);
    c.ignored(&raw.ip_wait_timeout_s, path.key("ip_wait_timeout_s"), why);
    c.ignored(&raw.interfaces, path.key("interfaces"), why);
    let hostname = match raw.hostname {
        Some(host) => {
            if let Err(why) = names::check_hostname(&host) {
                c.problem(path.key("hostname"), why);
            }
            host
        }
        None => names::hostname_from(name),
    };
    Network { hostname }
}

fn ports(c: &mut Checker, raw: Vec<RawPort>) -> Vec<PortForward> {
    let mut seen: HashMap<(IpAddr, u16), usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, port) in raw.into_iter().enumerate() {
        let path = KeyPath::root().key("ports").index(i);
        let host = port_number(c, path.key("host"), port.host);
        let guest = port_number(c, path.key("guest"), port.guest);
        let bind_text = port.bind.unwrap_or_else(|| "127.0.0.1".into());
        let bind = match bind_text.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                c.problem(
                    path.key("bind"),
                    format!("`{bind_text}` is not an IP address; the default is 127.0.0.1"),
                );
                None
            }
        };
        let (Some(host), Some(guest), Some(bind)) = (host, guest, bind) else {
            continue;
        };
        let clash = seen.iter().find(|((ip, p), _)| {
            *p == host.get() && (*ip == bind || ip.is_unspecified() || bind.is_unspecified())
        });
        if let Some((_, first)) = clash {
            c.problem(
                path.key("host"),
                format!(
                    "{host} is already forwarded by ports[{first}]; each host port can be used once"
                ),
            );
            continue;
        }
        seen.insert((bind, host.get()), i);
        out.push(PortForward { host, guest, bind });
    }
    out
}

fn port_number(c: &mut Checker, path: KeyPath, value: Option<u16>) -> Option<NonZeroU16> {
    match value {
        None => {
            c.problem(path, "is missing; give a port number from 1 to 65535");
            None
        }
        Some(n) => {
            let port = NonZeroU16::new(n);
            if port.is_none() {
                c.problem(path, "is 0; give a port number from 1 to 65535");
            }
            port
        }
    }
}

fn mounts(c: &mut Checker, raw: Vec<RawMount>, dir: &Path) -> Vec<Mount> {
    let mut out: Vec<(usize, Mount)> = Vec::new();
    let mut defaults = 0;
    for (i, mount) in raw.into_iter().enumerate() {
        let path = KeyPath::root().key("mounts").index(i);
        c.ignored(
            &mount.inotify,
            path.key("inotify"),
            "inotify bridging is not supported",
        );
        if mount.default == Some(true) {
            defaults += 1;
            if defaults > 1 {
                c.problem(
                    path.key("default"),
                    "is set on more than one mount; mark at most one",
                );
            }
        }
        let source = match mount.source.as_deref() {
            None => {
                c.problem(
                    path.key("source"),
                    "is missing; give a host directory such as \".\"",
                );
                None
            }
            Some(text) => mount_source(c, path.key("source"), text, dir),
        };
        let target = match mount.target.as_deref() {
            None => {
                c.problem(
                    path.key("target"),
                    "is missing; give a guest path such as \"/mnt/project\"",
                );
                None
            }
            Some(text) => names::normalize_guest_target(text)
                .map_err(|why| c.problem(path.key("target"), why))
                .ok(),
        };
        let Some(target) = target else { continue };
        if let Some((j, _)) = out.iter().find(|(_, m)| paths_overlap(&m.target, &target)) {
            c.problem(path.key("target"), format!("`{target}` overlaps mounts[{j}].target; mount points must not contain each other"));
            continue;
        }
        let tag = match mount.tag {
            Some(tag) => {
                if let Err(why) = names::check_tag(&tag) {
                    c.problem(path.key("tag"), why);
                }
                tag
            }
            None => names::tag_from_target(&target),
        };
        if let Some((j, _)) = out.iter().find(|(_, m)| m.tag == tag) {
            c.problem(
                path.key("tag"),
                format!("`{tag}` is also the tag of mounts[{j}]; tags must be unique"),
            );
            continue;
        }
        if let Some(source) = source {
            out.push((
                i,
                Mount {
                    source,
                    target,
                    readonly: mount.readonly,
                    tag,
                },
            ));
        }
    }
    out.into_iter().map(|(_, m)| m).collect()
}

fn mount_source(c: &mut Checker, path: KeyPath, text: &str, dir: &Path) -> Option<PathBuf> {
    let source = if text == "git" {
        match dir.ancestors().find(|d| d.join(".git").exists()) {
            Some(top) => top.to_path_buf(),
            None => {
                c.problem(
                    path,
                    format!(
                        "is \"git\", but {} is not inside a git repository",
                        dir.display()
                    ),
                );
                return None;
            }
        }
    } else {
        resolve_host_path(text, dir)
    };
    match std::fs::canonicalize(&source) {
        Ok(real) if real.is_dir() => Some(real),
        Ok(real) => {
            c.problem(path, format!("`{}` is not a directory", real.display()));
            None
        }
        Err(_) => {
            c.problem_with_help(
                path,
                format!("`{}` does not exist", source.display()),
                "create the directory or fix the path (relative paths start at the config file's directory)",
            );
            None
        }
    }
}

fn drives(c: &mut Checker, raw: BTreeMap<String, RawDrive>) -> Vec<Drive> {
    let mut out = Vec::new();
    for (name, drive) in raw {
        let path = KeyPath::root().key("drives").key(&name);
        if let Err(why) = names::check_name(&name) {
            c.problem(path.clone(), format!("has a bad name: {why}"));
            continue;
        }
        let Some(text) = drive.size else {
            c.problem(path.key("size"), "is missing; give a size such as \"10G\"");
            continue;
        };
        let size = size(c, path.key("size"), &text, MIB, "1M");
        // The guest tells drives apart by their virtio serial: the name's first 20 characters.
        let drive = Drive { name, size };
        let serial = drive.serial();
        if let Some(other) = out.iter().find(|d: &&Drive| d.serial() == serial) {
            c.problem(
                path,
                format!(
                    "shares its first {VIRTIO_SERIAL_LEN} characters (`{serial}`) with drive `{}`; the guest tells drives apart by a serial of at most {VIRTIO_SERIAL_LEN} characters, so make the names differ within them",
                    other.name
                ),
            );
        }
        out.push(drive);
    }
    out
}

fn filesystems(
    c: &mut Checker,
    raw: RawFilesystems,
    drives: &[Drive],
    mounts: &[Mount],
) -> Vec<Filesystem> {
    let by_kind = [
        (FsKind::Ext4, raw.ext4),
        (FsKind::Xfs, raw.xfs),
        (FsKind::Btrfs, raw.btrfs),
        (FsKind::Zfs, raw.zfs),
    ];
    let defined: HashSet<&str> = drives.iter().map(|d| d.name.as_str()).collect();
    let mut used: HashMap<String, KeyPath> = HashMap::new();
    let mut targets: Vec<(KeyPath, String)> = mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                KeyPath::root().key("mounts").index(i).key("target"),
                m.target.clone(),
            )
        })
        .collect();
    let mut out = Vec::new();
    for (kind, entries) in by_kind {
        for (i, fs) in entries.into_iter().enumerate() {
            let path = KeyPath::root().key("fs").key(kind.as_str()).index(i);
            if let Some(fs) = filesystem(c, kind, fs, &path, &defined, &mut used, &mut targets) {
                out.push(fs);
            }
        }
    }
    out
}

fn filesystem(
    c: &mut Checker,
    kind: FsKind,
    raw: RawFs,
    path: &KeyPath,
    defined: &HashSet<&str>,
    used: &mut HashMap<String, KeyPath>,
    targets: &mut Vec<(KeyPath, String)>,
) -> Option<Filesystem> {
    let (names, names_path) = match (raw.drive, raw.drives) {
        (Some(_), Some(_)) => {
            c.problem(
                path.key("drives"),
                "is given together with `drive`; use one of them",
            );
            return None;
        }
        (Some(one), None) => (vec![one], path.key("drive")),
        (None, Some(many)) if !kind.multi_drive() && many.len() != 1 => {
            c.problem(
                path.key("drives"),
                format!(
                    "lists {} drives, but {} uses exactly one; use `drive`",
                    many.len(),
                    kind.as_str()
                ),
            );
            return None;
        }
        (None, Some(many)) if many.is_empty() => {
            c.problem(path.key("drives"), "is empty; list at least one drive");
            return None;
        }
        (None, Some(many)) => (many, path.key("drives")),
        (None, None) => {
            c.problem(path.key("drive"), "is missing; name a drive from [drives]");
            return None;
        }
    };
    let mut ok = true;
    for name in &names {
        if !defined.contains(name.as_str()) {
            let hint = closest(name, defined.iter().copied())
                .map(|d| format!("did you mean `{d}`? "))
                .unwrap_or_default();
            c.problem_with_help(
                names_path.clone(),
                format!("names drive `{name}`, which is not defined"),
                format!("{hint}add it:\n    [drives.{name}]\n    size = \"10G\""),
            );
            ok = false;
        } else if let Some(first) = used.get(name) {
            c.problem(
                names_path.clone(),
                format!("uses drive `{name}`, which {first} already uses"),
            );
            ok = false;
        } else {
            used.insert(name.clone(), names_path.clone());
        }
    }
    let target = match raw.target.as_deref() {
        None => {
            c.problem(
                path.key("target"),
                "is missing; give a guest mount point such as \"/mnt/data\"",
            );
            None
        }
        Some(text) => {
            match names::normalize_guest_target(text) {
                Err(why) => {
                    c.problem(path.key("target"), why);
                    None
                }
                Ok(target) => {
                    if let Some((other, _)) =
                        targets.iter().find(|(_, t)| paths_overlap(t, &target))
                    {
                        c.problem(path.key("target"), format!("`{target}` overlaps {other}; mount points must not contain each other"));
                        None
                    } else {
                        targets.push((path.key("target"), target.clone()));
                        Some(target)
                    }
                }
            }
        }
    };
    if let Some(mode) = &raw.mode
        && !kind.modes().contains(&mode.as_str())
    {
        if kind.modes().is_empty() {
            c.problem(
                path.key("mode"),
                format!("is set, but {} has no modes; remove it", kind.as_str()),
            );
        } else {
            c.not_allowed(path.key("mode"), mode, kind.modes());
        }
        ok = false;
    }
    let pool = match (kind, raw.pool) {
        (FsKind::Zfs, pool) => {
            let pool = pool.unwrap_or_else(|| names[0].clone());
            if let Err(why) = names::check_name(&pool) {
                c.problem(path.key("pool"), why);
                ok = false;
            }
            Some(pool)
        }
        (_, Some(_)) => {
            c.problem(
                path.key("pool"),
                format!("is only for zfs, not {}", kind.as_str()),
            );
            ok = false;
            None
        }
        (_, None) => None,
    };
    let target = target?;
    ok.then_some(Filesystem {
        kind,
        drives: names,
        target,
        mode: raw.mode,
        pool,
    })
}

fn script(c: &mut Checker, raw: Option<RawScript>, path: KeyPath, dir: &Path) -> Option<Script> {
    let raw = raw?;
    match (raw.script, raw.file) {
        (Some(_), Some(_)) => {
            c.problem(
                path.key("file"),
                "is given together with `script`; use one of them",
            );
            None
        }
        (Some(text), None) => Some(Script::Inline(text)),
        (None, Some(file)) => {
            let resolved = resolve_host_path(&file, dir);
            if resolved.is_file() {
                Some(Script::File(resolved))
            } else {
                c.problem(
                    path.key("file"),
                    format!("`{}` is not a readable file", resolved.display()),
                );
                None
            }
        }
        (None, None) => {
            c.problem(
                path.key("script"),
                "is missing; give `script = \"…\"` or `file = \"path/to/script.sh\"`",
            );
            None
        }
    }
}

fn user(c: &mut Checker, raw: RawUser) -> User {
    let path = KeyPath::root().key("user");
    let name = raw.name.unwrap_or_else(|| DEFAULT_USER.into());
    if name == "root" {
        c.problem(
            path.key("name"),
            "is root; rum creates an unprivileged user with sudo, pick another name",
        );
    } else if let Err(why) = names::check_unix_name(&name) {
        c.problem(path.key("name"), why);
    }
    for (i, group) in raw.groups.iter().enumerate() {
        if let Err(why) = names::check_unix_name(group) {
            c.problem(path.key("groups").index(i), why);
        }
    }
    User {
        name,
        groups: raw.groups,
    }
}

fn ssh(c: &mut Checker, raw: RawSsh, user: &User) -> Ssh {
    let path = KeyPath::root().key("ssh");
    c.ignored(
        &raw.interface,
        path.key("interface"),
        "rum reaches the guest through a forwarded port",
    );
    let user_name = raw.user.unwrap_or_else(|| user.name.clone());
    if let Err(why) = names::check_unix_name(&user_name) {
        c.problem(path.key("user"), why);
    }
    for (i, key) in raw.authorized_keys.iter().enumerate() {
        if let Err(why) = names::check_public_key(key) {
            c.problem(path.key("authorized_keys").index(i), why);
        }
    }
    let command = raw.command.unwrap_or_else(|| "ssh".into());
    if command.trim().is_empty() {
        c.problem(path.key("command"), "is empty; remove it to use `ssh`");
    }
    Ssh {
        user: user_name,
        command,
        authorized_keys: raw.authorized_keys,
    }
}

fn advanced(c: &mut Checker, raw: RawAdvanced, dir: &Path) -> Advanced {
    let path = KeyPath::root().key("advanced");
    c.ignored(
        &raw.libvirt_uri,
        path.key("libvirt_uri"),
        "rum drives QEMU directly, without libvirt",
    );
    c.ignored(
        &raw.autologin,
        path.key("autologin"),
        "rum never enables console logins",
    );
    let accel = match (raw.accel, raw.domain_type) {
        (Some(text), _) => c.choice(path.key("accel"), &text, Accel::NAMES, Accel::parse),
        // libvirt-era files said domain_type = "kvm" | "qemu".
        (None, Some(kind)) => c.choice(
            path.key("domain_type"),
            &kind,
            &["kvm", "qemu"],
            |k| match k {
                "kvm" => Some(Accel::Kvm),
                "qemu" => Some(Accel::Tcg),
                _ => None,
            },
        ),
        (None, None) => Some(Accel::Auto),
    }
    .unwrap_or(Accel::Auto);
    let machine = raw.machine.unwrap_or_else(|| DEFAULT_MACHINE.into());
    let machine_ok = !machine.is_empty()
        && machine
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_'));
    if !machine_ok {
        c.problem(
            path.key("machine"),
            format!("`{machine}` is not a QEMU machine type such as \"q35\""),
        );
    }
    let firmware = raw
        .firmware
        .and_then(|t| {
            c.choice(
                path.key("firmware"),
                &t,
                FirmwareChoice::NAMES,
                FirmwareChoice::parse,
            )
        })
        .unwrap_or(FirmwareChoice::Auto);
    let agent_transport = raw
        .agent_transport
        .and_then(|t| {
            c.choice(
                path.key("agent_transport"),
                &t,
                AgentTransport::NAMES,
                AgentTransport::parse,
            )
        })
        .unwrap_or(AgentTransport::Auto);
    let qemu = raw.qemu.and_then(|text| {
        let file = if text.contains('/') {
            resolve_host_path(&text, dir)
        } else {
            PathBuf::from(&text)
        };
        if file.is_absolute() && !is_executable(&file) {
            c.problem(
                path.key("qemu"),
                format!("`{}` is not an executable file", file.display()),
            );
            None
        } else {
            Some(file)
        }
    });
    Advanced {
        accel,
        machine,
        firmware,
        qemu,
        agent_transport,
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
