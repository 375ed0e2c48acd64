//! A writer for single-directory ISO 9660 images with Rock Ridge (real
//! names, POSIX modes) and Joliet, as NoCloud seeds need. Output is a pure
//! function of the inputs: every timestamp is fixed.

mod descriptor;
mod encode;
mod error;
mod names;
mod record;
mod susp;

pub use error::IsoError;
pub use names::MAX_NAME_CHARS;

use encode::{SECTOR, sectors};
use record::Record;
use std::borrow::Cow;
use std::io::Write;

/// First sector after the 32 KiB system area.
const FIRST_DESCRIPTOR: u32 = 16;
/// PVD, Joliet SVD, terminator, then four one-sector path tables.
const FIRST_DIRECTORY: u32 = FIRST_DESCRIPTOR + 3 + 4;
/// Joliet volume identifiers hold 16 UCS-2 characters.
const MAX_VOLUME_ID: usize = 16;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;

/// One file of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoFile<'a> {
    pub name: String,
    pub data: Cow<'a, [u8]>,
    /// Permission bits (e.g. 0o755).
    pub mode: u32,
}

impl<'a> IsoFile<'a> {
    pub fn new(name: impl Into<String>, data: impl Into<Cow<'a, [u8]>>, mode: u32) -> Self {
        Self {
            name: name.into(),
            data: data.into(),
            mode,
        }
    }
}

/// Where each part of the image goes, in sectors.
struct Layout {
    primary_root: u32,
    primary_sectors: u32,
    joliet_root: u32,
    joliet_sectors: u32,
    continuation: u32,
    /// Extent of each file, in input order (0 for empty files).
    extents: Vec<u32>,
    total: u32,
}

