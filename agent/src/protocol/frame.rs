//! Framing: how messages travel over a byte stream.
//!
//! ```text
//! frame    = header_len:u32be body_len:u32be header body
//! header   = a JSON object (1 ..= MAX_HEADER bytes)
//! body     = raw bytes (file data, process output), possibly empty
//! sync     = FF FF FF FF "rum-sync"
//! ```
//!
//! `header_len + body_len` never exceeds [`MAX_FRAME`]. A `sync` marker goes
//! before every handshake (`hello`) in both directions. Its first four bytes
//! are not a valid header length, so a decoder that meets one where a frame
//! should start recognises it, and a decoder that lost its place (stale bytes
//! of an earlier session on a virtio-serial port, a frame cut in half by a
//! disconnect, a VM restored from a snapshot) skips everything up to the next
//! marker. The decoder never holds more than [`MAX_BUFFER`] bytes.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest `header_len + body_len`.
pub const MAX_FRAME: usize = 1024 * 1024;
/// Largest header.
pub const MAX_HEADER: usize = 64 * 1024;
/// Body size senders use for bulk data (file chunks, process output).
pub const CHUNK: usize = 256 * 1024;
/// Bytes before the header: the two lengths.
pub const PREFIX: usize = 8;
/// Marks the start of a handshake; see the module documentation.
pub const SYNC: [u8; 12] = *b"\xff\xff\xff\xffrum-sync";
/// The most a [`Decoder`] ever buffers.
pub const MAX_BUFFER: usize = PREFIX + MAX_FRAME;

/// How much the decoder asks a reader for at once while no large frame is pending.
const READ_SIZE: usize = 64 * 1024;

/// One decoded frame: the JSON header and the raw body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Vec<u8>,
    pub body: Vec<u8>,
}

/// What a decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Frame(Frame),
    /// A sync marker: a handshake follows.
    Sync,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("Frame header of {0} bytes (must be 1 to {MAX_HEADER})")]
    HeaderSize(u32),
    #[error("Frame of {0} bytes exceeds the maximum of {MAX_FRAME}")]
    TooLarge(u64),
    #[error("Malformed sync marker")]
    BadSync,
}

/// Encodes one frame.
pub fn encode(header: &[u8], body: &[u8]) -> Vec<u8> {
    assert!(
        !header.is_empty() && header.len() <= MAX_HEADER,
        "frame header of {} bytes",
        header.len()
    );
    assert!(
        header.len() + body.len() <= MAX_FRAME,
        "frame of {} bytes",
        header.len() + body.len()
    );
    let mut out = Vec::with_capacity(PREFIX + header.len() + body.len());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out
}

