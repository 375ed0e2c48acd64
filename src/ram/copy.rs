//! Copies of a guest RAM file that cost only what holds data: holes stay
//! holes, ranges go through `copy_file_range` (a reflink on XFS and btrfs,
//! an in-kernel copy within other filesystems) and through plain reads and
//! writes across filesystems; against a base, only the pages that differ
//! are written.

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, copy_file_range, fallocate};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::sparse::{data_ranges, data_within};
use super::sums::{PAGE, PageHash, Sums};

/// Bytes read at a time on the userspace path.
const CHUNK: usize = 1 << 20;

/// How a copy went: bytes it wrote (the rest was left as holes or shared).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub written: u64,
    /// Whether every data range went through `copy_file_range`.
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

/// Makes the empty `target` hold what `source` holds (zero pages left as
/// holes), and hashes each page of it under `hash` on the way.
pub fn copy_hashed(source: &File, target: &File, hash: PageHash) -> io::Result<(Copied, Sums)> {
    let len = source.metadata()?.len();
    target.set_len(len)?;
    let sums = Mutex::new(Sums::empty(hash, len));
    let written = in_pieces(&data_ranges(source)?, false, |buffers, piece| {
        let written = runs(
            source,
            Against::Zeros,
            Some(hash),
            piece.clone(),
            buffers,
            |bytes, run, zero| {
                if zero {
                    return Ok(0);
                }
                target.write_all_at(bytes, run.start)?;
                Ok(run.end - run.start)
            },
        )?;
        record(&sums, &piece, &buffers.hashes);
        Ok(written)
    })?;
    Ok(finished(written, false, sums))
}

/// The hashes of `file`'s pages under `hash`: for a copy made before rum
/// kept them, read once so that a save against it goes the same way.
fn hashed(file: &File, hash: PageHash) -> io::Result<Sums> {
    let sums = Mutex::new(Sums::empty(hash, file.metadata()?.len()));
    in_pieces(&data_ranges(file)?, false, |buffers, piece| {
        runs(
            file,
            Against::Zeros,
            Some(hash),
            piece.clone(),
            buffers,
            |_, _, _| Ok(0),
        )?;
        record(&sums, &piece, &buffers.hashes);
        Ok(0)
    })?;
    Ok(finished(0, false, sums).1)
}

/// A copy's account, with the hashes its threads left.
fn finished(written: u64, in_kernel: bool, sums: Mutex<Sums>) -> (Copied, Sums) {
    let copied = Copied { written, in_kernel };
    (
        copied,
        sums.into_inner().expect("a copy thread does not panic"),
    )
}

/// Makes the empty `target` hold what `source` holds, sharing with `base`
/// (an earlier copy on the same filesystem) every page the two have in
/// common: runs of equal pages go through `copy_file_range` from `base` (a
/// reflink), the others are written into holes. Never a write over shared
/// blocks: on XFS each such copy-on-write would reserve 128 KiB. Pages are
/// compared by the base's hashes, and the base is never read; a base
/// without them is hashed first, under `hash`. Returns the hashes of what
/// `target` holds, under the base's key.
pub fn copy_against(
    source: &File,
    base: &File,
    base_sums: Option<&Sums>,
    target: &File,
    hash: PageHash,
) -> io::Result<(Copied, Sums)> {
    let len = source.metadata()?.len();
    target.set_len(len)?;
    let unhashed;
    let base_sums = match base_sums {
        Some(sums) => sums,
        None => {
            unhashed = hashed(base, hash)?;
            &unhashed
        }
    };
    let sums = Mutex::new(Sums::empty(base_sums.hash, len));
    // Cleared by the first thread that finds the filesystem copies no ranges.
    let reflinks = AtomicBool::new(true);
    let file = Sharing {
        source,
        base,
        base_sums,
        target,
        reflinks: &reflinks,
    };
    // The whole file in pieces: holes too, which may be shared.
    let whole = [Range { start: 0, end: len }];
    let written = in_pieces(&whole, false, |buffers, piece| {
        let written = file.piece(piece.clone(), buffers)?;
        record(&sums, &piece, &buffers.hashes);
        Ok(written)
    })?;
    Ok(finished(written, reflinks.load(Ordering::Relaxed), sums))
}

