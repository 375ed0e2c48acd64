//! A RAM checkpoint packed: the guest's nonzero pages one after another in
//! slots, with a map from each guest page to its slot. A save against the
//! previous packed copy shares all its slots in one `copy_file_range` (a
//! reflink of a few extents) and appends the pages that changed; in the
//! guest's own layout the shared runs follow the balloon's holes, and XFS
//! remapped thousands of extents one transaction each (`README`, Benchmarks).
//!
//! The file: a header page (`RUMPACK1`, page count, slot count, xxh3-64 of
//! the map), the map (a little-endian `u32` slot per guest page, 0 for a
//! zero page), padded to a page, then slot 1, 2, … A copy is synced before
//! it is named, so the map is as durable as the slots.

use nix::errno::Errno;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::copy::read_full;
use super::copy::{Buffers, CHUNK, Copied, differing, holes, in_pieces, kernel_copy, punch};
use super::sparse::PAGE;
use super::sparse::{data_within, read_data, write_data};
use super::sums::{PageHash, Sums};

const MAGIC: &[u8; 8] = b"RUMPACK1";
const HEADER: usize = 32;
const ENTRY: usize = 4;
const PAGE_U64: u64 = PAGE as u64;

/// Once a copy's slots outnumber its live pages by this factor, the next
/// save writes a fresh copy rather than carrying the dead slots along.
const COMPACT_AT: u64 = 2;
/// ...and by at least this many, so that a small guest is not copied anew
/// every few saves.
const COMPACT_SLACK: u64 = (64 << 20) / PAGE_U64;

/// A packed copy's header and map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map {
    slots: u64,
    entries: Vec<u32>,
}

/// What a packed copy's header says: the pages it describes and the slots
/// it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub pages: u64,
    pub slots: u64,
    map_sum: u64,
}

/// Where the slots begin, for a RAM of `pages` pages.
fn data_start(pages: u64) -> u64 {
    PAGE_U64 + (pages * ENTRY as u64).div_ceil(PAGE_U64) * PAGE_U64
}

fn slot_at(start: u64, slot: u32) -> u64 {
    start + (u64::from(slot) - 1) * PAGE_U64
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Header {
    /// The header of the packed copy `file`.
    pub fn read(file: &File) -> io::Result<Header> {
        let mut bytes = [0u8; HEADER];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|_| invalid("no header"))?;
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if &bytes[..8] != MAGIC {
            return Err(invalid("not a packed RAM copy"));
        }
        Ok(Header {
            pages: word(8),
            slots: word(16),
            map_sum: word(24),
        })
    }

    /// The size the whole copy has.
    pub fn len(&self) -> u64 {
        data_start(self.pages) + self.slots * PAGE_U64
    }
}

impl Map {
    /// The map of the packed copy `file`, checked against its header.
    pub fn read(file: &File) -> io::Result<Map> {
        let header = Header::read(file)?;
        let start = PAGE_U64;
        let bytes = read_data(file, start..start + header.pages * ENTRY as u64)?;
        if xxhash_rust::xxh3::xxh3_64(&bytes) != header.map_sum {
            return Err(invalid("the map does not match its checksum"));
        }
        let entries: Vec<u32> = bytes
            .chunks_exact(ENTRY)
            .map(|e| u32::from_le_bytes(e.try_into().expect("4 bytes")))
            .collect();
        if entries.iter().any(|s| u64::from(*s) > header.slots) {
            return Err(invalid("the map names a slot the copy lacks"));
        }
        Ok(Map {
            slots: header.slots,
            entries,
        })
    }

