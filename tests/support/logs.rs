//! On a failing test, prints the logs under its temp root: serial consoles,
//! QEMU's stderr, rum's own logs and captured rum output.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Enough of a log to see the failure without flooding the terminal.
const TAIL_BYTES: u64 = 64 * 1024;

pub(crate) fn dump(root: &Path) {
    let mut logs = Vec::new();
    collect(root, false, &mut logs);
    logs.sort();
    if logs.is_empty() {
        eprintln!("[e2e] no logs under {}", root.display());
    }
    for path in logs {
        let shown = path.strip_prefix(root).unwrap_or(&path).display();
        match tail(&path) {
            Ok((text, skipped)) if skipped > 0 => {
                eprintln!(
                    "===== {shown} (last {TAIL_BYTES} bytes; {skipped} skipped) =====\n{text}"
                )
            }
            Ok((text, _)) => eprintln!("===== {shown} =====\n{text}"),
            Err(e) => eprintln!("===== {shown}: unreadable: {e} ====="),
        }
    }
}

/// `*.log` files and everything inside a `logs` directory.
fn collect(dir: &Path, in_logs: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect(&path, in_logs || entry.file_name() == "logs", out);
        } else if kind.is_file() && (in_logs || path.extension().is_some_and(|e| e == "log")) {
            out.push(path);
        }
    }
}

fn tail(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    let skipped = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(skipped))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok((String::from_utf8_lossy(&bytes).into_owned(), skipped))
}