/// A save against a base's hashes. A hole of the source equals a page the
/// hashes call zero, so runs of equal pages go on across holes, each shared
/// in one call: the source's holes are as many as the pages the guest has
/// freed to the host, thousands.
struct Sharing<'a> {
    source: &'a File,
    base: &'a File,
    base_sums: &'a Sums,
    target: &'a File,
    reflinks: &'a AtomicBool,
}

/// What becomes of a page in a save against hashes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Shared,
    /// Zeros where the base has data: a hole in the target.
    Hole,
    Written,
}

impl Sharing<'_> {
    /// `copy_against` for one piece; its hashes left in `buffers.hashes`.
    fn piece(&self, piece: Range<u64>, buffers: &mut Buffers) -> io::Result<u64> {
        let page = PAGE as u64;
        let first = piece.start / page;
        let Buffers { new, hashes, .. } = buffers;
        hashes.clear();
        hashes.resize(((piece.end - piece.start).div_ceil(page)) as usize, 0);
        let mut shared: Option<Range<u64>> = None;
        let mut written = 0;
        // Found by the thread that takes the piece: a serial walk of the
        // live file's thousands of holes would come first otherwise.
        let within = data_within(self.source, piece.clone())?
            .into_iter()
            // An empty range at the end, so the last hole is walked too.
            .chain(std::iter::once(piece.end..piece.end));
        let mut at = piece.start;
        for range in within {
            for hole in (at..range.start).step_by(PAGE) {
                let fate = match self.base_sums.page((hole / page) as usize) {
                    0 => Fate::Shared,
                    _ => Fate::Hole,
                };
                written += self.place(&mut shared, fate, hole..hole + page, &[])?;
            }
            let mut chunk = range.start;
            while chunk < range.end {
                let n = ((range.end - chunk) as usize).min(CHUNK);
                read_full(self.source, &mut new[..n], chunk)?;
                let at_page = (chunk / page) as usize;
                let mine = &mut hashes[at_page - first as usize..][..n.div_ceil(PAGE)];
                for (slot, bytes) in mine.iter_mut().zip(new[..n].chunks(PAGE)) {
                    *slot = self.base_sums.hash.of(bytes);
                }
                let fate = |i: usize| match mine[i] {
                    h if h == self.base_sums.page(at_page + i) => Fate::Shared,
                    0 => Fate::Hole,
                    _ => Fate::Written,
                };
                let mut i = 0;
                while i < mine.len() {
                    let (start, this) = (i, fate(i));
                    while i < mine.len() && fate(i) == this {
                        i += 1;
                    }
                    let bytes = &new[start * PAGE..(i * PAGE).min(n)];
                    let run = chunk + (start * PAGE) as u64..chunk + (i * PAGE).min(n) as u64;
                    written += self.place(&mut shared, this, run, bytes)?;
                }
                chunk += n as u64;
            }
            at = range.end;
        }
        written += self.share(shared.take())?;
        Ok(written)
    }

    /// Adds `run` to the pending shared run, or ends that and writes `bytes`.
    fn place(
        &self,
        shared: &mut Option<Range<u64>>,
        fate: Fate,
        run: Range<u64>,
        bytes: &[u8],
    ) -> io::Result<u64> {
        if fate == Fate::Shared {
            match shared {
                Some(pending) => pending.end = run.end,
                None => *shared = Some(run),
            }
            return Ok(0);
        }
        let mut written = self.share(shared.take())?;
        if fate == Fate::Written {
            self.target.write_all_at(bytes, run.start)?;
            written += run.end - run.start;
        }
        Ok(written)
    }

    fn share(&self, run: Option<Range<u64>>) -> io::Result<u64> {
        run.map_or(Ok(0), |run| {
            share_or_write(self.source, self.base, self.target, run, self.reflinks)
        })
    }
}

