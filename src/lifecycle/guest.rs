//! Waiting for the guest: its agent answering, then cloud-init finished;
//! and setting its clock and RNG right after a restore.

use super::agent::endpoint;
use super::error::LifecycleError;
use super::error::UpError;
use super::{Instance, RuntimeInfo};
use crate::output::Reporter;
use crate::state::{Milestone, State};
use crate::vm::process;
use crate::vm::spec::Accel;
use rum_agent::{Client, ConnectOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the guest may take to answer after QEMU starts. Under TCG a
/// cloud image needs about a minute here; `RUM_BOOT_TIMEOUT` (seconds) overrides.
const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// A guest that has printed nothing on its console by then is stuck.
const NO_PROGRESS_AFTER: Duration = Duration::from_secs(90);
/// A console that stops growing for this long before the agent answers is
/// a stalled boot: KVM guests print within seconds, TCG ones on a busy host
/// can pause for a minute or more. `RUM_STALL_TIMEOUT` (seconds) overrides.
const STALL_KVM: Duration = Duration::from_secs(45);
const STALL_TCG: Duration = Duration::from_secs(300);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_millis(500);

/// Connects to the agent of the VM QEMU `pid` runs, retrying with backoff
/// (each retry kept in the history) until it answers, QEMU dies, the
/// console of a `booting` guest stays silent or stops, or the boot timeout
/// passes.
pub fn wait_for_agent(
    instance: &Instance,
    info: &RuntimeInfo,
    state: &mut State,
    booting: bool,
    rt: &tokio::runtime::Runtime,
) -> Result<Client, LifecycleError> {
    let timeout = std::env::var("RUM_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_BOOT_TIMEOUT);
    let endpoint = endpoint(instance, info);
    let serial_log = instance.paths.serial_log();
    let stall = std::env::var("RUM_STALL_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(match info.accel {
            Accel::Kvm => STALL_KVM,
            Accel::Tcg => STALL_TCG,
        });
    let started = Instant::now();
    let mut console = Console::new(started);
    let mut delay = BACKOFF_START;
    let mut attempt = 0;
    loop {
        if !process::alive(info.pid) {
            return Err(UpError::QemuExited {
                console: tail(&serial_log, 20),
                qemu: tail(&instance.paths.qemu_log(), 5),
            }
            .into());
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
        let now = Instant::now();
        console.observe(
            std::fs::metadata(&serial_log).map(|m| m.len()).unwrap_or(0),
            now,
        );
        match console.verdict(now, stall) {
            _ if !booting => {}
            Verdict::Progressing => {}
            Verdict::Silent => return Err(UpError::NoProgress(NO_PROGRESS_AFTER).into()),
            Verdict::Stalled {
                silent,
                last_output,
            } => {
                return Err(UpError::Stalled {
                    silent,
                    last_output,
                    accel: info.accel,
                    console: tail(&serial_log, 20),
                }
                .into());
            }
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

/// What the console log's growth says of a boot whose agent has not answered.
struct Console {
    started: Instant,
    len: u64,
    grew_at: Instant,
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Progressing,
    /// Nothing printed since QEMU started, for `NO_PROGRESS_AFTER`.
    Silent,
    /// Printed, then nothing new for the stall limit.
    Stalled {
        silent: Duration,
        last_output: Duration,
    },
}

impl Console {
    fn new(started: Instant) -> Self {
        Self {
            started,
            len: 0,
            grew_at: started,
        }
    }

    fn observe(&mut self, len: u64, now: Instant) {
        if len > self.len {
            self.len = len;
            self.grew_at = now;
        }
    }

    fn verdict(&self, now: Instant, stall: Duration) -> Verdict {
        let silent = now.duration_since(self.grew_at);
        match self.len {
            0 if silent > NO_PROGRESS_AFTER => Verdict::Silent,
            0 => Verdict::Progressing,
            _ if silent > stall => Verdict::Stalled {
                silent,
                last_output: self.grew_at.duration_since(self.started),
            },
            _ => Verdict::Progressing,
        }
    }
}

/// cloud-init writes this once its last stage has finished.
const CLOUD_INIT_RESULT: &str = "/run/cloud-init/result.json";
const CLOUD_INIT_POLL: Duration = Duration::from_millis(200);

/// Users, SSH and packages are cloud-init's work, done after the agent
/// starts (from bootcmd): the VM is ready once cloud-init has finished.
/// Waits for its last stage to finish, asking the agent for its
/// result file. Not `cloud-init status --wait`: under TCG that Python
/// process takes seconds of the guest's CPUs while cloud-init still runs.
pub fn wait_for_cloud_init(
    client: &Client,
    rt: &tokio::runtime::Runtime,
    reporter: &Reporter,
) -> Result<(), LifecycleError> {
    let step = reporter.step("Waiting for cloud-init to finish");
    let result = rt.block_on(async {
        if client.pull_bytes("/usr/bin/cloud-init").await.is_err() {
            return Ok(None);
        }
        loop {
            match client.pull_bytes(CLOUD_INIT_RESULT).await {
                Ok((_, bytes)) => return Ok(Some(bytes)),
                Err(rum_agent::Error::Agent { .. }) => {
                    tokio::time::sleep(CLOUD_INIT_POLL).await;
                }
                Err(e) => return Err(e),
            }
        }
    });
    match result.map(|bytes| bytes.map(|b| CloudInit::of(&b))) {
        Ok(Some(CloudInit::Done)) => step.done(),
        Ok(Some(CloudInit::Recoverable(errors))) => {
            step.done();
            reporter.warn(&format!(
                "cloud-init finished with recoverable errors:\n  {}\n`rum exec -- cloud-init status --long` tells more",
                errors.join("\n  ")
            ));
        }
        Ok(Some(CloudInit::Failed(errors))) => {
            step.fail("cloud-init failed");
            reporter.warn(&format!(
                "cloud-init reports errors ({errors}); `rum exec -- cloud-init status --long` tells more"
            ));
        }
        Ok(None) => step.skip("no cloud-init in this image"),
        Err(e) => {
            step.fail(&e.to_string());
            return Err(e.into());
        }
    }
    Ok(())
}

/// How cloud-init's run ended, from its `result.json`.
#[derive(Debug, PartialEq, Eq)]
enum CloudInit {
    Done,
    /// Each as `LEVEL: message`.
    Recoverable(Vec<String>),
    Failed(String),
}

impl CloudInit {
    fn of(result: &[u8]) -> Self {
        let value: serde_json::Value = match serde_json::from_slice(result) {
            Ok(v) => v,
            Err(e) => return CloudInit::Failed(format!("unreadable {CLOUD_INIT_RESULT}: {e}")),
        };
        let v1 = &value["v1"];
        let errors: Vec<String> = v1["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
            .collect();
        if !errors.is_empty() {
            return CloudInit::Failed(errors.join("; "));
        }
        // cloud-init 23.4 and later: `{"WARNING": ["…"], "DEPRECATED": […]}`.
        let recoverable: Vec<String> = v1["recoverable_errors"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(level, messages)| {
                let messages = messages.as_array().cloned().unwrap_or_default();
                messages.into_iter().map(move |m| {
                    let text = m.as_str().map_or_else(|| m.to_string(), str::to_owned);
                    format!("{level}: {text}")
                })
            })
            .collect();
        if recoverable.is_empty() {
            CloudInit::Done
        } else {
            CloudInit::Recoverable(recoverable)
        }
    }
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
        rt.block_on(answered("the reseed", client.reseed(&seed)))
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
        answered(
            "the clock's setting",
            client.set_time(std::time::SystemTime::now()),
        )
        .await?;
        if sent.elapsed() <= CLOCK_ROUND_TRIP {
            break;
        }
    }
    Ok(())
}

/// The guest's page cache dropped and its memory compacted: the free
/// pages go back to the host through the balloon's free page reporting,
/// so a snapshot that streams RAM (memfd) writes less: 251 → 173 MiB for
/// the test guest at `pre-provision` (`scripts/bench --snapshots`). The
/// guest reports pages 2 s after they are freed, a part of them per round.
pub async fn shrink_memory(client: &Client) -> Result<(), rum_agent::Error> {
    let drop = rum_agent::protocol::ExecRequest::shell(
        "sync; echo 3 > /proc/sys/vm/drop_caches; echo 1 > /proc/sys/vm/compact_memory",
    );
    answered("dropping the page cache", client.exec_output(drop)).await?;
    tokio::time::sleep(REPORTING_WAIT).await;
    Ok(())
}

const REPORTING_WAIT: Duration = Duration::from_secs(3);

/// A guest that does not answer a call rum makes on its own (no user
/// command waits on it) must not hold rum up for ever.
async fn answered<T>(
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, rum_agent::Error>>,
) -> Result<T, rum_agent::Error> {
    tokio::time::timeout(HOUSEKEEPING_ANSWER, call)
        .await
        .unwrap_or(Err(rum_agent::Error::NoAnswer {
            what,
            after: HOUSEKEEPING_ANSWER,
        }))
}

const HOUSEKEEPING_ANSWER: Duration = Duration::from_secs(20);

/// 32 bytes from the host's RNG.
fn host_random() -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut seed = vec![0; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_that_stops_growing_is_a_stall_and_a_slow_one_is_not() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let stall = Duration::from_secs(45);
        let mut console = Console::new(t0);
        assert_eq!(console.verdict(at(80), stall), Verdict::Progressing);
        assert_eq!(console.verdict(at(91), stall), Verdict::Silent);
        console.observe(100, at(5));
        // Slow but printing: a line every 40 s is never cut off.
        for s in (45..400).step_by(40) {
            console.observe(100 + s, at(s));
            assert_eq!(console.verdict(at(s + 40), stall), Verdict::Progressing);
        }
        console.observe(500, at(405));
        console.observe(500, at(440));
        assert_eq!(
            console.verdict(at(451), stall),
            Verdict::Stalled {
                silent: Duration::from_secs(46),
                last_output: Duration::from_secs(405)
            }
        );
    }

    #[test]
    fn reads_how_cloud_init_ended() {
        assert_eq!(
            CloudInit::of(br#"{"v1": {"datasource": "DataSourceNoCloud", "errors": []}}"#),
            CloudInit::Done
        );
        assert_eq!(
            CloudInit::of(
                br#"{"v1": {"errors": [], "recoverable_errors": {"WARNING": ["x"], "DEPRECATED": ["y", "z"]}}}"#
            ),
            CloudInit::Recoverable(vec![
                "DEPRECATED: y".into(),
                "DEPRECATED: z".into(),
                "WARNING: x".into()
            ])
        );
        assert_eq!(
            CloudInit::of(br#"{"v1": {"errors": ["('users_groups', KeyError('x'))"]}}"#),
            CloudInit::Failed("('users_groups', KeyError('x'))".into())
        );
        assert!(matches!(CloudInit::of(b"{"), CloudInit::Failed(_)));
    }
}
