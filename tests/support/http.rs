//! A tiny HTTP/1.1 file server on 127.0.0.1 for download tests, with
//! injectable faults (error statuses, truncated bodies, slow bodies).

// Also included directly via `#[path]`, and each test uses only part of it.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// One fault, applied to a single GET of a path (see [`FileServer::faults`]).
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this status with a short text body; any Range is ignored.
    Status(u16),
    /// Promise the full Content-Length, send only N body bytes, then shut down.
    DropAfter(u64),
    /// Serve normally, but write `chunk` bytes then sleep `delay`, repeatedly.
    Slow { chunk: usize, delay: Duration },
}

/// One finished GET/HEAD response.
#[derive(Debug, Clone)]
pub struct Served {
    pub path: String,
    pub status: u16,
    /// The N of the client's `Range: bytes=N-`, even when the server ignored it.
    pub range_start: Option<u64>,
    /// Body bytes actually written to the socket.
    pub body_bytes: u64,
}

#[derive(Clone)]
enum Source {
    Bytes(Arc<[u8]>),
    File(PathBuf),
}

#[derive(Default)]
struct State {
    sources: HashMap<String, Source>,
    faults: HashMap<String, VecDeque<Fault>>,
    served: HashMap<String, Vec<Served>>,
    /// Responses being written, per path, so `served` can wait for them.
    in_flight: HashMap<String, usize>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled whenever a response is recorded.
    recorded: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not wedge the test that owns the server.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The server; dropping it stops accepting (open connections finish on their own).
pub struct FileServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl FileServer {
    /// Binds 127.0.0.1 on a kernel-picked port and accepts in a background thread.
    pub fn start() -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for FileServer");
        let addr = listener.local_addr().expect("FileServer local_addr");
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            recorded: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (shared2, stop2) = (shared.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = conn {
                    let shared = shared2.clone();
                    thread::spawn(move || handle(stream, &shared));
                }
            }
        });
        FileServer { addr, shared, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn add(&self, path: &str, body: Vec<u8>) {
        self.shared
            .lock()
            .sources
            .insert(path.to_string(), Source::Bytes(body.into()));
    }

    /// Streams `file` from disk; its size is read at each request, so it may change.
    pub fn add_file(&self, path: &str, file: &Path) {
        self.shared
            .lock()
            .sources
            .insert(path.to_string(), Source::File(file.to_path_buf()));
    }

    /// Queues faults for `path`: each GET pops one; an empty queue serves normally.
    pub fn faults(&self, path: &str, faults: Vec<Fault>) {
        self.shared
            .lock()
            .faults
            .entry(path.to_string())
            .or_default()
            .extend(faults);
    }

    /// Every finished GET/HEAD of `path` so far, in order of completion. Waits up
    /// to 2 s for responses to `path` still being written, so a client that has
    /// just read its whole body always finds its request here.
    pub fn served(&self, path: &str) -> Vec<Served> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut st = self.shared.lock();
        while st.in_flight.get(path).is_some_and(|&n| n > 0) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .shared
                .recorded
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        st.served.get(path).cloned().unwrap_or_default()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocked accept so the thread sees the flag and exits.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    // Caps the header block so a garbage client cannot grow memory without bound.
    let mut reader = BufReader::new(stream.take(64 * 1024));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Some(Request {
                method,
                path,
                headers,
            });
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
}

fn handle(mut stream: TcpStream, shared: &Shared) {
    // Keeps an abandoned connection from pinning its thread forever.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let Some(req) = read_request(&stream) else {
        let _ = write_head(&mut stream, 400, &[], 0);
        return;
    };
    if req.method != "GET" && req.method != "HEAD" {
        let _ = write_head(&mut stream, 405, &[("Allow", "GET, HEAD".into())], 0);
        return;
    }
    let is_get = req.method == "GET";
    let range_start = req
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.trim().parse::<u64>().ok());
    let (source, fault) = {
        let mut st = shared.lock();
        *st.in_flight.entry(req.path.clone()).or_default() += 1;
        let fault = if is_get {
            st.faults.get_mut(&req.path).and_then(|q| q.pop_front())
        } else {
            None
        };
        (st.sources.get(&req.path).cloned(), fault)
    };
    let (status, body_bytes) = respond(&mut stream, &req, is_get, range_start, source, fault);
    let served = Served {
        path: req.path.clone(),
        status,
        range_start,
        body_bytes,
    };
    let mut st = shared.lock();
    *st.in_flight.entry(req.path.clone()).or_default() -= 1;
    st.served.entry(req.path).or_default().push(served);
    shared.recorded.notify_all();
}