/// Shares `run` of `base` (equal to `source` there) into `target`, or where
/// the filesystem cannot, writes `source`'s nonzero pages of it.
fn share_or_write(
    source: &File,
    base: &File,
    target: &File,
    run: Range<u64>,
    reflinks: &AtomicBool,
) -> io::Result<u64> {
    if reflinks.load(Ordering::Relaxed) {
        match kernel_copy(base, target, run.clone()) {
            Ok(()) => return Ok(0),
            Err(Errno::EXDEV | Errno::EOPNOTSUPP | Errno::EINVAL | Errno::ENOSYS) => {
                reflinks.store(false, Ordering::Relaxed);
            }
            Err(e) => return Err(e.into()),
        }
    }
    user_copy(source, target, run, &mut Buffers::new(false))
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
        let mut differ = Vec::new();
        for range in &held {
            runs(
                target,
                Against::Sums(sums),
                None,
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
        let mut written = 0;
        for run in differ {
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

/// Puts one piece's hashes into their places.
fn record(sums: &Mutex<Sums>, piece: &Range<u64>, hashes: &[u128]) {
    let first = (piece.start / PAGE as u64) as usize;
    let mut sums = sums.lock().expect("a copy thread does not panic");
    sums.set(first, hashes);
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
/// With `hash` (implied by `Against::Sums`), leaves the hash of every page
/// in `buffers.hashes`. Returns the sum of what `on_run` wrote.
fn runs(
    source: &File,
    against: Against,
    hash: Option<PageHash>,
    range: Range<u64>,
    buffers: &mut Buffers,
    mut on_run: impl FnMut(&[u8], Range<u64>, bool) -> io::Result<u64>,
) -> io::Result<u64> {
    debug_assert_eq!(range.start % PAGE as u64, 0, "pages are walked whole");
    let hash = match against {
        Against::Sums(sums) => Some(sums.hash),
        _ => hash,
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
                Against::Zeros if hash.is_some() => chunk[page / PAGE] == 0,
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
fn holes(data: &[Range<u64>], range: Range<u64>) -> Vec<Range<u64>> {
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
    old: Vec<u8>,
    over: bool,
    /// The hashes of the pages last walked, when asked for.
    hashes: Vec<u128>,
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
    runs(source, against, None, range, buffers, |bytes, run, same| {
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
        let (copied, sums) = copy_against(&live, &base, None, &target, PageHash::fresh()).unwrap();
        assert_eq!(contents(&live), contents(&target));
        assert_eq!(
            copied.written,
            2 * PAGE as u64,
            "the changed and the new page"
        );
        assert_eq!(
            sums.page((MIB / PAGE as u64) as usize),
            sums.hash.of(&[9; PAGE])
        );
        assert_eq!(sums.page(1), 0, "a hole");
    }

    #[test]
    fn against_hashes_the_base_is_not_read_and_a_restore_reads_only_what_differs() {
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
        let first = sparse_of(dir.path(), "first", len, &[]);
        let (copied, first_sums) = copy_hashed(&live, &first, PageHash::fresh()).unwrap();
        assert_eq!(contents(&live), contents(&first));
        assert_eq!(copied.written, 5 * page);
        // The base as its hashes describe it, but its bytes gone: a save
        // against the hashes must not look at them.
        let base = sparse_of(dir.path(), "base", len, &[(0, 0xaa), (MIB, 0xaa)]);
        // Since then: one page changed, one freed, one new.
        live.write_all_at(&[6; PAGE], MIB).unwrap();
        punch(&live, PIECE + 7 * page..PIECE + 8 * page).unwrap();
        live.write_all_at(&[7; PAGE], 2 * PIECE).unwrap();
        let second = sparse_of(dir.path(), "second", len, &[]);
        let (copied, second_sums) =
            copy_against(&live, &base, Some(&first_sums), &second, PageHash::fresh()).unwrap();
        assert_eq!(copied.written, 2 * page, "the changed and the new page");
        assert_eq!(second_sums.hash, first_sums.hash, "one key for the chain");
        // The pages found equal came from the base: its bytes, not the live ones.
        assert_eq!(contents(&second)[..PAGE], [0xaa; PAGE]);
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
        // And to the second: its pages found equal by hash are not read
        // (page 0 keeps the live byte, not the base's 0xaa).
        let copied = load_by_sums(&second, &second_sums, &live).unwrap();
        assert_eq!(copied.written, 3 * page, "the changed, freed and new page");
        let mut expected = contents(&first);
        expected[MIB as usize..(MIB + page) as usize].fill(6);
        expected[(PIECE + 7 * page) as usize..(PIECE + 8 * page) as usize].fill(0);
        expected[2 * PIECE as usize..(2 * PIECE + page) as usize].fill(7);
        assert!(contents(&live) == expected);
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
        // A new checkpoint against the old one: the rest is shared.
        let next = make(dir.path(), "next", 0);
        next.set_len(0).unwrap();
        let (copied, _) = copy_against(&live, &checkpoint, None, &next, PageHash::fresh()).unwrap();
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
