//! Where a sparse file holds data: the ranges between its holes
//! (`SEEK_DATA`, `SEEK_HOLE`), which RAM files and their copies are full of.

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};
use std::fs::File;
use std::io;
use std::ops::Range;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ram::sums::PAGE;
    use std::os::unix::fs::FileExt;

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
}
