//! `rum up`: from a config to a booted VM whose agent answers. Each step is
//! shown, recorded as a milestone after it finishes, and registers its
//! inverse on the rollback guard; an instance that exists is resumed, never
//! recreated.

use super::agent::endpoint;
use super::provisioning;
use super::{Instance, RuntimeInfo, runtime};
use crate::config::{Accel as AccelChoice, AgentTransport, FirmwareChoice};
use crate::disk;
use crate::guard::Guard;
use crate::identity::GuestIdentity;
use crate::instance::{InstanceLock, LockWait};
use crate::output::Reporter;
use crate::state::{Milestone, State};
use crate::vm::devices::DeviceSet;
use crate::vm::host::{self, Host};
use crate::vm::qemu_args::{self, Accel, AgentChannel, Drive, Forward, Share, VmSpec};
use crate::vm::{process, qemu, virtiofsd};
use crate::{Error, ExitStatus, agent_binary, image, seed};
use rum_agent::protocol::ExecRequest;
use rum_agent::{Client, ConnectOptions};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the guest may take to answer after QEMU starts. Under TCG a
/// cloud image needs about a minute here; `RUM_BOOT_TIMEOUT` (seconds) overrides.
const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// A guest that has printed nothing on its console by then is stuck.
const NO_PROGRESS_AFTER: Duration = Duration::from_secs(90);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(
        "Host port {port} on {bind} is already in use; free it or change `[[ports]] host = {port}` in rum.toml"
    )]
    PortTaken { bind: IpAddr, port: u16 },
    #[error(
        "KVM was asked for (`{0}`), but /dev/kvm is not usable here; use `accel = \"auto\"` or RUM_ACCEL=tcg"
    )]
    NoKvm(&'static str),
    #[error("RUM_ACCEL is `{0}`; use kvm, tcg or auto")]
    BadAccelEnv(String),
    #[error(
        "vsock was asked for, but /dev/vhost-vsock is not usable here; use `agent_transport = \"auto\"`"
    )]
    NoVsock,
    #[error("QEMU exited while the guest was booting; its console ends with:\n{0}")]
    QemuExited(String),
    #[error(
        "The guest printed nothing on its console for {0:?}: it is not booting. If /dev/kvm exists but guests hang on it (nested virtualisation), run with RUM_ACCEL=tcg"
    )]
    NoProgress(Duration),
    #[error(
        "The guest agent did not answer within {timeout:?} ({last}). The console log is {}; with a slow accelerator, try RUM_BOOT_TIMEOUT=<seconds> or RUM_ACCEL=tcg if KVM hangs", .serial_log.display()
    )]
    AgentTimeout {
        timeout: Duration,
        last: String,
        serial_log: PathBuf,
    },
    #[error("There is no `{0}` snapshot; `rum up` takes `pre-provision` before it provisions")]
    NoSnapshot(String),
    #[error(
        "The VM's devices changed since the `{tag}` snapshot ({changes}), so it cannot be loaded; undo the change, or `rum retry --done` and `rum destroy` to start over"
    )]
    DevicesChanged { tag: String, changes: String },
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error(transparent)]
    Host(#[from] host::HostError),
    #[error(transparent)]
    Firmware(#[from] rum_firmware::FirmwareError),
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    #[error("Cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct UpOptions {
    /// Failure injection for tests: fail right after the named milestone.
    pub fail_after: Option<String>,
    /// Start QEMU paused and load this snapshot before the guest runs.
    pub restore: Option<String>,
}

impl UpOptions {
    pub fn from_env() -> Self {
        Self {
            fail_after: crate::testhook::fail_after(),
            restore: None,
        }
    }
}

/// Thrown by the failure injection of the tests.
#[derive(Debug, thiserror::Error)]
#[error("Injected failure after `{0}` (RUM_TEST_FAIL_AFTER)")]
pub struct Injected(String);

pub fn up(
    instance: &Instance,
    options: &UpOptions,
    reporter: &Reporter,
) -> Result<ExitStatus, Error> {
    let paths = &instance.paths;
    paths.ensure_data_dir()?;
    crate::testhook::pause("before_lock");
    // The lock comes first: only its holder may judge the instance fresh and
    // own (and, on failure, remove) what is in its directory.
    let _lock = InstanceLock::acquire(
        &paths.lock_file(),
        paths.id.as_str(),
        "rum up",
        LockWait::No,
    )?;
    let mut guard = Guard::new();
    if paths.is_fresh()? {
        let data = paths.data.clone();
        guard.push("instance directory", move || {
            std::fs::remove_dir_all(&data).map_err(|e| e.to_string())
        });
    }
    if let Some(pid) = instance.qemu_pid() {
        guard.disarm();
        reporter.result(
            &format!(
                "`{}` is already running (pid {pid}); `rum ssh` or `rum exec` to use it",
                paths.id
            ),
            &serde_json::json!({ "instance": paths.id, "pid": pid, "already_running": true }),
        );
        return Ok(ExitStatus::Success);
    }
    let mut state = State::load(&paths.state_file())?;
    let rt = runtime();
    let mut run = Run {
        instance,
        reporter,
        state: &mut state,
        guard: &mut guard,
        options,
        rt: &rt,
    };
    let booted = match run.bring_up() {
        Ok(booted) => booted,
        Err(e) => {
            drop(guard);
            return Err(e);
        }
    };
    guard.disarm();
    let status = after_boot(instance, &mut state, &booted, &rt, reporter)?;
    let version = booted.client.agent().clone();
    reporter.result(
        &format!(
            "`{}` is up (pid {}, {}); `rum ssh` to log in, `rum exec -- CMD` to run a command",
            paths.id, booted.pid, booted.info.accel
        ),
        &serde_json::json!({
            "instance": paths.id,
            "pid": booted.pid,
            "ssh_port": booted.info.ssh_port,
            "agent": version.build_id,
            "provisioned": status == ExitStatus::Success,
        }),
    );
    Ok(status)
}

/// The pre-provision snapshot (once per VM), then provisioning unless it
/// already completed on an earlier `up`.
fn after_boot(
    instance: &Instance,
    state: &mut State,
    booted: &Booted,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<ExitStatus, Error> {
    provisioning::ensure_pre_provision(instance, state, &booted.info, rt, reporter)?;
    let done = state.is_completed(Milestone::SystemProvisioned)
        && state.is_completed(Milestone::BootProvisioned);
    if done {
        reporter.line("Ready");
        return Ok(ExitStatus::Success);
    }
    provisioning::provision(
        instance,
        state,
        &booted.info,
        &booted.client,
        provisioning::From::Start,
        rt,
        reporter,
    )
}

/// Boots the stopped VM of an existing instance into `options.restore`
/// (paused QEMU, snapshot loaded, then running), with the rollback guard.
pub fn up_restoring(
    instance: &Instance,
    options: &UpOptions,
    state: &mut State,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<Booted, Error> {
    let mut guard = Guard::new();
    let mut run = Run {
        instance,
        reporter,
        state,
        guard: &mut guard,
        options,
        rt,
    };
    let booted = run.bring_up()?;
    guard.disarm();
    Ok(booted)
}

/// A VM whose agent answers and whose cloud-init has finished.
pub struct Booted {
    pub client: Client,
    pub pid: u32,
    pub info: RuntimeInfo,
    pub spec: VmSpec,
}

struct Run<'a> {
    instance: &'a Instance,
    reporter: &'a Reporter,
    state: &'a mut State,
    guard: &'a mut Guard,
    options: &'a UpOptions,
    /// One runtime for the whole run: the agent client's tasks live on it.
    rt: &'a tokio::runtime::Runtime,
}

impl Run<'_> {
    fn bring_up(&mut self) -> Result<Booted, Error> {
        let config = &self.instance.config;
        let paths = &self.instance.paths;
        std::fs::create_dir_all(paths.logs_dir()).map_err(|source| UpError::Write {
            path: paths.logs_dir(),
            source,
        })?;
        let host = Host::probe(config.advanced.qemu.as_deref()).map_err(UpError::from)?;
        let accel = self.accel(&host)?;

        let overlay = paths.overlay();
        if !overlay.exists() {
            // `base` holds the cache lock until the overlay exists, so that
            // `rum image delete` cannot pull the image away meanwhile.
            let (base, base_info) =
                self.milestone_shown(Milestone::ImageReady, "Resolving the image", |run, step| {
                    let base = run.base_image(step)?;
                    let info = disk::inspect(&base.path).map_err(UpError::from)?;
                    Ok((base, info))
                })?;
            let base_path = &base.path;
            let size = config.resources.disk.bytes().max(base_info.virtual_size);
            self.milestone(
                Milestone::OverlayCreated,
                "Creating the disk overlay",
                |run| {
                    create_atomically(&overlay, |tmp| {
                        disk::create_overlay(tmp, size, base_path, base_info.format)
                    })?;
                    run.guard.push_remove("disk overlay", &overlay);
                    Ok(())
                },
            )?;
        }

        let missing: Vec<_> = config
            .drives
            .iter()
            .filter(|d| !paths.drive(&d.name).exists())
            .collect();
        if !missing.is_empty() {
            std::fs::create_dir_all(paths.drive("x").parent().expect("drives dir")).map_err(
                |source| UpError::Write {
                    path: paths.data.join("drives"),
                    source,
                },
            )?;
            self.milestone(Milestone::DrivesCreated, "Creating drives", |run| {
                for drive in &missing {
                    let path = paths.drive(&drive.name);
                    create_atomically(&path, |tmp| disk::create_drive(tmp, drive.size.bytes()))?;
                    run.guard
                        .push_remove(format!("drive {}", drive.name), &path);
                }
                Ok(())
            })?;
        }

        let machine = host
            .resolve_machine(&config.advanced.machine)
            .map_err(UpError::from)?;
        let firmware = self.firmware(&machine)?;

        let guest = GuestIdentity::ensure(paths)?;
        let args = seed::args(config, &guest, agent_binary::BYTES);
        // Rebuilt only when what goes into it changed (config, keys, agent).
        if !self.state.is_completed(Milestone::SeedBuilt) || seed::is_stale(paths, &args)? {
            let existed = paths.seed_iso().exists();
            self.milestone(
                Milestone::SeedBuilt,
                "Building the cloud-init seed",
                |run| {
                    seed::ensure_iso(paths, &args)?;
                    if !existed {
                        run.guard.push_remove("seed image", &paths.seed_iso());
                    }
                    Ok(())
                },
            )?;
        }

        // Everything the VM binds is checked before anything is started.
        for port in &config.ports {
            check_port_free(port.bind, port.host.get())?;
        }
        let ssh_port = free_port()?;
        paths.ensure_runtime_dir(&self.instance.dirs)?;
        let runtime_dir = paths.runtime.clone();
        self.guard.push("runtime directory", move || {
            match std::fs::remove_dir_all(&runtime_dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                _ => Ok(()),
            }
        });
        let agent = self.agent_channel(&host)?;

        let shares = self.start_virtiofsd()?;
        let spec = VmSpec {
            name: paths.id.to_string(),
            accel,
            machine: machine.clone(),
            cpus: config.resources.cpus,
            memory_mb: config.resources.memory_mb,
            firmware: firmware.clone(),
            nvram: paths.nvram(),
            overlay: overlay.clone(),
            drives: config
                .drives
                .iter()
                .map(|d| Drive {
                    name: d.name.clone(),
                    path: paths.drive(&d.name),
                })
                .collect(),
            seed: paths.seed_iso(),
            agent: agent.clone(),
            mac: guest.mac_address.clone(),
            ssh_port,
            forwards: config
                .ports
                .iter()
                .map(|p| Forward {
                    bind: p.bind,
                    host: p.host.get(),
                    guest: p.guest.get(),
                })
                .collect(),
            shares: shares.iter().map(|(share, _)| share.clone()).collect(),
            qmp: paths.qmp_socket(),
            serial_log: paths.serial_log(),
            pid_file: paths.qemu_pid(),
            paused: self.options.restore.is_some(),
        };
        if let Some(tag) = &self.options.restore {
            let record = self
                .state
                .snapshots
                .get(tag)
                .ok_or_else(|| UpError::NoSnapshot(tag.clone()))?;
            let changes = record.devices.differences(&DeviceSet::of(&spec));
            if !changes.is_empty() {
                return Err(UpError::DevicesChanged {
                    tag: tag.clone(),
                    changes: changes.join("; "),
                }
                .into());
            }
        }
        let pid = self.milestone(Milestone::Booted, "Starting QEMU", |run| {
            let args = qemu_args::qemu_args(&spec);
            let pid = qemu::start(&host.qemu, &args, &paths.qemu_pid()).map_err(UpError::from)?;
            let qmp = paths.qmp_socket();
            run.guard.push("QEMU", move || {
                runtime().block_on(qemu::stop(&qmp, pid, Duration::ZERO, true));
                Ok(())
            });
            Ok(pid)
        })?;
        let info = RuntimeInfo {
            pid,
            started: unix_now(),
            qemu_version: host.qemu_version.clone(),
            accel: match accel {
                Accel::Kvm => "kvm".into(),
                Accel::Tcg => "tcg".into(),
            },
            machine,
            firmware: match firmware {
                rum_firmware::Firmware::Bios { .. } => "bios".into(),
                rum_firmware::Firmware::Uefi { .. } => "uefi".into(),
            },
            agent_transport: match agent {
                AgentChannel::Serial { .. } => "serial".into(),
                AgentChannel::Vsock { .. } => "vsock".into(),
            },
            vsock_cid: match agent {
                AgentChannel::Vsock { cid } => Some(cid),
                AgentChannel::Serial { .. } => None,
            },
            ssh_port,
            ports: config
                .ports
                .iter()
                .map(|p| format!("{}:{} → {}", p.bind, p.host, p.guest))
                .collect(),
            mounts: config
                .mounts
                .iter()
                .map(|m| format!("{} → {}", m.source.display(), m.target))
                .collect(),
            virtiofsd_pids: shares.iter().map(|(_, pid)| *pid).collect(),
            devices: DeviceSet::of(&spec),
            snapshot_nodes: spec.snapshot_nodes(),
        };
        info.save(&paths.runtime_info())
            .map_err(|source| UpError::Write {
                path: paths.runtime_info(),
                source,
            })?;

        if let Some(tag) = self.options.restore.clone() {
            let step = self
                .reporter
                .step(format!("Restoring the `{tag}` snapshot"));
            let nodes = spec.snapshot_nodes();
            let loaded = self.rt.block_on(super::snapshots::load_and_continue(
                &paths.qmp_socket(),
                &tag,
                &nodes,
            ));
            match loaded {
                Ok(()) => step.done(),
                Err(e) => {
                    step.fail_with(&e);
                    return Err(e);
                }
            }
        }
        let client = self.milestone(
            Milestone::AgentReady,
            "Waiting for the guest agent",
            |run| run.wait_for_agent(&info, pid),
        )?;
        self.wait_for_cloud_init(&client)?;
        Ok(Booted {
            client,
            pid,
            info,
            spec,
        })
    }

    /// Users, SSH and packages are cloud-init's work, done after the agent
    /// starts (from bootcmd): the VM is ready once cloud-init has finished.
    fn wait_for_cloud_init(&mut self, client: &Client) -> Result<(), Error> {
        let step = self.reporter.step("Waiting for cloud-init to finish");
        let request = ExecRequest::argv(["cloud-init", "status", "--wait"]);
        match self.rt.block_on(client.exec_output(request)) {
            Ok(out) => match out.status.code {
                Some(0) => step.done(),
                // 2: finished with recoverable errors.
                Some(2) => {
                    step.done();
                    self.reporter.warn("cloud-init finished with recoverable errors; `rum exec -- cloud-init status --long` tells which");
                }
                _ => {
                    step.fail("cloud-init failed");
                    self.reporter.warn("cloud-init reports an error; `rum exec -- cloud-init status --long` tells which");
                }
            },
            Err(rum_agent::Error::Agent { .. }) => step.skip("no cloud-init in this image"),
            Err(e) => {
                step.fail(&e.to_string());
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Runs one step as `milestone`: shown while it runs, recorded only once
    /// it has finished, and followed by the test failure injection.
    fn milestone<T>(
        &mut self,
        milestone: Milestone,
        title: &str,
        step: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.milestone_shown(milestone, title, |run, _| step(run))
    }

    /// A milestone whose work draws on its own step (progress, warnings).
    fn milestone_shown<T>(
        &mut self,
        milestone: Milestone,
        title: &str,
        step: impl FnOnce(&mut Self, &crate::output::Step) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let shown = self.reporter.step(title);
        self.state.start(milestone);
        self.save_state();
        let result = step(self, &shown).and_then(|value| match &self.options.fail_after {
            Some(name) if name == milestone_key(milestone) => Err(Injected(name.clone()).into()),
            _ => Ok(value),
        });
        match result {
            Ok(value) => {
                self.state.complete(milestone);
                self.save_state();
                shown.done();
                Ok(value)
            }
            Err(e) => {
                self.state.fail(milestone, &e.to_string());
                self.save_state();
                shown.fail_with(&e);
                Err(e)
            }
        }
    }

    /// The base image as a local file: the configured path, or the cached
    /// download (fetched now if needed, each retry kept in the history).
    fn base_image(&mut self, step: &crate::output::Step) -> Result<image::Resolved, Error> {
        let image = &self.instance.config.image;
        let cache = image::Cache::new(&self.instance.dirs);
        let state_file = self.instance.paths.state_file();
        let state = &mut *self.state;
        let mut shown = image::shown::Shown {
            step,
            record: |attempt: u32, delay: Duration, error: &str| {
                let delay_ms = delay.as_millis() as u64;
                state.retrying(Milestone::ImageReady, attempt, delay_ms, error);
                let _ = state.save(&state_file);
            },
        };
        let mut downloader = image::Downloader::new(image::Policy::default(), &mut shown);
        Ok(image::resolve(
            &image.base,
            image.sha256.as_ref(),
            &cache,
            &mut downloader,
        )?)
    }

    fn save_state(&self) {
        if let Err(e) = self.state.save(&self.instance.paths.state_file()) {
            self.reporter.warn(&e.to_string());
        }
    }

    fn accel(&self, host: &Host) -> Result<Accel, Error> {
        let (choice, source) = match std::env::var("RUM_ACCEL") {
            Ok(value) => match AccelChoice::parse(&value) {
                Some(choice) => (choice, "RUM_ACCEL"),
                None => return Err(UpError::BadAccelEnv(value).into()),
            },
            Err(_) => (self.instance.config.advanced.accel, "[advanced] accel"),
        };
        Ok(match choice {
            AccelChoice::Tcg => Accel::Tcg,
            AccelChoice::Kvm if host.kvm => Accel::Kvm,
            AccelChoice::Kvm => return Err(UpError::NoKvm(source).into()),
            AccelChoice::Auto if host.kvm => Accel::Kvm,
            AccelChoice::Auto => {
                self.reporter
                    .warn("KVM is not usable here (/dev/kvm); using TCG, which is much slower");
                Accel::Tcg
            }
        })
    }

    fn firmware(&mut self, machine: &str) -> Result<rum_firmware::Firmware, Error> {
        let interface = match self.instance.config.advanced.firmware {
            FirmwareChoice::Bios => rum_firmware::Interface::Bios,
            FirmwareChoice::Uefi => rum_firmware::Interface::Uefi,
            // UEFI only for an image that cannot boot otherwise: hybrid
            // cloud images boot either way, and SeaBIOS starts faster.
            FirmwareChoice::Auto => {
                let overlay = self.instance.paths.overlay();
                match disk::backing_file(&overlay).map_err(UpError::from)? {
                    Some(base) => {
                        let info = disk::inspect(&base).map_err(UpError::from)?;
                        match disk::boot_needs(&base, info.format).map_err(UpError::from)? {
                            disk::BootNeeds::Uefi => rum_firmware::Interface::Uefi,
                            disk::BootNeeds::Bios | disk::BootNeeds::Unknown => {
                                rum_firmware::Interface::Bios
                            }
                        }
                    }
                    None => rum_firmware::Interface::Bios,
                }
            }
        };
        let config_home = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        let dirs = rum_firmware::search_dirs(config_home.as_deref());
        let descriptors = rum_firmware::load(&dirs).map_err(UpError::from)?;
        let request = rum_firmware::Request {
            architecture: "x86_64",
            machine,
            interface,
            secure_boot: false,
        };
        let firmware =
            rum_firmware::select(&descriptors, &request, &dirs).map_err(UpError::from)?;
        if let rum_firmware::Firmware::Uefi { vars_template, .. } = &firmware {
            let nvram = self.instance.paths.nvram();
            if rum_firmware::ensure_nvram(&vars_template.filename, &nvram).map_err(UpError::from)? {
                self.guard.push("UEFI variable store", move || {
                    std::fs::remove_file(&nvram).map_err(|e| e.to_string())
                });
            }
        }
        Ok(firmware)
    }

    fn agent_channel(&self, host: &Host) -> Result<AgentChannel, Error> {
        let vsock = AgentChannel::Vsock {
            cid: vsock_cid(self.instance.paths.id.as_str()),
        };
        let serial = AgentChannel::Serial {
            socket: self.instance.paths.agent_socket(),
        };
        Ok(match self.instance.config.advanced.agent_transport {
            AgentTransport::Serial => serial,
            AgentTransport::Vsock if host.vhost_vsock => vsock,
            AgentTransport::Vsock => return Err(UpError::NoVsock.into()),
            AgentTransport::Auto if host.vhost_vsock => vsock,
            AgentTransport::Auto => serial,
        })
    }

    /// One virtiofsd per mount, each stopped by the guard on failure.
    fn start_virtiofsd(&mut self) -> Result<Vec<(Share, u32)>, Error> {
        let mounts = &self.instance.config.mounts;
        if mounts.is_empty() {
            return Ok(Vec::new());
        }
        let binary = host::find_virtiofsd().map_err(UpError::from)?;
        let paths = &self.instance.paths;
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let step = self.reporter.step(format!(
            "Starting virtiofsd for {} mount{}",
            mounts.len(),
            if mounts.len() == 1 { "" } else { "s" }
        ));
        let mut started = Vec::new();
        for (i, mount) in mounts.iter().enumerate() {
            let spec = virtiofsd::ShareSpec {
                source: mount.source.clone(),
                socket: paths.virtiofs_socket(i),
                readonly: mount.readonly,
                host_uid: uid,
                host_gid: gid,
                privileged: uid == 0,
            };
            let pid = match virtiofsd::start(
                &binary,
                &spec,
                &paths.virtiofsd_log(i),
                &paths.virtiofsd_pid(i),
            ) {
                Ok(pid) => pid,
                Err(e) => {
                    step.fail_with(&e);
                    return Err(UpError::from(e).into());
                }
            };
            self.guard
                .push(format!("virtiofsd for {}", mount.target), move || {
                    process::terminate(pid, Duration::from_secs(2));
                    Ok(())
                });
            started.push((
                Share {
                    tag: mount.tag.clone(),
                    socket: spec.socket,
                },
                pid,
            ));
        }
        step.done();
        Ok(started)
    }

    fn wait_for_agent(&mut self, info: &RuntimeInfo, pid: u32) -> Result<Client, Error> {
        let timeout = std::env::var("RUM_BOOT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_BOOT_TIMEOUT);
        let endpoint = endpoint(self.instance, info);
        let serial_log = self.instance.paths.serial_log();
        let started = Instant::now();
        let mut delay = BACKOFF_START;
        let mut attempt = 0;
        loop {
            if !process::alive(pid) {
                return Err(UpError::QemuExited(tail(&serial_log, 20)).into());
            }
            let options = ConnectOptions {
                retry: Duration::from_millis(500),
                timeout: Duration::from_secs(5),
            };
            let last = match self.rt.block_on(Client::connect(&endpoint, &options)) {
                Ok(client) => return Ok(client),
                Err(e) => e.to_string(),
            };
            attempt += 1;
            let console = std::fs::metadata(&serial_log).map(|m| m.len()).unwrap_or(0);
            if console == 0 && started.elapsed() > NO_PROGRESS_AFTER {
                return Err(UpError::NoProgress(NO_PROGRESS_AFTER).into());
            }
            if started.elapsed() + delay > timeout {
                return Err(UpError::AgentTimeout {
                    timeout,
                    last,
                    serial_log,
                }
                .into());
            }
            self.state.retrying(
                Milestone::AgentReady,
                attempt,
                delay.as_millis() as u64,
                &last,
            );
            self.save_state();
            std::thread::sleep(delay);
            delay = (delay * 2).min(BACKOFF_CAP);
        }
    }
}

/// The name `RUM_TEST_FAIL_AFTER` uses for a milestone.
pub fn milestone_key(milestone: Milestone) -> &'static str {
    match milestone {
        Milestone::ImageReady => "image_ready",
        Milestone::OverlayCreated => "overlay_created",
        Milestone::DrivesCreated => "drives_created",
        Milestone::SeedBuilt => "seed_built",
        Milestone::Booted => "booted",
        Milestone::AgentReady => "agent_ready",
        Milestone::SnapshotTaken => "snapshot_taken",
        Milestone::SystemProvisioned => "system_provisioned",
        Milestone::BootProvisioned => "boot_provisioned",
    }
}

/// Creates a file through a temporary name, so a crash never leaves a half-made one.
fn create_atomically(
    path: &Path,
    create: impl FnOnce(&Path) -> Result<(), disk::DiskError>,
) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    create(&tmp).map_err(UpError::from)?;
    std::fs::rename(&tmp, path).map_err(|source| UpError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}

fn check_port_free(bind: IpAddr, port: u16) -> Result<(), UpError> {
    TcpListener::bind((bind, port))
        .map(drop)
        .map_err(|_| UpError::PortTaken { bind, port })
}

/// A free loopback port for the SSH forward.
fn free_port() -> Result<u16, UpError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|_| UpError::PortTaken {
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
    })?;
    Ok(listener.local_addr().map(|a| a.port()).unwrap_or(0))
}

/// A guest CID from the instance id, clear of the reserved 0–2.
fn vsock_cid(id: &str) -> u32 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.as_bytes());
    3 + u32::from_le_bytes(digest[..4].try_into().expect("4 bytes")) % 0x7fff_0000
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
