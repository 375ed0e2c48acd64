//! Bringing a VM up, the recipe: disks, firmware, seed, the plan, virtiofsd,
//! QEMU, the runtime record, then the guest waits — for a cold boot, or
//! into a paused QEMU that loads a snapshot first (`Restoring`). Each step
//! registers its inverse on the caller's rollback guard; milestones already
//! completed are not redone.

use super::error::LifecycleError;
use super::error::UpError;
use super::milestones::Milestones;
use super::plan::{self, Inputs};
use super::ports::{check_port_free, free_port};
use super::{Instance, RuntimeInfo, guest, reload, runtime};
use crate::clock::unix_now;
use crate::config::{Accel as AccelChoice, FirmwareChoice, GuestRam};
use crate::drift::{Applies, Mounts};
use crate::guard::Guard;
use crate::identity::GuestIdentity;
use crate::output::{Reporter, Step};
use crate::state::{DeviceSet, Milestone, Plugged, ShareRecord, State};
use crate::vm::host::{self, Host, Kvm};
use crate::vm::spec::{Accel, Share, VmSpec, plugged_index};
use crate::vm::{process, qemu, qemu_args};
use crate::{agent_binary, disk, image, ram, seed};
use rum_agent::Client;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A VM whose agent answers and whose cloud-init has finished.
pub struct Booted {
    pub client: Client,
    pub info: RuntimeInfo,
}

/// Booting into a snapshot: both come from `snapshots`, which owns the check
/// and the load.
pub struct Restoring<'a> {
    /// Refuses a device set the snapshot cannot be loaded into.
    pub check: &'a dyn Fn(&DeviceSet) -> Result<(), LifecycleError>,
    /// Starts putting the snapshot's RAM copy into the VM's new RAM file,
    /// if it has one, while QEMU starts.
    pub fill: &'a dyn Fn() -> Option<ram::Filling>,
    /// Loads the snapshot into the paused QEMU (its RAM file filled first)
    /// and lets it run.
    pub load: &'a Load<'a>,
    /// The shares the snapshot had plugged into spare ports.
    pub plugged: &'a [Plugged],
}

/// `Restoring::load`: the paused QEMU, and its RAM file's fill if any.
pub type Load<'a> = dyn Fn(&RuntimeInfo, Option<ram::Filling>) -> Result<(), LifecycleError> + 'a;

pub fn bring_up(
    instance: &Instance,
    state: &mut State,
    guard: &mut Guard,
    restoring: Option<Restoring<'_>>,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<Booted, LifecycleError> {
    let mut boot = Boot {
        instance,
        reporter,
        guard,
        steps: Milestones::new(state, &instance.paths, reporter),
        made: false,
    };
    let plugged = restoring.as_ref().map_or(&[][..], |r| r.plugged);
    let (spec, host) = boot.prepare(restoring.is_some(), plugged)?;
    if let Some(restoring) = &restoring {
        (restoring.check)(&DeviceSet::of(&spec))?;
    }
    // QEMU maps the file without touching it, and runs nothing before the load.
    let filling = restoring.as_ref().and_then(|r| (r.fill)());
    let info = match boot.start(&spec, &host) {
        // The same nested KVM may refuse the guest outright (seen here:
        // "failed to set MSR 0x10a", then an assertion in QEMU's kvm.c).
        Err(e)
            if restoring.is_none()
                && spec.accel == Accel::Kvm
                && chose_kvm_itself(instance)
                && kvm_refused(&e) =>
        {
            reporter.warn(&format!(
                "QEMU could not start the guest under KVM ({}); starting it again with TCG, which is slower. This VM keeps TCG; `RUM_ACCEL=kvm` tries KVM again",
                first_line(&e)
            ));
            boot.steps.state.kvm_hangs = true;
            return boot_again(&mut boot, plugged, rt);
        }
        started => started?,
    };
    if let Some(restoring) = &restoring {
        (restoring.load)(&info, filling)?;
    }
    match await_guest(
        instance,
        boot.steps.state,
        &info,
        restoring.is_none(),
        rt,
        reporter,
    ) {
        Ok(client) => Ok(Booted { client, info }),
        Err(e) if restoring.is_none() && kvm_stalled(&e) && chose_kvm_itself(instance) => {
            // Nested KVM that hangs guests: this VM runs under TCG from now on.
            reporter.warn(&format!(
                "KVM did not boot the guest ({}s without a console line); starting it again with TCG, which is slower. This VM keeps TCG; `RUM_ACCEL=kvm` tries KVM again",
                stalled_for(&e)
            ));
            boot.steps.state.kvm_hangs = true;
            boot_again(&mut boot, plugged, rt)
        }
        Err(e) if restoring.is_none() && qemu_aborted(&e) => {
            // A QEMU bug (seen here under TCG: an assertion in its memory
            // map during PCI enumeration), not the guest's or the user's.
            reporter.warn(
                "QEMU failed an internal assertion while the guest was booting (a QEMU bug, see logs/qemu.log); starting it once more",
            );
            boot_again(&mut boot, plugged, rt)
        }
        Err(e) => Err(e),
    }
}