/// An incremental frame decoder over a bounded buffer.
///
/// Feed it with [`Decoder::read_buf`] + [`Decoder::filled`] (or
/// [`Decoder::extend`]), take items with [`Decoder::next_item`].
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Lost track of frame boundaries: skip to the next sync marker.
    scanning: bool,
    /// Where bytes of a host that may be a new one begin, after a partial
    /// frame (see [`Decoder::mark_resume`]).
    resume: Option<usize>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder that expects a frame or a sync marker first.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanning: false,
            resume: None,
        }
    }

    /// A decoder that skips everything before the first sync marker.
    pub fn scanning() -> Self {
        Self {
            scanning: true,
            ..Self::new()
        }
    }

    /// Forget frame boundaries and skip to the next sync marker (keeps buffered bytes).
    pub fn resync(&mut self) {
        self.scanning = true;
    }

    /// Drops everything buffered and skips to the next sync marker.
    pub fn reset_scanning(&mut self) {
        self.start = 0;
        self.end = 0;
        self.scanning = true;
        self.resume = None;
    }

    /// The stream paused (end of stream on a port whose host came back) and
    /// the bytes that follow may come from the same host or a new one. A new
    /// host starts with a sync marker: if the next bytes are one, the partial
    /// frame buffered before them is dropped; otherwise they continue it.
    pub fn mark_resume(&mut self) {
        self.resume = (!self.scanning && self.end > self.start).then_some(self.end);
    }

    pub fn is_scanning(&self) -> bool {
        self.scanning
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Allocated buffer size; never above [`MAX_BUFFER`].
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Space to read into: at least one byte, never making the buffer larger
    /// than the pending frame needs (at most [`MAX_BUFFER`]).
    pub fn read_buf(&mut self) -> &mut [u8] {
        // Relative to `start`.
        let want = self.wanted().max(self.buffered() + 1);
        if self.start > 0
            && (self.start == self.end
                || self.start + want > self.buf.len()
                || self.buf.len() - self.end < READ_SIZE)
        {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            if let Some(resume) = &mut self.resume {
                *resume -= self.start;
            }
            self.start = 0;
        }
        let target = (self.start + want)
            .max(self.end + READ_SIZE)
            .min(MAX_BUFFER);
        if self.buf.len() < target {
            self.buf.resize(target, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were written to the start of [`Decoder::read_buf`].
    pub fn filled(&mut self, n: usize) {
        assert!(
            self.end + n <= self.buf.len(),
            "filled past the read buffer"
        );
        self.end += n;
    }

    /// Copies `data` in (tests and fuzzing); decodes as it goes so the buffer
    /// stays bounded, returning what was decoded.
    pub fn extend(&mut self, mut data: &[u8]) -> Vec<Result<Item, FrameError>> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let space = self.read_buf();
            let n = space.len().min(data.len());
            space[..n].copy_from_slice(&data[..n]);
            self.filled(n);
            data = &data[n..];
            loop {
                match self.next_item() {
                    Ok(Some(item)) => out.push(Ok(item)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e));
                        self.resync();
                    }
                }
            }
        }
        out
    }

    /// Bytes the buffer must hold to finish the current item.
    fn wanted(&self) -> usize {
        if let Some(resume) = self.resume {
            return resume - self.start + SYNC.len();
        }
        let avail = &self.buf[self.start..self.end];
        if self.scanning || avail.len() < PREFIX {
            return SYNC.len();
        }
        let (h, b) = lengths(avail);
        if h == u32::MAX {
            return SYNC.len();
        }
        let total = h as u64 + b as u64;
        if h as usize > MAX_HEADER || total > MAX_FRAME as u64 {
            return PREFIX;
        }
        PREFIX + total as usize
    }

    /// The next complete item, `None` if more bytes are needed. After an
    /// error the caller decides: [`Decoder::resync`] or give up.
    pub fn next_item(&mut self) -> Result<Option<Item>, FrameError> {
        if self.scanning && !self.scan() {
            return Ok(None);
        }
        if let Some(resume) = self.resume {
            let next = &self.buf[resume..self.end];
            let n = next.len().min(SYNC.len());
            if next[..n] != SYNC[..n] || (n < SYNC.len() && self.completes_a_frame()) {
                self.resume = None;
            } else if n < SYNC.len() {
                return Ok(None);
            } else {
                self.start = resume;
                self.resume = None;
            }
        }
        let avail = &self.buf[self.start..self.end];
        if avail.len() >= 4 && avail[..4] == SYNC[..4] {
            if avail.len() < SYNC.len() {
                return if SYNC.starts_with(avail) {
                    Ok(None)
                } else {
                    Err(self.fail(FrameError::BadSync))
                };
            }
            if avail[..SYNC.len()] != SYNC {
                return Err(self.fail(FrameError::BadSync));
            }
            self.start += SYNC.len();
            return Ok(Some(Item::Sync));
        }
        if avail.len() < PREFIX {
            return Ok(None);
        }
        let (h, b) = lengths(avail);
        if h == 0 || h as usize > MAX_HEADER {
            return Err(self.fail(FrameError::HeaderSize(h)));
        }
        let total = h as u64 + b as u64;
        if total > MAX_FRAME as u64 {
            return Err(self.fail(FrameError::TooLarge(total)));
        }
        let total = total as usize;
        if avail.len() < PREFIX + total {
            return Ok(None);
        }
        let header = avail[PREFIX..PREFIX + h as usize].to_vec();
        let body = avail[PREFIX + h as usize..PREFIX + total].to_vec();
        self.start += PREFIX + total;
        Ok(Some(Item::Frame(Frame { header, body })))
    }

    /// Whether the buffer holds a whole frame: bytes after a pause that
    /// finish one continue it, even if they start like a sync marker.
    fn completes_a_frame(&self) -> bool {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < PREFIX {
            return false;
        }
        let (h, b) = lengths(avail);
        h != u32::MAX && (avail.len() as u64) >= PREFIX as u64 + h as u64 + b as u64
    }

    /// Skips one byte so that resyncing cannot find the same bad spot again.
    fn fail(&mut self, e: FrameError) -> FrameError {
        self.start += 1;
        e
    }

    /// In scanning mode: drops bytes up to the next sync marker. True when
    /// the buffer now starts with one (and scanning is over).
    fn scan(&mut self) -> bool {
        let avail = &self.buf[self.start..self.end];
        if let Some(pos) = avail.windows(SYNC.len()).position(|w| w == SYNC) {
            self.start += pos;
            self.scanning = false;
            return true;
        }
        // Keep a tail that may be the start of a marker.
        let keep = (1..SYNC.len())
            .rev()
            .find(|&k| k <= avail.len() && SYNC.starts_with(&avail[avail.len() - k..]))
            .unwrap_or(0);
        self.start = self.end - keep;
        false
    }
}

fn lengths(avail: &[u8]) -> (u32, u32) {
    let h = u32::from_be_bytes(avail[0..4].try_into().expect("4 bytes"));
    let b = u32::from_be_bytes(avail[4..8].try_into().expect("4 bytes"));
    (h, b)
}

