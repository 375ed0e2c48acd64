//! The agent: serves the protocol on every channel the guest has, and runs
//! the cached boot scripts at boot.

mod call;
mod conn;
mod exec;
mod files;
mod provision;
mod serial;
mod system;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rum_agent::protocol::{
    AgentVersion, DEFAULT_STATE_DIR, GUEST_SERIAL_PATH, PROTOCOL_VERSION, VSOCK_PORT,
};
use rum_agent::transport::vsock::{FdStream, VsockListener};

use provision::{ProvisionStore, Runs};

/// Prints a line to stderr (the journal, under systemd); a closed stderr is
/// no reason to stop (`eprintln!` would panic).
macro_rules! log {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "rum-agent: {}", format_args!($($arg)*));
    }};
}
pub(crate) use log;

const USAGE: &str = "\
usage: rum-agent [options]

Serves rum's guest agent protocol. Without --serial/--vsock-port/--listen-unix
it serves both the virtio-serial port (/dev/virtio-ports/org.rum.agent.0) and
AF_VSOCK port 7501165, whichever exist (waiting for them to appear).

  --state-dir DIR      state root (default /var/lib/rum; env RUM_AGENT_STATE_DIR)
  --serial PATH        serve this virtio-serial port
  --vsock-port PORT    serve AF_VSOCK on PORT
  --listen-unix PATH   serve a Unix socket (one session per connection; tests)
  --boot-id-file PATH  where the boot id comes from (default /proc/sys/kernel/random/boot_id)
  --no-boot-run        do not run the cached boot scripts at start
  --version            print the protocol version and build id";

/// What the command line says.
#[derive(Debug)]
pub struct Args {
    pub state_dir: PathBuf,
    pub serial: Option<PathBuf>,
    pub vsock_port: Option<u32>,
    pub listen_unix: Option<PathBuf>,
    pub boot_id_file: PathBuf,
    pub boot_run: bool,
    pub version: bool,
}

impl Args {
    pub fn parse(mut args: impl Iterator<Item = std::ffi::OsString>) -> Result<Args, String> {
        let mut out = Args {
            state_dir: std::env::var_os("RUM_AGENT_STATE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            serial: None,
            vsock_port: None,
            listen_unix: None,
            boot_id_file: PathBuf::from("/proc/sys/kernel/random/boot_id"),
            boot_run: true,
            version: false,
        };
        let mut explicit = false;
        while let Some(arg) = args.next() {
            let arg = arg.to_string_lossy().into_owned();
            let mut value = |name: &str| {
                args.next()
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
            };
            match arg.as_str() {
                "--state-dir" => out.state_dir = value("--state-dir")?,
                "--serial" => {
                    out.serial = Some(value("--serial")?);
                    explicit = true;
                }
                "--vsock-port" => {
                    let v = value("--vsock-port")?;
                    out.vsock_port = Some(
                        v.to_string_lossy()
                            .parse()
                            .map_err(|_| format!("bad --vsock-port {}", v.display()))?,
                    );
                    explicit = true;
                }
                "--listen-unix" => {
                    out.listen_unix = Some(value("--listen-unix")?);
                    explicit = true;
                }
                "--boot-id-file" => out.boot_id_file = value("--boot-id-file")?,
                "--no-boot-run" => out.boot_run = false,
                "--version" => out.version = true,
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        if !explicit {
            out.serial = Some(PathBuf::from(GUEST_SERIAL_PATH));
            out.vsock_port = Some(VSOCK_PORT);
        }
        Ok(out)
    }
}

/// What every connection shares.
pub struct Agent {
    pub version: AgentVersion,
    /// Provisioning's files under the state root.
    pub store: ProvisionStore,
    /// Serialises provisioning runs.
    pub runs: Runs,
}

pub async fn run(args: Args) -> Result<(), String> {
    let version = AgentVersion {
        version: PROTOCOL_VERSION,
        build_id: system::build_id(),
        boot_id: system::boot_id(&args.boot_id_file),
    };
    if args.version {
        println!(
            "rum-agent protocol {} build {}",
            version.version, version.build_id
        );
        return Ok(());
    }
    let store = ProvisionStore::open(&args.state_dir)
        .map_err(|e| format!("cannot use state dir {}: {e}", args.state_dir.display()))?;
    let agent = Arc::new(Agent {
        version,
        store,
        runs: Runs::new(),
    });
    log!(
        "protocol {} build {} boot {} state {}",
        agent.version.version,
        agent.version.build_id,
        agent.version.boot_id,
        args.state_dir.display()
    );

    let mut tasks = tokio::task::JoinSet::new();
    if args.boot_run {
        let agent = agent.clone();
        tasks.spawn(async move {
            provision::boot_run(&agent).await;
            // The boot run is not a server: keep the set from ending early.
            std::future::pending::<()>().await;
        });
    }
    if let Some(path) = args.listen_unix.clone() {
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        let agent = agent.clone();
        tasks.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(conn::serve(agent.clone(), stream, conn::EndOfStream::Close));
                    }
                    Err(e) => {
                        log!("accept on the Unix socket failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    if let Some(port) = args.vsock_port {
        let agent = agent.clone();
        tasks.spawn(async move { serve_vsock(agent, port).await });
    }
    if let Some(path) = args.serial.clone() {
        let agent = agent.clone();
        tasks.spawn(async move { serve_serial(agent, path).await });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Listens on `port` once AF_VSOCK works (the transport module may load late).
async fn serve_vsock(agent: Arc<Agent>, port: u32) {
    let mut complained = false;
    let listener = loop {
        match VsockListener::bind(port) {
            Ok(l) => break l,
            Err(e) => {
                if !complained {
                    log!("no vsock listener on port {port} yet ({e}); retrying");
                    complained = true;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    log!("listening on vsock port {port}");
    loop {
        match listener.accept().await {
            Ok((stream, cid)) => {
                log!("vsock connection from CID {cid}");
                tokio::spawn(conn::serve(agent.clone(), stream, conn::EndOfStream::Close));
            }
            Err(e) => {
                log!("vsock accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Serves the port at `path` forever (waiting for it to appear).
async fn serve_serial(agent: Arc<Agent>, path: PathBuf) {
    let mut complained = false;
    loop {
        let fd = match serial::open(&path) {
            Ok(fd) => fd,
            Err(e) => {
                if !complained {
                    log!("cannot open {} yet ({e}); retrying", path.display());
                    complained = true;
                }
                tokio::time::sleep(serial::POLL * 10).await;
                continue;
            }
        };
        complained = false;
        // Polled for the host's presence while the stream reads and writes.
        let watch = match fd.try_clone() {
            Ok(w) => w,
            Err(e) => {
                log!("cannot poll {}: {e}", path.display());
                tokio::time::sleep(serial::POLL * 10).await;
                continue;
            }
        };
        let stream = match FdStream::new(fd) {
            Ok(s) => s,
            Err(e) => {
                log!("cannot poll {}: {e}", path.display());
                tokio::time::sleep(serial::POLL * 10).await;
                continue;
            }
        };
        log!("serving {}", path.display());
        if !serial::host_connected(watch.as_fd()) {
            serial::wait_for_host(watch.as_fd()).await;
        }
        match conn::serve(agent.clone(), stream, conn::EndOfStream::WaitForHost(watch)).await {
            Ok(()) => {}
            Err(e) => log!("{} failed: {e}; reopening", path.display()),
        }
        tokio::time::sleep(serial::POLL).await;
    }
}