/// A cold boot again after the first one failed before the agent answered:
/// QEMU and virtiofsd stopped, their milestones undone, then started anew.
fn boot_again(
    boot: &mut Boot<'_>,
    plugged: &[Plugged],
    rt: &tokio::runtime::Runtime,
) -> Result<Booted, LifecycleError> {
    super::stop::stop(boot.instance, true);
    boot.steps.state.reset(Milestone::Booted);
    boot.steps.state.reset(Milestone::AgentReady);
    let (spec, host) = boot.prepare(false, plugged)?;
    let info = boot.start(&spec, &host)?;
    let client = await_guest(
        boot.instance,
        boot.steps.state,
        &info,
        true,
        rt,
        boot.reporter,
    )?;
    Ok(Booted { client, info })
}

/// What QEMU logged when it exited at its start.
fn start_log(e: &LifecycleError) -> Option<&str> {
    match e {
        LifecycleError::Up(UpError::Process(process::ProcessError::Failed { log, .. })) => {
            Some(log)
        }
        _ => None,
    }
}

/// QEMU exited at its start with an error that names KVM.
fn kvm_refused(e: &LifecycleError) -> bool {
    start_log(e).is_some_and(|log| log.to_ascii_lowercase().contains("kvm"))
}

/// The first line QEMU logged, for a one-line warning.
fn first_line(e: &LifecycleError) -> String {
    start_log(e).map_or_else(
        || e.to_string(),
        |log| log.lines().next().unwrap_or_default().trim().to_owned(),
    )
}

/// QEMU died on one of its own assertions (its log says so).
fn qemu_aborted(e: &LifecycleError) -> bool {
    matches!(e, LifecycleError::Up(UpError::QemuExited { qemu, .. }) if qemu.contains("Assertion"))
}

fn kvm_stalled(e: &LifecycleError) -> bool {
    matches!(
        e,
        LifecycleError::Up(UpError::Stalled {
            accel: Accel::Kvm,
            ..
        })
    )
}

fn stalled_for(e: &LifecycleError) -> u64 {
    match e {
        LifecycleError::Up(UpError::Stalled { silent, .. }) => silent.as_secs(),
        _ => 0,
    }
}

/// KVM came from `accel = "auto"`, not from the user's word.
fn chose_kvm_itself(instance: &Instance) -> bool {
    std::env::var_os("RUM_ACCEL").is_none() && instance.config.advanced.accel == AccelChoice::Auto
}

