//! Where a sparse file holds data: the ranges between its holes
//! (`SEEK_DATA`, `SEEK_HOLE`), which RAM files and their copies are full of;
//! reading and writing such files without touching their holes.

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// The unit of sparseness, of hashing and of comparison: a guest page.
pub const PAGE: usize = 4096;

/// The ranges of `file` that hold data, in order (holes left out).
pub(super) fn data_ranges(file: &File) -> io::Result<Vec<Range<u64>>> {
    data_within(file, 0..file.metadata()?.len())
}

/// The ranges of `file` within `range` that hold data, in order.
pub(super) fn data_within(file: &File, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
    let len = range.end;
    let mut ranges = Vec::new();
    let mut at = range.start;
    while at < len {
        let start = match lseek(file, at as i64, Whence::SeekData) {
            Ok(s) if s as u64 >= len => break,
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

/// `range` of `file`, its holes not read: reading a hole costs the
/// filesystem more than the zeros are worth.
pub(super) fn read_data(file: &File, range: Range<u64>) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; (range.end - range.start) as usize];
    for data in data_within(file, range.clone())? {
        let at = (data.start - range.start) as usize;
        file.read_exact_at(
            &mut bytes[at..at + (data.end - data.start) as usize],
            data.start,
        )?;
    }
    Ok(bytes)
}

/// Writes `bytes` at `at` of `file`, leaving its all-zero pages out (holes
/// in a new file) but never the first; returns the bytes written.
pub(super) fn write_data(file: &File, at: u64, bytes: &[u8]) -> io::Result<u64> {
    let mut written = 0;
    let mut blocks = bytes.chunks(PAGE).enumerate().peekable();
    while let Some((first, block)) = blocks.next() {
        if first > 0 && block.iter().all(|b| *b == 0) {
            continue;
        }
        // Runs of blocks with data go in one write each.
        let mut end = first + 1;
        while blocks.next_if(|(_, b)| b.iter().any(|b| *b != 0)).is_some() {
            end += 1;
        }
        let run = &bytes[first * PAGE..(end * PAGE).min(bytes.len())];
        file.write_all_at(run, at + (first * PAGE) as u64)?;
        written += run.len() as u64;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_within_a_range_is_cut_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let page = PAGE as u64;
        let file = File::create(dir.path().join("f")).unwrap();
        file.set_len(16 * page).unwrap();
        for at in [0, page, 5 * page, 9 * page] {
            file.write_all_at(&[1u8; PAGE], at).unwrap();
        }
        assert_eq!(
            data_within(&file, page..6 * page).unwrap(),
            vec![page..2 * page, 5 * page..6 * page]
        );
        assert_eq!(data_within(&file, 2 * page..5 * page).unwrap(), vec![]);
        assert_eq!(data_within(&file, 6 * page..9 * page).unwrap(), vec![]);
    }

    #[test]
    fn data_written_without_its_zero_pages_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let mut bytes = vec![0u8; 6 * PAGE + 100];
        bytes[2 * PAGE] = 1;
        bytes[6 * PAGE + 99] = 2;
        file.set_len(PAGE as u64 + bytes.len() as u64).unwrap();
        let written = write_data(&file, PAGE as u64, &bytes).unwrap();
        assert_eq!(
            written,
            (2 * PAGE + 100) as u64,
            "the first, third and last"
        );
        let page = PAGE as u64;
        let back = read_data(&file, page..page + bytes.len() as u64).unwrap();
        assert!(back == bytes);
        assert_eq!(data_within(&file, 2 * page..3 * page).unwrap(), vec![]);
    }
}