    pub fn pages(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Whether its dead slots are many enough that the next save should
    /// start a fresh copy.
    pub fn wants_compacting(&self) -> bool {
        let live = self.entries.iter().filter(|s| **s != 0).count() as u64;
        self.slots > COMPACT_AT * live + COMPACT_SLACK
    }

    /// Writes the header and the map at the start of `file`; returns the
    /// bytes written (blocks of zero pages' entries stay holes).
    fn write(&self, file: &File) -> io::Result<u64> {
        let start = data_start(self.pages()) as usize;
        let mut image = vec![0u8; start];
        let map = &mut image[PAGE..PAGE + self.entries.len() * ENTRY];
        for (at, slot) in map.chunks_exact_mut(ENTRY).zip(&self.entries) {
            at.copy_from_slice(&slot.to_le_bytes());
        }
        let sum = xxhash_rust::xxh3::xxh3_64(map);
        image[..8].copy_from_slice(MAGIC);
        image[8..16].copy_from_slice(&self.pages().to_le_bytes());
        image[16..24].copy_from_slice(&self.slots.to_le_bytes());
        image[24..32].copy_from_slice(&sum.to_le_bytes());
        write_data(file, 0, &image)
    }
}

/// The previous packed copy a save shares with, and its page hashes.
pub struct Base {
    pub file: File,
    pub map: Map,
    pub sums: Sums,
}

/// A page a save must write into a slot of its own.
const NEW: u32 = u32::MAX;

/// Makes the empty `target` a packed copy of `live` (the VM stopped). With
/// `base`, its slots are shared whole and only the pages whose hash
/// differs from the base's are appended, under the base's key; without,
/// every nonzero page is written, hashed under `hash`. Returns the hashes
/// of the copy's pages. Not synced.
pub fn save(
    live: &File,
    target: &File,
    base: Option<Base>,
    hash: PageHash,
) -> io::Result<(Copied, Sums)> {
    let len = live.metadata()?.len();
    let pages = len.div_ceil(PAGE_U64);
    let start = data_start(pages);
    if pages >= u64::from(NEW) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a packed copy holds at most 2^32 pages",
        ));
    }
    let base = base.filter(|b| b.map.pages() == pages);
    let base = match base {
        Some(b) => match kernel_copy(&b.file, target, start..start + b.map.slots * PAGE_U64) {
            Ok(()) => Some(b),
            // A filesystem that copies no ranges: a copy of its own.
            Err(Errno::EXDEV | Errno::EOPNOTSUPP | Errno::EINVAL | Errno::ENOSYS) => {
                target.set_len(0)?;
                None
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let hash = base.as_ref().map_or(hash, |b| b.sums.hash);
    let used = AtomicU64::new(base.as_ref().map_or(0, |b| b.map.slots));
    let sums = Mutex::new(Sums::empty(hash, len));
    let entries = Mutex::new(vec![0u32; pages as usize]);
    let whole = [Range { start: 0, end: len }];
    let written = in_pieces(&whole, false, |buffers, piece| {
        let first = (piece.start / PAGE_U64) as usize;
        let count = (piece.end - piece.start).div_ceil(PAGE_U64) as usize;
        let Buffers { new, hashes, .. } = buffers;
        hashes.clear();
        hashes.resize(count, 0);
        let mut slots = vec![0u32; count];
        let mut written = 0;
        for range in data_within(live, piece.clone())? {
            let mut chunk = range.start;
            while chunk < range.end {
                let n = ((range.end - chunk) as usize).min(CHUNK);
                read_full(live, &mut new[..n], chunk)?;
                let local = (chunk / PAGE_U64) as usize - first;
                let in_chunk = n.div_ceil(PAGE);
                for (i, bytes) in new[..n].chunks(PAGE).enumerate() {
                    let (page, h) = (first + local + i, hash.of(bytes));
                    hashes[local + i] = h;
                    slots[local + i] = match &base {
                        _ if h == 0 => 0,
                        Some(b) if h == b.sums.page(page) && b.map.entries[page] != 0 => {
                            b.map.entries[page]
                        }
                        _ => NEW,
                    };
                }
                // Each run of new pages takes slots of its own, in one write.
                let mut i = 0;
                while i < in_chunk {
                    if slots[local + i] != NEW {
                        i += 1;
                        continue;
                    }
                    let run = i;
                    while i < in_chunk && slots[local + i] == NEW {
                        i += 1;
                    }
                    let taken = (i - run) as u64;
                    let after = used.fetch_add(taken, Ordering::Relaxed);
                    if after + taken >= u64::from(NEW) {
                        return Err(invalid("more slots than a packed copy holds"));
                    }
                    let slot = after as u32 + 1;
                    for (k, s) in slots[local + run..local + i].iter_mut().enumerate() {
                        *s = slot + k as u32;
                    }
                    let bytes = &new[run * PAGE..(i * PAGE).min(n)];
                    target.write_all_at(bytes, slot_at(start, slot))?;
                    written += bytes.len() as u64;
                }
                chunk += n as u64;
            }
        }
        sums.lock()
            .expect("a copy thread does not panic")
            .set(first, hashes);
        entries.lock().expect("a copy thread does not panic")[first..first + count]
            .copy_from_slice(&slots);
        Ok(written)
    })?;
    let map = Map {
        slots: used.into_inner(),
        entries: entries.into_inner().expect("a copy thread does not panic"),
    };
    let header = map.write(target)?;
    target.set_len(start + map.slots * PAGE_U64)?;
    let copied = Copied {
        written: written + header,
        in_kernel: base.is_some(),
    };
    Ok((
        copied,
        sums.into_inner().expect("a copy thread does not panic"),
    ))
}

/// Makes `target` (the live RAM, or a new VM's empty file) hold what the
/// packed copy `source` holds. With `sums`, the copy's hashes, only the
/// pages whose hash differs are read from it; without, every page is.
pub fn load(source: &File, map: &Map, sums: Option<&Sums>, target: &File) -> io::Result<Copied> {
    let len = map.pages() * PAGE_U64;
    if target.metadata()?.len() != len {
        target.set_len(len)?;
    }
    let start = data_start(map.pages());
    let whole = [Range { start: 0, end: len }];
    let written = in_pieces(&whole, false, |buffers, piece| {
        let held = data_within(target, piece.clone())?;
        let differ = match sums {
            Some(sums) => differing(target, sums, &held, buffers)?,
            None => held.clone(),
        };
        let mut written = 0;
        for run in differ {
            written += map.put(source, start, target, run, Zeros::Punch, &mut buffers.new)?;
        }
        // Pages the target lacks: only those the copy holds are written.
        for hole in holes(&held, piece) {
            written += map.put(source, start, target, hole, Zeros::Holes, &mut buffers.new)?;
        }
        Ok(written)
    })?;
    Ok(Copied {
        written,
        in_kernel: false,
    })
}

/// What the target holds where the copy has zero pages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Zeros {
    /// Data, to be punched out.
    Punch,
    /// Holes already.
    Holes,
}

impl Map {
    /// Puts `run` of the guest's pages from the copy `source` (slots from
    /// `start`) into `target`: zero pages punched, runs of consecutive
    /// slots read in one go. Returns the bytes written.
    fn put(
        &self,
        source: &File,
        start: u64,
        target: &File,
        run: Range<u64>,
        zeros: Zeros,
        buffer: &mut [u8],
    ) -> io::Result<u64> {
        let (first, last) = (run.start / PAGE_U64, run.end.div_ceil(PAGE_U64));
        let slot = |page: u64| self.entries[page as usize];
        let mut written = 0;
        let mut page = first;
        while page < last {
            let from = page;
            let zero = slot(page) == 0;
            page += 1;
            while page < last
                && page - from < (CHUNK / PAGE) as u64
                && if zero {
                    slot(page) == 0
                } else {
                    slot(page) == slot(page - 1).wrapping_add(1)
                }
            {
                page += 1;
            }
            let at = from * PAGE_U64..(page * PAGE_U64).min(run.end);
            if zero {
                if zeros == Zeros::Punch {
                    punch(target, at)?;
                }
                continue;
            }
            let bytes = &mut buffer[..(at.end - at.start) as usize];
            read_full(source, bytes, slot_at(start, slot(from)))?;
            target.write_all_at(bytes, at.start)?;
            written += bytes.len() as u64;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ram::copy::tests::{contents, sparse_of};

    const MIB: u64 = 1 << 20;
    const P: u64 = PAGE_U64;

    fn empty(dir: &std::path::Path, name: &str) -> File {
        sparse_of(dir, name, 0, &[])
    }

    /// A RAM of three 8 MiB pieces and a little, pages spread across them.
    fn live_ram(shm: &std::path::Path) -> (File, u64) {
        let len = 24 * MIB + 5 * P;
        let pages = [
            (0, 1),
            (MIB, 2),
            (MIB + P, 3),
            (8 * MIB + 7 * P, 4),
            (len - P, 5),
        ];
        (sparse_of(shm, "live", len, &pages), len)
    }

    #[test]
    fn a_packed_copy_holds_only_the_nonzero_pages_and_loads_back_whole() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (live, len) = live_ram(shm.path());
        // A zero page the guest touched: data to tmpfs, not to a copy.
        live.write_all_at(&[0; PAGE], 3 * MIB).unwrap();
        let copy = empty(dir.path(), "copy");
        let (copied, sums) = save(&live, &copy, None, PageHash::fresh()).unwrap();
        let map = Map::read(&copy).unwrap();
        assert_eq!(map.slots, 5);
        assert_eq!(
            Header::read(&copy).unwrap().len(),
            copy.metadata().unwrap().len()
        );
        assert!(
            copy.metadata().unwrap().len() < 2 * MIB,
            "packed, not sparse"
        );
        // The map's blocks with an entry that is not zero: pages 0-1023, 2048-3071, 6144-.
        assert_eq!(copied.written, 5 * P + P + 3 * P, "pages, header, map");
        // Into an empty file (a new VM), then over a live RAM that moved on.
        let fresh = sparse_of(shm.path(), "fresh", 0, &[]);
        load(&copy, &map, Some(&sums), &fresh).unwrap();
        assert!(contents(&fresh) == contents(&live));
        let before = contents(&live);
        live.write_all_at(&[9; PAGE], MIB).unwrap();
        live.write_all_at(&[8; PAGE], 20 * MIB).unwrap();
        punch(&live, 0..P).unwrap();
        let copied = load(&copy, &map, Some(&sums), &live).unwrap();
        assert!(contents(&live) == before);
        assert_eq!(copied.written, 2 * P, "the changed and the freed page");
        assert_eq!(live.metadata().unwrap().len(), len);
        // Without hashes (torn), every page the copy holds is put back.
        live.write_all_at(&[7; PAGE], 20 * MIB).unwrap();
        load(&copy, &map, None, &live).unwrap();
        assert!(contents(&live) == before);
    }

    #[test]
    fn against_a_base_its_slots_are_shared_and_only_changed_pages_appended() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (live, _) = live_ram(shm.path());
        let first = empty(dir.path(), "first");
        let (_, first_sums) = save(&live, &first, None, PageHash::fresh()).unwrap();
        let first_state = contents(&live);
        // Since then: one page changed, one freed, one new.
        live.write_all_at(&[6; PAGE], MIB).unwrap();
        punch(&live, 8 * MIB + 7 * P..8 * MIB + 8 * P).unwrap();
        live.write_all_at(&[7; PAGE], 16 * MIB).unwrap();
        let second = empty(dir.path(), "second");
        let base = Base {
            file: first.try_clone().unwrap(),
            map: Map::read(&first).unwrap(),
            sums: first_sums.clone(),
        };
        let (copied, second_sums) = save(&live, &second, Some(base), PageHash::fresh()).unwrap();
        assert_eq!(second_sums.hash, first_sums.hash, "one key for the chain");
        let map = Map::read(&second).unwrap();
        assert_eq!(map.slots, 7, "five shared, two appended");
        assert!(copied.in_kernel);
        // The freed page's map block is all zeros now: a hole.
        assert_eq!(copied.written, 2 * P + P + 3 * P, "pages, header, map");
        // Each copy loads back what the RAM held when it was made.
        let fresh = sparse_of(shm.path(), "fresh", 0, &[]);
        load(&second, &map, Some(&second_sums), &fresh).unwrap();
        assert!(contents(&fresh) == contents(&live));
        let first_map = Map::read(&first).unwrap();
        load(&first, &first_map, Some(&first_sums), &fresh).unwrap();
        assert!(contents(&fresh) == first_state);
    }

    #[test]
    fn dead_slots_ask_for_a_fresh_copy_and_damage_is_found() {
        let map = |slots: u64, live: usize| Map {
            slots,
            entries: (1..=live as u32)
                .chain(std::iter::repeat_n(0, 100))
                .collect(),
        };
        let live = 2 * COMPACT_SLACK as usize;
        assert!(!map(COMPACT_AT * live as u64 + COMPACT_SLACK, live).wants_compacting());
        assert!(map(COMPACT_AT * live as u64 + COMPACT_SLACK + 1, live).wants_compacting());
        // A small guest is not copied anew every few saves.
        assert!(!map(COMPACT_SLACK, 10).wants_compacting());

        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (live, _) = live_ram(shm.path());
        let copy = empty(dir.path(), "copy");
        save(&live, &copy, None, PageHash::fresh()).unwrap();
        assert!(Map::read(&copy).is_ok());
        // A map that does not match its checksum is refused, and a file
        // that is no packed copy.
        copy.write_all_at(&[0xff], P + 1).unwrap();
        assert!(Map::read(&copy).is_err());
        assert!(Map::read(&live).is_err());
    }
}