/// Waits for the agent of the VM running as `info`, then for cloud-init.
/// `booting`: QEMU started this guest just now, so a console that goes
/// quiet is a stalled boot (a booted or restored guest may well be quiet).
pub fn await_guest(
    instance: &Instance,
    state: &mut State,
    info: &RuntimeInfo,
    booting: bool,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<Client, LifecycleError> {
    let client = Milestones::new(state, &instance.paths, reporter).run(
        Milestone::AgentReady,
        "Waiting for the guest agent",
        |_, state| guest::wait_for_agent(instance, info, state, booting, rt),
    )?;
    crate::testhook::pause("cloud_init");
    guest::wait_for_cloud_init(&client, rt, reporter)?;
    Ok(client)
}

struct Boot<'a> {
    instance: &'a Instance,
    reporter: &'a Reporter,
    guard: &'a mut Guard,
    steps: Milestones<'a>,
    /// The overlay was made in this run: a new VM, or one `--reset`.
    made: bool,
}

impl Boot<'_> {
    /// Everything up to the spec: disks, firmware, seed, ports, runtime dir.
    fn prepare(
        &mut self,
        paused: bool,
        plugged: &[Plugged],
    ) -> Result<(VmSpec, Host), LifecycleError> {
        let config = &self.instance.config;
        let paths = &self.instance.paths;
        crate::fsutil::create_private_dir_all(&paths.logs_dir()).map_err(|source| {
            UpError::Write {
                path: paths.logs_dir(),
                source,
            }
        })?;
        let mut host = Host::probe(config.advanced.qemu.as_deref()).map_err(UpError::from)?;
        // KVM hung this VM's boot once: `auto` means TCG for it.
        if chose_kvm_itself(self.instance)
            && self.steps.state.kvm_hangs
            && host.kvm == Kvm::Hardware
        {
            host.kvm = Kvm::Absent;
        }
        let accel_env = std::env::var("RUM_ACCEL").ok();
        // A wrong accelerator fails before anything is made.
        plan::accel(accel_env.as_deref(), config.advanced.accel, host.kvm)?;
        self.disks()?;
        let machine = host
            .resolve_machine(&config.advanced.machine)
            .map_err(UpError::from)?;
        let firmware = self.firmware(&machine)?;
        let guest = GuestIdentity::ensure(paths)?;
        self.seed(&guest)?;

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
        // Fixed when the VM is made: its snapshots depend on them.
        let state = &mut *self.steps.state;
        // Also for an overlay an earlier, killed `up` made: nothing is fixed
        // yet while no share is recorded and no snapshot depends on it.
        if self.made || (state.shares.is_none() && state.snapshots.is_empty()) {
            state.hotplug_ports = plan::hotplug_ports(&machine);
            state.shares = Some(config.mounts.iter().map(ShareRecord::of).collect());
            state.ram = match config.advanced.guest_ram {
                GuestRam::Auto => {
                    ram::choose(paths.id.as_str(), config.resources.memory_mb, &paths.data)
                }
                GuestRam::Memfd => None,
            };
            state.free_page_reporting = true;
            state.vm_generation_id = true;
            state.tcg_la57_off = true;
        }
        if let Some(ram) = &state.ram {
            // Empty before QEMU maps it; freed when the VM stops.
            ram.prepare(config.resources.memory_mb)?;
            let ram = ram.clone();
            self.guard.push("RAM file", move || {
                ram.remove();
                Ok(())
            });
        }
        let shares = match &state.shares {
            Some(shares) => shares.clone(),
            None => config.mounts.iter().map(ShareRecord::of).collect(),
        };
        let plan = plan::plan(&Inputs {
            config,
            paths,
            host: &host,
            machine,
            accel_env: accel_env.as_deref(),
            firmware,
            mac: &guest.mac_address,
            ssh_port,
            paused,
            hotplug_ports: state.hotplug_ports,
            shares: &shares,
            plugged,
            ram: state.ram.as_ref(),
            free_page_reporting: state.free_page_reporting,
            vm_generation_id: state.vm_generation_id,
            tcg_la57_off: state.tcg_la57_off,
        })?;
        for warning in plan.warnings {
            self.reporter.warn(warning);
        }
        Ok((plan.spec, host))
    }

    /// The overlay on the base image and the data drives, once each.
    fn disks(&mut self) -> Result<(), LifecycleError> {
        let config = &self.instance.config;
        let paths = &self.instance.paths;
        let overlay = paths.overlay();
        let guard = &mut *self.guard;
        if !overlay.exists() {
            // `base` holds the cache lock until the overlay exists, so that
            // `rum image delete` cannot pull the image away meanwhile.
            let (base, base_info) = self.steps.run(
                Milestone::ImageReady,
                "Resolving the image",
                |step, state| {
                    let base = base_image(self.instance, step, state)?;
                    let info = disk::inspect(&base.path).map_err(UpError::from)?;
                    Ok((base, info))
                },
            )?;
            let size = config.resources.disk.bytes().max(base_info.virtual_size);
            self.steps.run(
                Milestone::OverlayCreated,
                "Creating the disk overlay",
                |_, _| {
                    create_atomically(&overlay, |tmp| {
                        disk::create_overlay(tmp, size, &base.path, base_info.format)
                    })?;
                    guard.push_remove("disk overlay", &overlay);
                    Ok(())
                },
            )?;
            self.made = true;
        }
        let missing: Vec<_> = config
            .drives
            .iter()
            .filter(|d| !paths.drive(&d.name).exists())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        crate::fsutil::create_private_dir_all(&paths.drives_dir()).map_err(|source| {
            UpError::Write {
                path: paths.drives_dir(),
                source,
            }
        })?;
        self.steps
            .run(Milestone::DrivesCreated, "Creating drives", |_, _| {
                for drive in &missing {
                    let path = paths.drive(&drive.name);
                    create_atomically(&path, |tmp| disk::create_drive(tmp, drive.size.bytes()))?;
                    guard.push_remove(format!("drive {}", drive.name), &path);
                }
                Ok(())
            })
    }

    /// Rebuilt only when what goes into it changed (config, keys, agent).
    fn seed(&mut self, guest: &GuestIdentity) -> Result<(), LifecycleError> {
        let paths = &self.instance.paths;
        let args = seed::args(&self.instance.config, guest, agent_binary::BYTES);
        if self.steps.state.is_completed(Milestone::SeedBuilt) && !seed::is_stale(paths, &args)? {
            return Ok(());
        }
        let existed = paths.seed_iso().exists();
        let guard = &mut *self.guard;
        self.steps.run(
            Milestone::SeedBuilt,
            "Building the cloud-init seed",
            |_, _| {
                seed::ensure_iso(paths, &args)?;
                if !existed {
                    guard.push_remove("seed image", &paths.seed_iso());
                }
                Ok(())
            },
        )
    }

    fn firmware(&mut self, machine: &str) -> Result<rum_firmware::Firmware, LifecycleError> {
        let paths = &self.instance.paths;
        let firmware = select_firmware(self.instance, machine)?;
        if let rum_firmware::Firmware::Uefi { vars_template, .. } = &firmware {
            let nvram = paths.nvram();
            if rum_firmware::ensure_nvram(&vars_template.filename, &nvram).map_err(UpError::from)? {
                self.guard.push("UEFI variable store", move || {
                    std::fs::remove_file(&nvram).map_err(|e| e.to_string())
                });
            }
        }
        Ok(firmware)
    }

    /// virtiofsd for each share, QEMU, and the runtime record.
    fn start(&mut self, spec: &VmSpec, host: &Host) -> Result<RuntimeInfo, LifecycleError> {
        let paths = &self.instance.paths;
        let virtiofsd_pids = self.start_virtiofsd(&spec.shares)?;
        let guard = &mut *self.guard;
        let pid = self.steps.run(Milestone::Booted, "Starting QEMU", |_, _| {
            let args = qemu_args::qemu_args(spec);
            // QEMU keeps the mode of a log that exists, and daemonized it
            // makes the rest 0640/0750 (umask 027).
            let serial = paths.serial_log();
            crate::fsutil::open_private(&serial, true).map_err(|source| UpError::Write {
                path: serial,
                source,
            })?;
            // The files the arguments name.
            let pid = qemu::start(&host.qemu, &args, &spec.pid_file, &spec.qemu_log)
                .map_err(UpError::from)?;
            crate::testhook::pause("qemu_started");
            for socket in [
                paths.qmp_socket(),
                paths.agent_socket(),
                paths.console_socket(),
            ] {
                let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600));
            }
            let qmp = paths.qmp_socket();
            guard.push("QEMU", move || {
                runtime().block_on(qemu::stop(&qmp, pid, Duration::ZERO, true));
                Ok(())
            });
            Ok(pid)
        })?;
        let info = plan::record(spec, pid, unix_now(), &host.qemu_version, virtiofsd_pids);
        info.store(paths)?;
        // A new VM has all of rum.toml; any boot has its forwards and shares.
        let kinds: &[Applies] = if self.made {
            &Applies::ALL
        } else {
            &[Applies::Live, Applies::NextBoot]
        };
        reload::record_with(self.instance, &Mounts::of(self.steps.state), kinds);
        Ok(info)
    }

    /// One virtiofsd per share, each stopped by the guard on failure.
    fn start_virtiofsd(&mut self, shares: &[Share]) -> Result<Vec<u32>, LifecycleError> {
        if shares.is_empty() {
            return Ok(Vec::new());
        }
        let binary = host::find_virtiofsd().map_err(UpError::from)?;
        let step = self.reporter.step(format!(
            "Starting virtiofsd for {} mount{}",
            shares.len(),
            if shares.len() == 1 { "" } else { "s" }
        ));
        let mut pids = Vec::new();
        for (i, share) in shares.iter().enumerate() {
            let index = share.port.map_or(i, plugged_index);
            let pid = match super::shares::serve(&self.instance.paths, &binary, share, index) {
                Ok(pid) => pid,
                Err(e) => {
                    step.fail_with(&e);
                    return Err(UpError::from(e).into());
                }
            };
            self.guard
                .push(format!("virtiofsd for {}", share.target), move || {
                    process::terminate(pid, Duration::from_secs(2));
                    Ok(())
                });
            pids.push(pid);
        }
        step.done();
        Ok(pids)
    }
}