/// Writes the image to `out` and returns its size in bytes.
pub fn write(
    volume_id: &str,
    files: &[IsoFile<'_>],
    out: &mut impl Write,
) -> Result<u64, IsoError> {
    check(volume_id, files)?;
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let primary_ids = names::primary(&names);

    // Records are planned without locations first: lengths never depend on them.
    let mut continuation = Continuation::default();
    let er_slot = continuation.push(susp::er());
    let mut primary = vec![
        Entry::dir(vec![0], susp_root_prefix(), Some(er_slot)),
        Entry::dir(vec![1], susp::px(S_IFDIR | 0o555, 2), None),
    ];
    for (i, file) in files.iter().enumerate() {
        let px = susp::px(S_IFREG | file.mode, 1);
        let nm = susp::nm(&file.name);
        let id = primary_ids[i].as_bytes().to_vec();
        let mut entry = Entry::file(i, id, [px.clone(), nm.clone()].concat());
        if entry.record.len() > record::MAX_LEN {
            // Long UTF-8 names do not fit beside the fixed fields: NM moves out.
            entry.record.system_use = [px, susp::ce(0, 0, 0)].concat();
            entry.ce_slot = Some(continuation.push(nm));
        }
        primary.push(entry);
    }
    primary[2..].sort_by(|a, b| a.record.id.cmp(&b.record.id));

    let mut joliet = vec![
        Entry::dir(vec![0], vec![], None),
        Entry::dir(vec![1], vec![], None),
    ];
    for (i, file) in files.iter().enumerate() {
        joliet.push(Entry::file(i, names::joliet(&file.name), vec![]));
    }
    joliet[2..].sort_by(|a, b| a.record.id.cmp(&b.record.id));

    let layout = layout(&primary, &joliet, continuation.sectors(), files);
    let place = |entries: &mut Vec<Entry>, root: u32, root_sectors: u32| {
        for entry in entries.iter_mut() {
            let (extent, size) = match entry.file {
                None => (root, root_sectors * SECTOR as u32),
                Some(i) => (layout.extents[i], files[i].data.len() as u32),
            };
            entry.record.extent = extent;
            entry.record.size = size;
            if let Some(slot) = entry.ce_slot {
                let (block, offset, len) = continuation.locate(slot, layout.continuation);
                set_ce(&mut entry.record, block, offset, len);
            }
        }
    };
    place(&mut primary, layout.primary_root, layout.primary_sectors);
    place(&mut joliet, layout.joliet_root, layout.joliet_sectors);

    let mut w = SectorWriter { out, written: 0 };
    w.zeros(FIRST_DESCRIPTOR as usize * SECTOR)?;
    // A descriptor's root record is exactly 34 bytes: no system use area.
    let bare = |r: &Record| Record {
        system_use: vec![],
        ..r.clone()
    };
    let primary_root = bare(&primary[0].record);
    let joliet_root = bare(&joliet[0].record);
    w.bytes(&descriptor::primary(
        volume_id,
        layout.total,
        &primary_root,
        FIRST_DESCRIPTOR + 3,
    ))?;
    w.bytes(&descriptor::joliet(
        volume_id,
        layout.total,
        &joliet_root,
        FIRST_DESCRIPTOR + 5,
    ))?;
    w.bytes(&descriptor::terminator())?;
    for (root, big_endian) in [
        (layout.primary_root, false),
        (layout.primary_root, true),
        (layout.joliet_root, false),
        (layout.joliet_root, true),
    ] {
        w.sector(&descriptor::path_table(root, big_endian))?;
    }
    w.bytes(&directory(&primary))?;
    w.bytes(&directory(&joliet))?;
    w.bytes(&continuation.encode())?;
    for file in files {
        if !file.data.is_empty() {
            w.sector(&file.data)?;
        }
    }
    debug_assert_eq!(w.written, layout.total as u64 * SECTOR as u64);
    Ok(w.written)
}

fn check(volume_id: &str, files: &[IsoFile<'_>]) -> Result<(), IsoError> {
    let valid_id = !volume_id.is_empty()
        && volume_id.len() <= MAX_VOLUME_ID
        && volume_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if !valid_id {
        return Err(IsoError::BadVolumeId(volume_id.to_owned()));
    }
    let mut seen = std::collections::HashSet::new();
    for file in files {
        names::check(&file.name)?;
        if !seen.insert(file.name.as_str()) {
            return Err(IsoError::Duplicate(file.name.clone()));
        }
        if file.data.len() as u64 > u32::MAX as u64 {
            return Err(IsoError::TooLarge {
                name: file.name.clone(),
                size: file.data.len() as u64,
            });
        }
        if file.mode > 0o7777 {
            return Err(IsoError::BadMode {
                name: file.name.clone(),
                mode: file.mode,
            });
        }
    }
    Ok(())
}

/// SP, PX and a CE pointing at the ER entry, for the root's "." record.
fn susp_root_prefix() -> Vec<u8> {
    [susp::sp(), susp::px(S_IFDIR | 0o555, 2), susp::ce(0, 0, 0)].concat()
}

/// A directory record, the file it stands for (`None` for "." and ".."),
/// and the continuation slot its CE entry points at.
struct Entry {
    file: Option<usize>,
    record: Record,
    ce_slot: Option<usize>,
}

impl Entry {
    fn dir(id: Vec<u8>, system_use: Vec<u8>, ce_slot: Option<usize>) -> Self {
        Self {
            file: None,
            record: Record {
                extent: 0,
                size: 0,
                is_dir: true,
                id,
                system_use,
            },
            ce_slot,
        }
    }

    fn file(index: usize, id: Vec<u8>, system_use: Vec<u8>) -> Self {
        Self {
            file: Some(index),
            record: Record {
                extent: 0,
                size: 0,
                is_dir: false,
                id,
                system_use,
            },
            ce_slot: None,
        }
    }
}

/// Rewrites the CE entry at the end of a record's system use area.
fn set_ce(record: &mut Record, block: u32, offset: u32, len: u32) {
    let at = record.system_use.len() - susp::CE_LEN;
    debug_assert_eq!(&record.system_use[at..at + 2], b"CE");
    record.system_use[at..].copy_from_slice(&susp::ce(block, offset, len));
}

fn layout(
    primary: &[Entry],
    joliet: &[Entry],
    continuation_sectors: u32,
    files: &[IsoFile<'_>],
) -> Layout {
    let primary_sectors = directory_sectors(primary);
    let joliet_sectors = directory_sectors(joliet);
    let primary_root = FIRST_DIRECTORY;
    let joliet_root = primary_root + primary_sectors;
    let continuation = joliet_root + joliet_sectors;
    let mut next = continuation + continuation_sectors;
    let extents = files
        .iter()
        .map(|f| {
            if f.data.is_empty() {
                return 0;
            }
            let at = next;
            next += sectors(f.data.len()) as u32;
            at
        })
        .collect();
    Layout {
        primary_root,
        primary_sectors,
        joliet_root,
        joliet_sectors,
        continuation,
        extents,
        total: next,
    }
}

/// Records never straddle a sector: one that does not fit starts the next.
/// Places items of the given lengths in sectors, never straddling one:
/// an item that does not fit starts the next sector.
fn pack(lengths: impl IntoIterator<Item = usize>) -> Vec<(usize, usize)> {
    let mut placed = Vec::new();
    let (mut sector, mut offset) = (0, 0);
    for len in lengths {
        if offset + len > SECTOR {
            sector += 1;
            offset = 0;
        }
        placed.push((sector, offset));
        offset += len;
    }
    placed
}

fn sectors_used(placed: &[(usize, usize)]) -> u32 {
    placed.last().map_or(0, |(sector, _)| *sector as u32 + 1)
}

/// Packs byte strings into whole sectors.
fn packed(items: &[Vec<u8>]) -> Vec<u8> {
    let placed = pack(items.iter().map(Vec::len));
    let mut out = vec![0u8; sectors_used(&placed) as usize * SECTOR];
    for (item, (sector, offset)) in items.iter().zip(placed) {
        let at = sector * SECTOR + offset;
        out[at..at + item.len()].copy_from_slice(item);
    }
    out
}

fn directory_sectors(entries: &[Entry]) -> u32 {
    sectors_used(&pack(entries.iter().map(|e| e.record.len())))
}

fn directory(entries: &[Entry]) -> Vec<u8> {
    packed(
        &entries
            .iter()
            .map(|e| e.record.encode())
            .collect::<Vec<_>>(),
    )
}

/// SUSP continuation area entries, packed into whole sectors.
#[derive(Default)]
struct Continuation {
    entries: Vec<Vec<u8>>,
}

impl Continuation {
    fn push(&mut self, entry: Vec<u8>) -> usize {
        self.entries.push(entry);
        self.entries.len() - 1
    }

    fn sectors(&self) -> u32 {
        sectors_used(&pack(self.entries.iter().map(Vec::len)))
    }

    fn locate(&self, slot: usize, first_sector: u32) -> (u32, u32, u32) {
        let (sector, offset) = pack(self.entries.iter().map(Vec::len))[slot];
        (
            first_sector + sector as u32,
            offset as u32,
            self.entries[slot].len() as u32,
        )
    }

    fn encode(&self) -> Vec<u8> {
        packed(&self.entries)
    }
}

/// Counts what it writes and pads file data to whole sectors.
struct SectorWriter<'w, W: Write> {
    out: &'w mut W,
    written: u64,
}

impl<W: Write> SectorWriter<'_, W> {
    fn bytes(&mut self, data: &[u8]) -> Result<(), IsoError> {
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn sector(&mut self, data: &[u8]) -> Result<(), IsoError> {
        self.bytes(data)?;
        self.zeros(sectors(data.len()) * SECTOR - data.len())
    }

    fn zeros(&mut self, count: usize) -> Result<(), IsoError> {
        const ZEROS: [u8; SECTOR] = [0; SECTOR];
        let mut left = count;
        while left > 0 {
            let n = left.min(SECTOR);
            self.bytes(&ZEROS[..n])?;
            left -= n;
        }
        Ok(())
    }
}