/// A [`Decoder`] reading from an async byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    reader: R,
    decoder: Decoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, decoder: Decoder) -> Self {
        Self { reader, decoder }
    }

    pub fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.reader
    }

    /// The next item; `Ok(None)` at end of stream. A framing error comes back
    /// as `ErrorKind::InvalidData` carrying the [`FrameError`]; the decoder is
    /// then left for the caller to [`Decoder::resync`].
    pub async fn next(&mut self) -> io::Result<Option<Item>> {
        loop {
            match self.decoder.next_item() {
                Ok(Some(item)) => return Ok(Some(item)),
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let n = self.reader.read(self.decoder.read_buf()).await?;
            if n == 0 {
                return Ok(None);
            }
            self.decoder.filled(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(items: Vec<Result<Item, FrameError>>) -> Vec<Item> {
        items.into_iter().map(|r| r.expect("no error")).collect()
    }

    #[test]
    fn round_trips_frames_split_anywhere() {
        let mut wire = SYNC.to_vec();
        wire.extend(encode(b"{\"a\":1}", b""));
        wire.extend(encode(b"{}", &[7u8; 100_000]));
        for split in [1, 3, 7, 8, 12, 13, 4096, wire.len()] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(split) {
                got.extend(frames(d.extend(chunk)));
            }
            assert_eq!(got.len(), 3, "split {split}");
            assert_eq!(got[0], Item::Sync);
            assert_eq!(
                got[2],
                Item::Frame(Frame {
                    header: b"{}".to_vec(),
                    body: vec![7u8; 100_000]
                })
            );
            assert_eq!(d.buffered(), 0);
        }
    }

    /// A sync marker and an empty-bodied frame with `header`, decoded.
    fn sync_then(header: &[u8]) -> Vec<Item> {
        vec![
            Item::Sync,
            Item::Frame(Frame {
                header: header.to_vec(),
                body: vec![],
            }),
        ]
    }

    #[test]
    fn scanning_skips_garbage_up_to_sync() {
        let mut wire = b"garbage\xff\xff\xff\xffrum-syn".to_vec();
        wire.extend(encode(b"{\"x\":2}", b"zz")); // a frame before any sync: skipped
        wire.extend(SYNC);
        wire.extend(encode(b"{\"h\":1}", b""));
        let mut d = Decoder::scanning();
        let got = frames(d.extend(&wire));
        assert_eq!(got, sync_then(b"{\"h\":1}"));
    }

    #[test]
    fn oversized_lengths_are_errors_without_allocation() {
        let mut d = Decoder::new();
        let mut wire = 10u32.to_be_bytes().to_vec();
        wire.extend((MAX_FRAME as u32).to_be_bytes());
        let out = d.extend(&wire);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], Err(FrameError::TooLarge(_))));
        assert!(d.capacity() <= READ_SIZE + PREFIX);
        let mut d = Decoder::new();
        let out = d.extend(&[0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(out[0], Err(FrameError::HeaderSize(0))));
    }

    #[test]
    fn a_full_size_frame_fits() {
        let header = b"{}";
        let body = vec![1u8; MAX_FRAME - header.len()];
        let mut d = Decoder::new();
        let got = frames(d.extend(&encode(header, &body)));
        assert_eq!(got.len(), 1);
        assert!(d.capacity() <= MAX_BUFFER);
    }

    #[test]
    fn after_a_pause_a_sync_drops_the_partial_frame_and_anything_else_continues_it() {
        let whole = encode(b"{\"a\":1}", b"body");
        let mut next_host = SYNC.to_vec();
        next_host.extend(encode(b"{\"h\":1}", b""));
        // A new host: its sync marker ends the half frame of the one before.
        // Fed a byte at a time, so the decision waits for the whole marker.
        let mut d = Decoder::new();
        assert!(d.extend(&whole[..5]).is_empty());
        d.mark_resume();
        let got: Vec<Item> = next_host
            .iter()
            .flat_map(|b| frames(d.extend(&[*b])))
            .collect();
        assert_eq!(got, sync_then(b"{\"h\":1}"));
        // The same host (a late end of stream): the frame goes on.
        let mut d = Decoder::new();
        assert!(d.extend(&whole[..5]).is_empty());
        d.mark_resume();
        let got = frames(d.extend(&whole[5..]));
        assert_eq!(
            got,
            vec![Item::Frame(Frame {
                header: b"{\"a\":1}".to_vec(),
                body: b"body".to_vec()
            })]
        );
        // Fewer bytes than a marker after the pause, starting like one, that
        // finish the half frame: they continue it.
        let ffs = encode(b"{}", &[0xff; 10]);
        let cut = ffs.len() - 4;
        let mut d = Decoder::new();
        assert!(d.extend(&ffs[..cut]).is_empty());
        d.mark_resume();
        let got = frames(d.extend(&ffs[cut..]));
        assert_eq!(got.len(), 1);
        // Nothing pending: frames right after the pause are frames.
        let mut d = Decoder::new();
        d.mark_resume();
        assert_eq!(frames(d.extend(&whole)).len(), 1);
    }

    #[test]
    fn bad_sync_is_an_error_then_resync_finds_the_next() {
        let mut wire = b"\xff\xff\xff\xffrum-xxxx".to_vec();
        wire.extend(SYNC);
        let mut d = Decoder::new();
        let out = d.extend(&wire);
        assert_eq!(out[0], Err(FrameError::BadSync));
        assert_eq!(out[1], Ok(Item::Sync));
        assert_eq!(out.len(), 2);
    }
}
