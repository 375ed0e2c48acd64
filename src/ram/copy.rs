//! Copies of a guest RAM file that cost only what holds data: holes stay
//! holes, ranges go through `copy_file_range` (a reflink on XFS and btrfs,
//! an in-kernel copy within other filesystems) and through plain reads and
//! writes across filesystems; against a base, only the pages that differ
//! are written.

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, copy_file_range, fallocate};
use nix::unistd::{Whence, lseek};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// The unit of comparison and of sparseness: a guest page.
const PAGE: usize = 4096;
/// Bytes read at a time on the userspace path.
const CHUNK: usize = 1 << 20;

/// How a copy went: bytes it wrote (the rest was left as holes or shared).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub written: u64,
    /// Whether every data range went through `copy_file_range`.
    pub in_kernel: bool,
}

/// The ranges of `file` that hold data, in order (holes left out).
pub fn data_ranges(file: &File) -> io::Result<Vec<Range<u64>>> {
    let len = file.metadata()?.len();
    let mut ranges = Vec::new();
    let mut at = 0u64;
    while at < len {
        let start = match lseek(file, at as i64, Whence::SeekData) {
            Ok(s) => s as u64,
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = match lseek(file, start as i64, Whence::SeekHole) {
            Ok(e) => e as u64,
            Err(e) => return Err(e.into()),
        };
        ranges.push(start..end.min(len));
        at = end;
    }
    Ok(ranges)
}

/// Makes `target` hold what `source` holds, at the same size. With `over`,
/// `target` holds an earlier state (a reflinked older copy, or the live
/// file): holes are punched into it and, where ranges cannot be copied in
/// the kernel, only differing pages written. Without it, `target` is all
/// holes.
pub fn copy_into(source: &File, target: &File, over: bool) -> io::Result<Copied> {
    let len = source.metadata()?.len();
    if target.metadata()?.len() != len {
        target.set_len(len)?;
    }
    let data = data_ranges(source)?;
    if over {
        for hole in holes(&data, len) {
            punch(target, hole)?;
        }
    }
    let mut copied = Copied {
        written: 0,
        in_kernel: true,
    };
    let mut rest = data.as_slice();
    while let Some(range) = rest.first() {
        match kernel_copy(source, target, range.clone()) {
            Ok(()) => {
                copied.written += range.end - range.start;
                rest = &rest[1..];
            }
            // Across filesystems, or one that copies no ranges.
            Err(Errno::EXDEV | Errno::EOPNOTSUPP | Errno::EINVAL | Errno::ENOSYS) => {
                copied.in_kernel = false;
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !rest.is_empty() {
        copied.written += parallel_user_copy(source, target, rest, over)?;
    }
    Ok(copied)
}

/// Pieces of work on the userspace path, handed out in turn to one thread
/// per core: reading from the page cache is a memory copy a core bounds.
const PIECE: u64 = 8 << 20;
const MAX_THREADS: usize = 4;

fn parallel_user_copy(
    source: &File,
    target: &File,
    ranges: &[Range<u64>],
    over: bool,
) -> io::Result<u64> {
    in_pieces(ranges, over, |buffers, piece| {
        user_copy(source, target, piece, buffers)
    })
}

/// Runs `work` on every piece of `ranges`, the pieces handed out in turn
/// to the threads; returns the sum of what it wrote.
fn in_pieces(
    ranges: &[Range<u64>],
    over: bool,
    work: impl Fn(&mut Buffers, Range<u64>) -> io::Result<u64> + Sync,
) -> io::Result<u64> {
    let pieces: Vec<Range<u64>> = ranges
        .iter()
        .flat_map(|r| {
            (r.start..r.end)
                .step_by(PIECE as usize)
                .map(move |at| at..(at + PIECE).min(r.end))
        })
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
        .min(pieces.len().max(1));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let (pieces, work) = (&pieces, &work);
                scope.spawn(move || {
                    // Allocated once: a fresh megabyte per range would fault in anew.
                    let mut buffers = Buffers::new(over);
                    let mut written = 0;
                    for piece in pieces.iter().skip(worker).step_by(threads) {
                        written += work(&mut buffers, piece.clone())?;
                    }
                    Ok::<u64, io::Error>(written)
                })
            })
            .collect();
        workers.into_iter().try_fold(0, |sum, worker| {
            Ok(sum + worker.join().expect("a copy thread does not panic")?)
        })
    })
}

/// Makes the empty `target` hold what `source` holds, sharing with `base`
/// (an earlier copy on the same filesystem) every page the two have in
/// common: runs of equal pages go through `copy_file_range` from `base` (a
/// reflink), the others are written into holes. Never a write over shared
/// blocks: on XFS each such copy-on-write would reserve 128 KiB.
pub fn copy_against(source: &File, base: &File, target: &File) -> io::Result<Copied> {
    let len = source.metadata()?.len();
    target.set_len(len)?;
    // Cleared by the first thread that finds the filesystem copies no ranges.
    let reflinks = AtomicBool::new(true);
    let written = in_pieces(&data_ranges(source)?, true, |buffers, piece| {
        against(source, base, target, piece, buffers, &reflinks)
    })?;
    Ok(Copied {
        written,
        in_kernel: reflinks.load(Ordering::Relaxed),
    })
}

