//! Copies between a RAM file and a checkpoint in the guest's own layout
//! (page n at n × 4 KiB, as rum made them before packed copies): holes stay
//! holes, and only the pages that differ are written. And what both layouts
//! walk with: 8 MiB pieces on threads, runs of equal or differing pages,
//! holes punched.

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, copy_file_range, fallocate};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use super::sparse::PAGE;
use super::sparse::{data_ranges, data_within};
use super::sums::Sums;

/// Bytes read at a time on the userspace path.
pub(super) const CHUNK: usize = 1 << 20;

/// How a copy went: bytes it wrote (the rest was left as holes or shared).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub written: u64,
    /// Whether every data range went through `copy_file_range` (for a
    /// packed copy: whether it shares the slots of its base).
    pub in_kernel: bool,
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
        for hole in holes(&data, 0..len) {
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
pub(super) fn in_pieces(
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

/// Makes `target` (the live RAM) hold what checkpoint `source` holds, by
/// `sums`, the checkpoint's hashes: the target's pages are hashed, and only
/// those that differ are read from the checkpoint (or punched, where it has
/// a hole); where the target has holes, the checkpoint's data is copied.
pub fn load_by_sums(source: &File, sums: &Sums, target: &File) -> io::Result<Copied> {
    let len = source.metadata()?.len();
    if target.metadata()?.len() != len {
        target.set_len(len)?;
    }
    // Each piece's data is found by the thread that takes it: the live
    // file has thousands of holes, and one walk of them all is serial.
    let whole = [Range { start: 0, end: len }];
    let written = in_pieces(&whole, false, |buffers, piece| {
        let held = data_within(target, piece.clone())?;
        let mut written = 0;
        for run in differing(target, sums, &held, buffers)? {
            written += put_back(source, sums, target, run, &mut buffers.new)?;
        }
        // Pages the live file lacks (freed since) that the checkpoint holds.
        for hole in holes(&held, piece) {
            for run in held_by(sums, hole) {
                written += user_copy(source, target, run, buffers)?;
            }
        }
        Ok(written)
    })?;
    Ok(Copied {
        written,
        in_kernel: false,
    })
}

/// The runs within `held` (ranges of `target` holding data) whose pages
/// hash differently from `sums`, a checkpoint's hashes.
pub(super) fn differing(
    target: &File,
    sums: &Sums,
    held: &[Range<u64>],
    buffers: &mut Buffers,
) -> io::Result<Vec<Range<u64>>> {
    let mut differ = Vec::new();
    for range in held {
        runs(
            target,
            Against::Sums(sums),
            range.clone(),
            buffers,
            |_, run, same| {
                if !same {
                    differ.push(run);
                }
                Ok(0)
            },
        )?;
    }
    Ok(differ)
}

/// Puts `run` of `source` into `target`: holes of the checkpoint (zero
/// hashes) punched, the rest read and written.
fn put_back(
    source: &File,
    sums: &Sums,
    target: &File,
    run: Range<u64>,
    buffer: &mut [u8],
) -> io::Result<u64> {
    let page_of = |at: u64| (at / PAGE as u64) as usize;
    let mut at = run.start;
    while at < run.end {
        let zero = sums.page(page_of(at)) == 0;
        let mut end = at;
        while end < run.end && (sums.page(page_of(end)) == 0) == zero && end - at < CHUNK as u64 {
            end = (end + PAGE as u64).min(run.end);
        }
        if zero {
            punch(target, at..end)?;
        } else {
            let bytes = &mut buffer[..(end - at) as usize];
            read_full(source, bytes, at)?;
            target.write_all_at(bytes, at)?;
        }
        at = end;
    }
    Ok(run.end - run.start)
}

/// The runs of pages in `range` that `sums` says hold data.
fn held_by(sums: &Sums, range: Range<u64>) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    let first = range.start / PAGE as u64;
    let last = range.end.div_ceil(PAGE as u64);
    for page in first..last {
        if sums.page(page as usize) == 0 {
            continue;
        }
        let at = page * PAGE as u64;
        let end = (at + PAGE as u64).min(range.end);
        match out.last_mut() {
            Some(run) if run.end == at => run.end = end,
            _ => out.push(at..end),
        }
    }
    out
}

/// What each page of a walk is compared with.
#[derive(Clone, Copy)]
enum Against<'a> {
    /// Zeros: a fresh target keeps zero pages as holes.
    Zeros,
    /// The same range of another file.
    File(&'a File),
    /// Another file's page hashes: that file is never read.
    Sums(&'a Sums),
}

/// Walks `range` of `source` a chunk at a time against `against` and calls
/// `on_run` with each longest run of pages that are all equal to it or all
/// different: the run's bytes, where they are, and whether they are equal.
/// Against hashes, leaves the hash of every page in `buffers.hashes`.
/// Returns the sum of what `on_run` wrote.
fn runs(
    source: &File,
    against: Against,
    range: Range<u64>,
    buffers: &mut Buffers,
    mut on_run: impl FnMut(&[u8], Range<u64>, bool) -> io::Result<u64>,
) -> io::Result<u64> {
    debug_assert_eq!(range.start % PAGE as u64, 0, "pages are walked whole");
    let hash = match against {
        Against::Sums(sums) => Some(sums.hash),
        _ => None,
    };
    let Buffers {
        new, old, hashes, ..
    } = buffers;
    hashes.clear();
    let mut written = 0;
    let mut at = range.start;
    while at < range.end {
        let n = ((range.end - at) as usize).min(CHUNK);
        read_full(source, &mut new[..n], at)?;
        if let Against::File(other) = against {
            read_full(other, &mut old[..n], at)?;
        }
        let from = hashes.len();
        if let Some(hash) = hash {
            hashes.extend(new[..n].chunks(PAGE).map(|page| hash.of(page)));
        }
        let chunk = &hashes[from..];
        let first = (at / PAGE as u64) as usize;
        let equal = |page: usize| {
            let end = (page + PAGE).min(n);
            match against {
                Against::File(_) => new[page..end] == old[page..end],
                Against::Sums(sums) => chunk[page / PAGE] == sums.page(first + page / PAGE),
                Against::Zeros => new[page..end].iter().all(|b| *b == 0),
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

/// The gaps between `data` within `range`.
pub(super) fn holes(data: &[Range<u64>], range: Range<u64>) -> Vec<Range<u64>> {
    let (len, mut out) = (range.end, Vec::new());
    let mut at = range.start;
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

pub(super) fn kernel_copy(source: &File, target: &File, range: Range<u64>) -> Result<(), Errno> {
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
pub(super) struct Buffers {
    pub(super) new: Vec<u8>,
    old: Vec<u8>,
    over: bool,
    /// The hashes of the pages last walked, when asked for.
    pub(super) hashes: Vec<u128>,
}

impl Buffers {
    fn new(over: bool) -> Self {
        Self {
            new: vec![0u8; CHUNK],
            old: if over { vec![0u8; CHUNK] } else { Vec::new() },
            over,
            hashes: Vec::new(),
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
    let against = match buffers.over {
        true => Against::File(target),
        false => Against::Zeros,
    };
    runs(source, against, range, buffers, |bytes, run, same| {
        if same {
            return Ok(0);
        }
        target.write_all_at(bytes, run.start)?;
        Ok(run.end - run.start)
    })
}

/// Reads `buf.len()` bytes at `at`; past the end reads as zeros.
pub(super) fn read_full(file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
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
pub(super) mod tests {
    use super::*;
    use crate::ram::sums::PageHash;
    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1 << 20;

    fn sparse(dir: &std::path::Path, name: &str, pages: &[(u64, u8)]) -> File {
        sparse_of(dir, name, 8 * MIB, pages)
    }

    /// A file of `len` bytes holding only `pages` (offset, byte).
    pub(in crate::ram) fn sparse_of(
        dir: &std::path::Path,
        name: &str,
        len: u64,
        pages: &[(u64, u8)],
    ) -> File {
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

    pub(in crate::ram) fn contents(file: &File) -> Vec<u8> {
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
    fn a_restore_by_hashes_reads_only_what_differs() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * PIECE + 5 * PAGE as u64;
        let page = PAGE as u64;
        let live = sparse_of(
            shm.path(),
            "live",
            len,
            &[
                (0, 1),
                (MIB, 2),
                (MIB + page, 3),
                (PIECE + 7 * page, 4),
                (len - page, 5),
            ],
        );
        // Checkpoints in the guest's layout, with their hashes, as rum
        // made them before packed copies.
        let checkpoint = |name: &str| {
            let copy = sparse_of(dir.path(), name, len, &[]);
            copy_into(&live, &copy, false).unwrap();
            let hash = PageHash::fresh();
            let mut sums = Sums::empty(hash, len);
            let hashes: Vec<u128> = contents(&copy).chunks(PAGE).map(|p| hash.of(p)).collect();
            sums.set(0, &hashes);
            (copy, sums)
        };
        let (first, first_sums) = checkpoint("first");
        // Since then: one page changed, one freed, one new.
        live.write_all_at(&[6; PAGE], MIB).unwrap();
        punch(&live, PIECE + 7 * page..PIECE + 8 * page).unwrap();
        live.write_all_at(&[7; PAGE], 2 * PIECE).unwrap();
        let (second, second_sums) = checkpoint("second");
        // Restores: the live RAM as the first checkpoint was, then the second.
        live.write_all_at(&[8; PAGE], len - page).unwrap();
        live.write_all_at(&[9; PAGE], 2 * PIECE + MIB).unwrap();
        let copied = load_by_sums(&first, &first_sums, &live).unwrap();
        assert_eq!(contents(&live), contents(&first));
        assert_eq!(
            copied.written,
            5 * page,
            "the changed, freed, new and two stray pages"
        );
        // And to the second.
        let copied = load_by_sums(&second, &second_sums, &live).unwrap();
        assert_eq!(copied.written, 3 * page, "the changed, freed and new page");
        assert!(contents(&live) == contents(&second));
        // Into an empty live file (a fresh QEMU): every data page.
        let fresh = sparse_of(shm.path(), "fresh", len, &[]);
        let copied = load_by_sums(&first, &first_sums, &fresh).unwrap();
        assert_eq!(contents(&fresh), contents(&first));
        assert_eq!(copied.written, 5 * page);
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
        // A copy of it in the guest's layout, then back: the live RAM as the checkpoint was.
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
