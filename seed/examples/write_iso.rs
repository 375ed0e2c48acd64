//! Writes a seed-like ISO from files given on the command line (for poking
//! at the writer with other tools): `write_iso OUT.iso FILE...`.

use rum_seed::iso::{IsoFile, write};
use std::os::unix::fs::PermissionsExt;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, inputs) = args
        .split_first()
        .expect("usage: write_iso OUT.iso FILE...");
    let files: Vec<IsoFile> = inputs
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).expect("stat");
            let name = std::path::Path::new(path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            IsoFile::new(
                name,
                std::fs::read(path).expect("read"),
                meta.permissions().mode() & 0o7777,
            )
        })
        .collect();
    let mut file = std::fs::File::create(out).expect("create");
    let size = write("cidata", &files, &mut file).expect("write");
    println!("{out}: {size} bytes");
}