/// `copy_against` for one piece.
fn against(
    source: &File,
    base: &File,
    target: &File,
    range: Range<u64>,
    buffers: &mut Buffers,
    reflinks: &AtomicBool,
) -> io::Result<u64> {
    runs(source, Some(base), range, buffers, |bytes, run, same| {
        if same && reflinks.load(Ordering::Relaxed) {
            match kernel_copy(base, target, run.clone()) {
                Ok(()) => return Ok(0),
                Err(Errno::EXDEV | Errno::EOPNOTSUPP | Errno::EINVAL | Errno::ENOSYS) => {
                    reflinks.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !same || bytes.iter().any(|b| *b != 0) {
            target.write_all_at(bytes, run.start)?;
            return Ok(run.end - run.start);
        }
        Ok(0)
    })
}

/// Walks `range` of `source` a chunk at a time against the same range of
/// `other` (zeros without one) and calls `on_run` with each longest run of
/// pages that are all equal to it or all different: the run's bytes, where
/// they are, and whether they are equal. Returns the sum of what it wrote.
fn runs(
    source: &File,
    other: Option<&File>,
    range: Range<u64>,
    buffers: &mut Buffers,
    mut on_run: impl FnMut(&[u8], Range<u64>, bool) -> io::Result<u64>,
) -> io::Result<u64> {
    let new = &mut buffers.new;
    let old = buffers.old.as_deref_mut().unwrap_or_default();
    let mut written = 0;
    let mut at = range.start;
    while at < range.end {
        let n = ((range.end - at) as usize).min(CHUNK);
        read_full(source, &mut new[..n], at)?;
        if let Some(other) = other {
            read_full(other, &mut old[..n], at)?;
        }
        let equal = |page: usize| {
            let end = (page + PAGE).min(n);
            match other {
                Some(_) => new[page..end] == old[page..end],
                None => new[page..end].iter().all(|b| *b == 0),
            }
        };
        let mut page = 0;
        while page < n {
            let start = page;
            let same = equal(page);
            while page < n && equal(page) == same {
                page += PAGE;
            }
            let end = page.min(n);
            written += on_run(&new[start..end], at + start as u64..at + end as u64, same)?;
        }
        at += n as u64;
    }
    Ok(written)
}

/// The gaps between `data` up to `len`.
fn holes(data: &[Range<u64>], len: u64) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = 0;
    for r in data {
        if r.start > at {
            out.push(at..r.start);
        }
        at = r.end;
    }
    if at < len {
        out.push(at..len);
    }
    out
}

/// Frees `range` of `file`: it reads as zeros, and a mapping sees zeros.
pub fn punch(file: &File, range: Range<u64>) -> io::Result<()> {
    if range.is_empty() {
        return Ok(());
    }
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        range.start as i64,
        (range.end - range.start) as i64,
    )
    .map_err(io::Error::from)
}

fn kernel_copy(source: &File, target: &File, range: Range<u64>) -> Result<(), Errno> {
    let mut from = range.start as i64;
    let mut to = range.start as i64;
    while (from as u64) < range.end {
        let left = (range.end - from as u64) as usize;
        let n = copy_file_range(source, Some(&mut from), target, Some(&mut to), left)?;
        if n == 0 {
            // The source shrank under us; what is left reads as zeros.
            break;
        }
    }
    Ok(())
}

/// The userspace path's read buffers: what is copied, and (when copying
/// over an earlier state) what the target held.
struct Buffers {
    new: Vec<u8>,
    old: Option<Vec<u8>>,
}

impl Buffers {
    fn new(over: bool) -> Self {
        Self {
            new: vec![0u8; CHUNK],
            old: over.then(|| vec![0u8; CHUNK]),
        }
    }
}

/// Copies `range` by reads and writes, page by page: zero pages are not
/// written to a fresh target; over an earlier state, equal pages are not
/// either. Runs of pages to write are coalesced into one write each.
fn user_copy(
    source: &File,
    target: &File,
    range: Range<u64>,
    buffers: &mut Buffers,
) -> io::Result<u64> {
    let over = buffers.old.is_some().then_some(target);
    runs(source, over, range, buffers, |bytes, run, same| {
        if same {
            return Ok(0);
        }
        target.write_all_at(bytes, run.start)?;
        Ok(run.end - run.start)
    })
}

/// Reads `buf.len()` bytes at `at`; past the end reads as zeros.
fn read_full(file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], at + done as u64)? {
            0 => {
                buf[done..].fill(0);
                break;
            }
            n => done += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1 << 20;

    fn sparse(dir: &std::path::Path, name: &str, pages: &[(u64, u8)]) -> File {
        sparse_of(dir, name, 8 * MIB, pages)
    }

    /// A file of `len` bytes holding only `pages` (offset, byte).
    fn sparse_of(dir: &std::path::Path, name: &str, len: u64, pages: &[(u64, u8)]) -> File {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(name))
            .unwrap();
        file.set_len(len).unwrap();
        for (at, byte) in pages {
            file.write_all_at(&[*byte; PAGE], *at).unwrap();
        }
        file
    }

    fn contents(file: &File) -> Vec<u8> {
        let mut all = vec![0u8; file.metadata().unwrap().len() as usize];
        read_full(file, &mut all, 0).unwrap();
        all
    }

    #[test]
    fn a_copy_holds_the_same_bytes_and_no_more_blocks_than_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let source = sparse(dir.path(), "ram", &[(0, 1), (3 * MIB, 2), (7 * MIB, 3)]);
        // A zero page the guest touched: data to the filesystem, not to a copy.
        source.write_all_at(&[0u8; PAGE], 5 * MIB).unwrap();
        let target = sparse(dir.path(), "copy", &[]);
        let copied = copy_into(&source, &target, false).unwrap();
        assert_eq!(contents(&source), contents(&target));
        assert!(
            target.metadata().unwrap().blocks() * 512 <= 4 * PAGE as u64 * 2,
            "{} blocks",
            target.metadata().unwrap().blocks()
        );
        assert!(copied.written >= 3 * PAGE as u64);
    }

    #[test]
    fn against_a_base_only_changed_pages_are_written_and_freed_ones_punched() {
        // The live RAM on tmpfs, its copies elsewhere: no copy in the kernel.
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let old = sparse(dir.path(), "old", &[(0, 1), (MIB, 2), (2 * MIB, 3)]);
        let target = sparse(dir.path(), "target", &[]);
        copy_into(&old, &target, false).unwrap();
        // Since then: one page changed, one freed, one new.
        let new = sparse(shm.path(), "new", &[(0, 1), (MIB, 9), (4 * MIB, 4)]);
        let copied = copy_into(&new, &target, true).unwrap();
        assert_eq!(contents(&new), contents(&target));
        assert_eq!(
            copied.written,
            2 * PAGE as u64,
            "the changed and the new page"
        );
        assert!(!copied.in_kernel);
        let ranges = data_ranges(&target).unwrap();
        assert!(
            ranges.iter().all(|r| !r.contains(&(2 * MIB))),
            "the freed page is a hole: {ranges:?}"
        );
    }

    #[test]
    fn a_copy_against_a_base_writes_only_what_differs() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let base = sparse(
            dir.path(),
            "base",
            &[(0, 1), (MIB, 2), (MIB + PAGE as u64, 3)],
        );
        // Since the base: the second page changed, one new; the rest alike.
        let live = sparse(
            shm.path(),
            "live",
            &[(0, 1), (MIB, 9), (MIB + PAGE as u64, 3), (5 * MIB, 4)],
        );
        let target = sparse(dir.path(), "target", &[]);
        let copied = copy_against(&live, &base, &target).unwrap();
        assert_eq!(contents(&live), contents(&target));
        assert_eq!(
            copied.written,
            2 * PAGE as u64,
            "the changed and the new page"
        );
    }

    #[test]
    fn a_copy_split_between_threads_puts_every_piece_back() {
        // Across filesystems, so the userspace path runs, in 8 MiB pieces.
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let len = 5 * PIECE + 3 * PAGE as u64;
        // A page in every megabyte, the last one short of the end.
        let make = |dir: &std::path::Path, name: &str, seed: u8| {
            let pages: Vec<(u64, u8)> = (0..len)
                .step_by(MIB as usize)
                .map(|at| {
                    let byte = seed.wrapping_add((at / MIB) as u8) | 1;
                    (at.min(len - PAGE as u64), byte)
                })
                .collect();
            sparse_of(dir, name, len, &pages)
        };
        let checkpoint = make(dir.path(), "ckpt", 1);
        let live = make(shm.path(), "live", 1);
        // Since the checkpoint: one page changed in the fourth piece.
        live.write_all_at(&[0xee; PAGE], 3 * PIECE + 5 * MIB)
            .unwrap();
        // A new checkpoint against the old one: the rest is shared.
        let next = make(dir.path(), "next", 0);
        next.set_len(0).unwrap();
        let copied = copy_against(&live, &checkpoint, &next).unwrap();
        assert_eq!(contents(&live), contents(&next));
        assert_eq!(copied.written, PAGE as u64, "only the changed page");
        // And back: the live RAM as the checkpoint was.
        let copied = copy_into(&checkpoint, &live, true).unwrap();
        assert_eq!(contents(&checkpoint), contents(&live));
        assert_eq!(copied.written, PAGE as u64, "only the changed page");
    }

    #[test]
    fn restoring_over_a_larger_live_file_zeroes_what_the_copy_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = sparse(dir.path(), "ckpt", &[(MIB, 5)]);
        let live = sparse(dir.path(), "live", &[(0, 7), (MIB, 6), (6 * MIB, 8)]);
        copy_into(&checkpoint, &live, true).unwrap();
        assert_eq!(contents(&checkpoint), contents(&live));
    }
}
