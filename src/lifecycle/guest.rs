//! Waiting for the guest: its agent answering, then cloud-init finished;
//! and setting its clock and RNG right after a restore.

use super::agent::endpoint;
use super::error::LifecycleError;
use super::error::UpError;
use super::{Instance, RuntimeInfo};
use crate::output::Reporter;
use crate::state::{Milestone, State};
use crate::vm::process;
use rum_agent::protocol::ExecRequest;
use rum_agent::{Client, ConnectOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the guest may take to answer after QEMU starts. Under TCG a
/// cloud image needs about a minute here; `RUM_BOOT_TIMEOUT` (seconds) overrides.
const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// A guest that has printed nothing on its console by then is stuck.
const NO_PROGRESS_AFTER: Duration = Duration::from_secs(90);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Connects to the agent of the VM QEMU `pid` runs, retrying with backoff
/// (each retry kept in the history) until it answers, QEMU dies, the
/// console stays silent, or the boot timeout passes.
pub fn wait_for_agent(
    instance: &Instance,
    info: &RuntimeInfo,
    state: &mut State,
    rt: &tokio::runtime::Runtime,
) -> Result<Client, LifecycleError> {
    let timeout = std::env::var("RUM_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_BOOT_TIMEOUT);
    let endpoint = endpoint(instance, info);
    let serial_log = instance.paths.serial_log();
    let started = Instant::now();
    let mut delay = BACKOFF_START;
    let mut attempt = 0;
    loop {
        if !process::alive(info.pid) {
            return Err(UpError::QemuExited(tail(&serial_log, 20)).into());
        }
        let options = ConnectOptions {
            retry: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
        };
        let last = match rt.block_on(Client::connect(&endpoint, &options)) {
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
        state.retrying(
            Milestone::AgentReady,
            attempt,
            delay.as_millis() as u64,
            &last,
        );
        let _ = state.save(&instance.paths.state_file());
        std::thread::sleep(delay);
        delay = (delay * 2).min(BACKOFF_CAP);
    }
}

/// Users, SSH and packages are cloud-init's work, done after the agent
/// starts (from bootcmd): the VM is ready once cloud-init has finished.
pub fn wait_for_cloud_init(
    client: &Client,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<(), LifecycleError> {
    let step = reporter.step("Waiting for cloud-init to finish");
    let request = ExecRequest::argv(["cloud-init", "status", "--wait"]);
    match rt.block_on(client.exec_output(request)) {
        Ok(out) => match out.status.code {
            Some(0) => step.done(),
            // 2: finished with recoverable errors.
            Some(2) => {
                step.done();
                reporter.warn("cloud-init finished with recoverable errors; `rum exec -- cloud-init status --long` tells which");
            }
            _ => {
                step.fail("cloud-init failed");
                reporter.warn("cloud-init reports an error; `rum exec -- cloud-init status --long` tells which");
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

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A clock set by a round trip longer than this is set again.
const CLOCK_ROUND_TRIP: Duration = Duration::from_millis(100);
const CLOCK_TRIES: usize = 3;

/// After a restore the guest runs on from the snapshot's moment: its clock
/// shows the snapshot's time and its RNG would repeat the snapshot's
/// numbers. The clock is set until a round trip is short (a guest still
/// busy after the load answers late, and the time it was sent is then stale
/// by that long); the RNG reseeds from host randomness.
pub fn after_restore(client: &Client, rt: &tokio::runtime::Runtime, reporter: &Reporter) {
    if let Err(e) = rt.block_on(set_clock(client)) {
        reporter.warn(&format!("Could not set the guest clock: {e}"));
    }
    let reseeded = host_random().and_then(|seed| {
        rt.block_on(client.reseed(&seed))
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    if let Err(e) = reseeded {
        reporter.warn(&format!(
            "Could not reseed the guest's random number generator: {e}"
        ));
    }
}

/// Sets the guest clock to the host's, again while a set's round trip is
/// long. Also after a snapshot save: the guest's clock stood still while
/// the save stopped the VM.
pub async fn set_clock(client: &Client) -> Result<(), rum_agent::Error> {
    for _ in 0..CLOCK_TRIES {
        let sent = Instant::now();
        client.set_time(std::time::SystemTime::now()).await?;
        if sent.elapsed() <= CLOCK_ROUND_TRIP {
            break;
        }
    }
    Ok(())
}

/// 32 bytes from the host's RNG.
fn host_random() -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut seed = vec![0; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(seed)
}
