//! A hash of every page of a RAM checkpoint, kept beside it: a save
//! compares the live RAM with the previous checkpoint's hashes instead of
//! reading that checkpoint back from disk, and a restore reads only the
//! pages whose hash differs from the live RAM's. 128-bit keyed hashes: a
//! false match (a page left unrestored) is as likely as a random 128-bit
//! collision. They are only a shortcut: without them (a copy from before,
//! or hashes a crash tore), a restore compares pages, and a save hashes
//! that copy first.

use std::fs::File;
use std::hash::BuildHasher;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::sparse::PAGE;

const MAGIC: &[u8; 8] = b"RUMSUMS1";
const HEADER: usize = 32;
const ENTRY: usize = 16;

/// How one page hashes under a key. All-zero pages (and holes) hash to 0,
/// so a checkpoint's holes need no entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHash {
    seed: u64,
    zero: u128,
}

impl PageHash {
    fn with_seed(seed: u64) -> Self {
        let zero = xxhash_rust::xxh3::xxh3_128_with_seed(&[0u8; PAGE], seed);
        Self { seed, zero }
    }

    /// A key of its own: the process's random hash keys.
    pub fn fresh() -> Self {
        Self::with_seed(std::collections::hash_map::RandomState::new().hash_one(0u8))
    }

    pub fn of(&self, page: &[u8]) -> u128 {
        match xxhash_rust::xxh3::xxh3_128_with_seed(page, self.seed) {
            h if h == self.zero => 0,
            // A nonzero page must never read as a hole.
            0 => 1,
            h => h,
        }
    }
}

/// The hashes of a file's pages, in order, kept as the file holds them
/// (header, then 16 little-endian bytes a page): a second 4 MiB to convert
/// into costs a thousand page faults, milliseconds here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sums {
    pub hash: PageHash,
    image: Vec<u8>,
}

/// Where the hashes of RAM checkpoint `ram` are.
pub fn path_of(ram: &Path) -> PathBuf {
    let mut name = ram.as_os_str().to_owned();
    name.push(".sum");
    name.into()
}

impl Sums {
    /// All holes, for a file of `len` bytes.
    pub fn empty(hash: PageHash, len: u64) -> Self {
        Self {
            hash,
            image: vec![0; HEADER + len.div_ceil(PAGE as u64) as usize * ENTRY],
        }
    }

    /// How many pages they describe.
    pub fn len(&self) -> usize {
        (self.image.len() - HEADER) / ENTRY
    }

    /// The hash of page `index`.
    pub fn page(&self, index: usize) -> u128 {
        let at = HEADER + index * ENTRY;
        u128::from_le_bytes(self.image[at..at + ENTRY].try_into().expect("16 bytes"))
    }

    /// Sets the hashes of the pages from `first` on.
    pub fn set(&mut self, first: usize, hashes: &[u128]) {
        let entries = &mut self.image[HEADER + first * ENTRY..][..hashes.len() * ENTRY];
        for (slot, hash) in entries.chunks_exact_mut(ENTRY).zip(hashes) {
            slot.copy_from_slice(&hash.to_le_bytes());
        }
    }

    /// The hashes beside checkpoint `ram` if they are there and describe a
    /// file of `len` bytes; `None` sends the caller down the comparing path.
    pub fn read(ram: &Path, len: u64) -> Option<Sums> {
        let file = File::open(path_of(ram)).ok()?;
        let image = super::sparse::read_data(&file, 0..file.metadata().ok()?.len()).ok()?;
        let (header, entries) = image.split_at_checked(HEADER)?;
        let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
        let count = len.div_ceil(PAGE as u64);
        if &header[..8] != MAGIC
            || word(16) != count
            || entries.len() as u64 != count * ENTRY as u64
            || word(24) != xxhash_rust::xxh3::xxh3_64(entries)
        {
            return None;
        }
        let hash = PageHash::with_seed(word(8));
        Some(Sums { hash, image })
    }

    /// Writes the hashes to `path`, checksummed rather than synced: torn by
    /// a crash, they are not used, and a restore compares pages instead.
    /// Blocks of holes' entries stay holes, so a mostly free RAM costs little.
    pub fn write(&mut self, path: &Path) -> io::Result<()> {
        let count = self.len() as u64;
        let (header, entries) = self.image.split_at_mut(HEADER);
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&self.hash.seed.to_le_bytes());
        header[16..24].copy_from_slice(&count.to_le_bytes());
        header[24..32].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(entries).to_le_bytes());
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.set_len(self.image.len() as u64)?;
        super::sparse::write_data(&file, 0, &self.image)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn hashes_read_back_as_written_and_zero_pages_count_as_holes() {
        let dir = tempfile::tempdir().unwrap();
        let ram = dir.path().join("a.ram");
        let hash = PageHash::fresh();
        let len = 3 << 20;
        let mut sums = Sums::empty(hash, len);
        sums.set(5, &[hash.of(&[7u8; PAGE])]);
        sums.set(700, &[hash.of(&[8u8; PAGE])]);
        assert_eq!(hash.of(&[0u8; PAGE]), 0);
        assert_ne!(sums.page(5), sums.page(700));
        assert_eq!(sums.page(6), 0);
        sums.write(&path_of(&ram)).unwrap();
        assert_eq!(Sums::read(&ram, len), Some(sums));
        // Hashes of another size of RAM are not used, nor torn ones.
        assert_eq!(Sums::read(&ram, len * 2), None);
        let file = File::options().write(true).open(path_of(&ram)).unwrap();
        file.write_all_at(&[0u8; PAGE], HEADER as u64).unwrap();
        assert_eq!(Sums::read(&ram, len), None);
    }

    #[test]
    fn two_keys_hash_a_page_differently() {
        let page = [3u8; PAGE];
        assert_ne!(PageHash::fresh().of(&page), PageHash::fresh().of(&page));
    }
}