/// The base image as a local file: the configured path, or the cached
/// download (fetched now if needed, each retry kept in the history).
fn base_image(
    instance: &Instance,
    step: &Step,
    state: &mut State,
) -> Result<image::Resolved, LifecycleError> {
    let image = &instance.config.image;
    let cache = image::Cache::new(&instance.dirs);
    let state_file = instance.paths.state_file();
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

/// Creates a file through a temporary name, so a crash never leaves a half-made one.
fn create_atomically(
    path: &Path,
    create: impl FnOnce(&Path) -> Result<(), disk::DiskError>,
) -> Result<(), LifecycleError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    create(&tmp).map_err(UpError::from)?;
    std::fs::rename(&tmp, path).map_err(|source| UpError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// The firmware the VM boots with (`[advanced] firmware`; `auto` reads the
/// base image's partitions), from the installed descriptors.
pub fn select_firmware(
    instance: &Instance,
    machine: &str,
) -> Result<rum_firmware::Firmware, LifecycleError> {
    let paths = &instance.paths;
    let choice = instance.config.advanced.firmware;
    // Only `auto` looks at the base image.
    let base = match choice {
        FirmwareChoice::Auto => disk::backing_file(&paths.overlay()).map_err(UpError::from)?,
        FirmwareChoice::Bios | FirmwareChoice::Uefi => None,
    };
    let base_needs = match base {
        Some(base) => {
            let info = disk::inspect(&base).map_err(UpError::from)?;
            Some(disk::boot_needs(&base, info.format).map_err(UpError::from)?)
        }
        None => None,
    };
    let interface = plan::firmware_interface(choice, base_needs);
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
    let firmware = rum_firmware::select(&descriptors, &request, &dirs).map_err(UpError::from)?;
    Ok(firmware)
}
