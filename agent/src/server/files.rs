//! `push` and `pull`: files streamed in chunks, checked with SHA-256. File
//! I/O runs on blocking threads; the connection never waits on the disk
//! except through the bounded input queue.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rum_agent::protocol::frame::CHUNK;
use rum_agent::protocol::{ErrorKind, Event, FileDone, FileInfo, PullRequest, PushRequest, hex};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::call::{Ctx, Input, error, io_error};
use super::system;

enum Chunk {
    Data(Vec<u8>),
    End,
}

pub async fn push(ctx: &mut Ctx, req: PushRequest) -> Event {
    let path = PathBuf::from(&req.path);
    if !path.is_absolute() || path.file_name().is_none() {
        return error(
            ErrorKind::BadRequest,
            format!("not an absolute file path: {}", req.path),
        );
    }
    let owner = match req.owner.as_deref().map(system::lookup_user).transpose() {
        Ok(u) => u.map(|u| (u.uid, u.gid)),
        Err(e) => return io_error("owner", &e),
    };
    let Some(mut input) = ctx.input.take() else {
        return error(ErrorKind::BadRequest, "push without input");
    };
    let (tx, rx) = mpsc::channel::<Chunk>(4);
    let writer = tokio::task::spawn_blocking(move || write_atomic(&path, &req, owner, rx));
    let mut cancelled = false;
    loop {
        let item = tokio::select! {
            item = input.recv() => item,
            () = ctx.cancelled() => None,
        };
        let chunk = match item {
            Some(Input::Data(data)) => Chunk::Data(data),
            Some(Input::Eof) => Chunk::End,
            None => {
                cancelled = true;
                break;
            }
        };
        let end = matches!(chunk, Chunk::End);
        // The writer stopped early (an error): its result says why.
        if tx.send(chunk).await.is_err() || end {
            break;
        }
    }
    drop(tx);
    drop(input);
    let result = writer.await;
    match result {
        Ok(Ok(done)) => Event::Pushed(done),
        Ok(Err(_)) if cancelled => error(ErrorKind::Cancelled, "push cancelled"),
        Ok(Err(event)) => event,
        Err(e) => error(ErrorKind::Failed, format!("writer thread: {e}")),
    }
}

/// Writes the chunks to a temporary file beside `path`, checks size and
/// checksum, sets mode and owner, syncs, and renames it into place.
fn write_atomic(
    path: &Path,
    req: &PushRequest,
    owner: Option<(u32, u32)>,
    mut rx: mpsc::Receiver<Chunk>,
) -> Result<FileDone, Event> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("/"));
    if req.create_dirs {
        fs::create_dir_all(dir).map_err(|e| io_error(&format!("create {}", dir.display()), &e))?;
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.rum-push-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_error(&format!("create {}", tmp.display()), &e))?;
    let result = (|| {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut ended = false;
        while let Some(chunk) = rx.blocking_recv() {
            match chunk {
                Chunk::Data(data) => {
                    size += data.len() as u64;
                    if size > req.size {
                        return Err(error(
                            ErrorKind::Checksum,
                            format!("more than the announced {} bytes", req.size),
                        ));
                    }
                    hasher.update(&data);
                    file.write_all(&data)
                        .map_err(|e| io_error(&format!("write {}", tmp.display()), &e))?;
                }
                Chunk::End => {
                    ended = true;
                    break;
                }
            }
        }
        if !ended {
            return Err(error(ErrorKind::Cancelled, "push cancelled"));
        }
        let sha256 = hex(&hasher.finalize());
        if size != req.size || !sha256.eq_ignore_ascii_case(&req.sha256) {
            return Err(error(
                ErrorKind::Checksum,
                format!(
                    "received {size} bytes with SHA-256 {sha256}; expected {} bytes with {}",
                    req.size, req.sha256
                ),
            ));
        }
        let io = |what: &str, e: io::Error| io_error(&format!("{what} {}", tmp.display()), &e);
        file.set_permissions(fs::Permissions::from_mode(req.mode & 0o7777))
            .map_err(|e| io("chmod", e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(|e| io("chown", e))?;
            // chown clears set-id bits; put the mode back.
            file.set_permissions(fs::Permissions::from_mode(req.mode & 0o7777))
                .map_err(|e| io("chmod", e))?;
        }
        file.sync_all().map_err(|e| io("sync", e))?;
        fs::rename(&tmp, path)
            .map_err(|e| io_error(&format!("rename to {}", path.display()), &e))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(FileDone { size, sha256 })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub async fn pull(ctx: &mut Ctx, req: PullRequest) -> Event {
    let path = PathBuf::from(&req.path);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => return io_error(&format!("open {}", req.path), &e),
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return io_error(&format!("stat {}", req.path), &e),
    };
    if !meta.is_file() {
        return error(
            ErrorKind::BadRequest,
            format!("{} is not a regular file", req.path),
        );
    }
    let info = FileInfo {
        size: meta.len(),
        mode: meta.permissions().mode() & 0o7777,
    };
    if !ctx.out.send(Event::FileInfo(info), &[]).await {
        return error(ErrorKind::Cancelled, "session ended");
    }
    let (tx, mut rx) = mpsc::channel::<io::Result<Vec<u8>>>(4);
    let reader = tokio::task::spawn_blocking(move || {
        let mut file = file;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match read_full(&mut file, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            if n == 0 {
                return;
            }
            buf.truncate(n);
            if tx.blocking_send(Ok(buf)).is_err() {
                return;
            }
        }
    });
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let item = tokio::select! {
            item = rx.recv() => item,
            () = ctx.cancelled() => {
                drop(rx);
                let _ = reader.await;
                return error(ErrorKind::Cancelled, "pull cancelled");
            }
        };
        match item {
            None => break,
            Some(Err(e)) => return io_error(&format!("read {}", req.path), &e),
            Some(Ok(chunk)) => {
                hasher.update(&chunk);
                size += chunk.len() as u64;
                if !ctx.out.send(Event::Data, &chunk).await {
                    return error(ErrorKind::Cancelled, "session ended");
                }
            }
        }
    }
    let _ = reader.await;
    Event::Pulled(FileDone {
        size,
        sha256: hex(&hasher.finalize()),
    })
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
