//! Runs the real agent binary on the host: a Unix socket instead of vsock or
//! virtio-serial, a temp dir instead of /var/lib/rum, a file instead of the
//! kernel's boot id.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rum_agent::{Client, ConnectOptions, Endpoint};

pub struct Agent {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub boot_id_file: PathBuf,
}

impl Agent {
    /// Starts the agent with boot id `boot-1`.
    pub fn start() -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("rum-agent-test-")
            .tempdir()
            .expect("temp dir");
        let mut agent = Agent {
            child: None,
            socket: dir.path().join("agent.sock"),
            state: dir.path().join("state"),
            boot_id_file: dir.path().join("boot_id"),
            dir,
        };
        agent.set_boot_id("boot-1");
        agent.spawn();
        agent
    }

    pub fn set_boot_id(&self, id: &str) {
        std::fs::write(&self.boot_id_file, format!("{id}\n")).expect("write boot id");
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new(env!("CARGO_BIN_EXE_rum-agent"))
            .arg("--listen-unix")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--boot-id-file")
            .arg(&self.boot_id_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn rum-agent");
        self.child = Some(child);
        let start = std::time::Instant::now();
        while !listening(&self.socket) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "agent socket never listened"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the agent (SIGKILL, like a power cut) and starts it again:
    /// a "reboot" when the boot id changed in between.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Serial(self.socket.clone())
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.endpoint(), &ConnectOptions::default())
            .await
            .expect("connect to the agent")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        !matches!(state, Some('Z' | 'X') | None)
    })
}

/// Polls `f` until true or `timeout`.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The protocol by hand, for tests that need to misbehave.
pub mod raw {
    use rum_agent::protocol::frame::{self, Decoder, FrameReader, Item};
    use rum_agent::protocol::{
        Event, FromAgent, Hello, HelloReply, PROTOCOL_VERSION, Request, ToAgent,
    };
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;
    use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

    pub struct Raw {
        pub write: OwnedWriteHalf,
        pub reader: FrameReader<OwnedReadHalf>,
    }

    pub fn request(id: u64, msg: Request, body: &[u8]) -> Vec<u8> {
        frame::encode(&serde_json::to_vec(&ToAgent { id, msg }).unwrap(), body)
    }

    pub fn hello(session: &str) -> Vec<u8> {
        let mut bytes = frame::SYNC.to_vec();
        bytes.extend(request(
            0,
            Request::Hello(Hello {
                version: PROTOCOL_VERSION,
                session: session.into(),
                host_time_unix_ns: 0,
            }),
            &[],
        ));
        bytes
    }

    impl Raw {
        pub async fn connect(path: &std::path::Path) -> Raw {
            let (read, write) = UnixStream::connect(path).await.unwrap().into_split();
            Raw {
                write,
                reader: FrameReader::new(read, Decoder::new()),
            }
        }

        pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.write.write_all(bytes).await
        }

        /// The next message; `None` at end of stream.
        pub async fn next(&mut self) -> Option<(FromAgent, Vec<u8>)> {
            loop {
                match self.reader.next().await.ok()?? {
                    Item::Sync => continue,
                    Item::Frame(f) => {
                        return Some((serde_json::from_slice(&f.header).unwrap(), f.body));
                    }
                }
            }
        }

        /// Sends a hello and waits for its reply, skipping everything else.
        pub async fn handshake(&mut self, session: &str) -> HelloReply {
            self.send(&hello(session)).await.unwrap();
            loop {
                let (msg, _) = self.next().await.expect("hello reply");
                if let Event::Hello(reply) = msg.event
                    && reply.session == session
                {
                    return reply;
                }
            }
        }
    }
}

/// Whether a socket listens at `path` (`/proc/net/unix`, flag
/// `__SO_ACCEPTCON`): its file appears at `bind`, before `listen`, and a
/// connect in between is refused (seen on a loaded CI machine).
fn listening(path: &std::path::Path) -> bool {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8 && fields[3] == "00010000" && std::path::Path::new(fields[7]) == path
    })
}