/// Writes the whole response; returns (status, body bytes written).
fn respond(
    stream: &mut TcpStream,
    req: &Request,
    is_get: bool,
    range_start: Option<u64>,
    source: Option<Source>,
    fault: Option<Fault>,
) -> (u16, u64) {
    if let Some(Fault::Status(code)) = fault {
        return text(stream, code, is_get);
    }
    let opened: Option<(Box<dyn Body>, u64)> = match source {
        Some(Source::Bytes(b)) => Some((Box::new(Cursor::new(b.clone())), b.len() as u64)),
        Some(Source::File(p)) => File::open(&p)
            .and_then(|f| Ok((f.metadata()?.len(), f)))
            .ok()
            .map(|(len, f)| (Box::new(f) as Box<dyn Body>, len)),
        None => None,
    };
    let Some((mut body, len)) = opened else {
        return text(stream, 404, is_get);
    };
    let etag = format!("\"{len}-{:016x}\"", fnv1a(req.path.as_bytes()));
    let if_range_ok = req.headers.get("if-range").is_none_or(|v| *v == etag);
    let start = range_start.filter(|_| if_range_ok);
    let mut headers = vec![("ETag", etag), ("Accept-Ranges", "bytes".to_string())];
    let (status, from) = match start {
        Some(n) if n >= len => {
            headers.push(("Content-Range", format!("bytes */{len}")));
            let _ = write_head(stream, 416, &headers, 0);
            return (416, 0);
        }
        Some(n) => {
            headers.push(("Content-Range", format!("bytes {n}-{}/{len}", len - 1)));
            (206, n)
        }
        None => (200, 0),
    };
    headers.push(("Content-Type", "application/octet-stream".to_string()));
    if write_head(stream, status, &headers, len - from).is_err() || !is_get {
        return (status, 0);
    }
    let (limit, chunk, delay) = match fault {
        Some(Fault::DropAfter(n)) => (n.min(len - from), 64 * 1024, None),
        Some(Fault::Slow { chunk, delay }) => (len - from, chunk.max(1), Some(delay)),
        _ => (len - from, 64 * 1024, None),
    };
    // A failed seek just means an empty body, which the client sees as short.
    let sent = match body.seek(SeekFrom::Start(from)) {
        Ok(_) => copy_body(stream, &mut body.take(limit), chunk, delay),
        Err(_) => 0,
    };
    if matches!(fault, Some(Fault::DropAfter(_))) {
        let _ = stream.shutdown(Shutdown::Both);
    }
    (status, sent)
}

/// In-memory bodies and files alike, so ranges are a seek rather than a skip.
trait Body: Read + Seek {}
impl<T: Read + Seek> Body for T {}

/// Copies `chunk`-sized pieces with `delay` between them; stops at the first write error.
fn copy_body(
    stream: &mut TcpStream,
    body: &mut impl Read,
    chunk: usize,
    delay: Option<Duration>,
) -> u64 {
    let mut buf = vec![0u8; chunk];
    let mut sent = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) | Err(_) => return sent,
            Ok(n) => n,
        };
        // Sleeping only between chunks lets the response finish with its last byte.
        if let Some(d) = delay.filter(|_| sent > 0) {
            thread::sleep(d);
        }
        let mut off = 0;
        while off < n {
            match stream.write(&buf[off..n]) {
                Ok(0) | Err(_) => return sent,
                Ok(w) => {
                    off += w;
                    sent += w as u64;
                }
            }
        }
    }
}

/// A short `text/plain` response naming the status; returns (status, body bytes written).
fn text(stream: &mut TcpStream, status: u16, is_get: bool) -> (u16, u64) {
    let body = format!("{status} {}\n", reason(status));
    let headers = [("Content-Type", "text/plain".to_string())];
    let head = write_head(stream, status, &headers, body.len() as u64);
    let sent = is_get && head.is_ok() && stream.write_all(body.as_bytes()).is_ok();
    (status, if sent { body.len() as u64 } else { 0 })
}

fn write_head(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    len: u64,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {len}\r\nConnection: close\r\n\r\n"
    ));
    stream.write_all(head.as_bytes())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Injected",
    }
}

/// FNV-1a, so the ETag is stable across runs without pulling in a hasher crate.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
