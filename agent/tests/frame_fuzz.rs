//! Fuzzes the frame decoder with proptest: arbitrary bytes, valid frames with
//! corruption, arbitrary split points. It never panics, and no single
//! allocation made while decoding exceeds the maximum frame size (measured
//! with a counting global allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use rum_agent::protocol::frame::{self, Decoder, Item, MAX_BUFFER, MAX_FRAME, MAX_HEADER, SYNC};

struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note(size: usize) {
    if MEASURING.try_with(|m| m.get()).unwrap_or(false) {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Feeds `wire` in the given chunk sizes; returns the items and the largest
/// allocation made meanwhile on this thread.
fn decode(
    wire: &[u8],
    chunks: &[usize],
    scanning: bool,
) -> (Vec<Result<Item, frame::FrameError>>, usize) {
    LARGEST.with(|l| l.set(0));
    let mut d = if scanning {
        Decoder::scanning()
    } else {
        Decoder::new()
    };
    let mut out = Vec::new();
    let mut rest = wire;
    let mut i = 0;
    MEASURING.with(|m| m.set(true));
    while !rest.is_empty() {
        let n = chunks
            .get(i % chunks.len().max(1))
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        i += 1;
        let (now, later) = rest.split_at(n);
        rest = later;
        for item in d.extend(now) {
            // Keep only the shape: decoded frames are themselves bounded.
            out.push(item);
        }
        assert!(
            d.capacity() <= MAX_BUFFER,
            "decoder buffer {}",
            d.capacity()
        );
        assert!(d.buffered() <= MAX_BUFFER);
    }
    MEASURING.with(|m| m.set(false));
    (out, LARGEST.with(|l| l.get()))
}

fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // A valid frame with a small header and some body.
        (1usize..200, 0usize..5000).prop_map(|(h, b)| frame::encode(&vec![b'{'; h], &vec![7; b])),
        // A sync marker.
        Just(SYNC.to_vec()),
        // Arbitrary bytes.
        proptest::collection::vec(any::<u8>(), 0..300),
        // A prefix that announces something huge or invalid.
        (any::<u32>(), any::<u32>()).prop_map(|(h, b)| {
            let mut v = h.to_be_bytes().to_vec();
            v.extend(b.to_be_bytes());
            v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_or_overallocate(
        wire in proptest::collection::vec(any::<u8>(), 0..20_000),
        chunks in proptest::collection::vec(1usize..5000, 1..8),
        scanning in any::<bool>(),
    ) {
        let (_, largest) = decode(&wire, &chunks, scanning);
        prop_assert!(largest <= MAX_BUFFER, "allocated {largest}");
    }

    #[test]
    fn mixed_streams_decode_every_intact_frame_after_a_sync(
        parts in proptest::collection::vec(frame_strategy(), 1..20),
        chunks in proptest::collection::vec(1usize..3000, 1..8),
    ) {
        let wire: Vec<u8> = parts.concat();
        let (items, largest) = decode(&wire, &chunks, true);
        prop_assert!(largest <= MAX_BUFFER, "allocated {largest}");
        for item in items.into_iter().flatten() {
            if let Item::Frame(f) = item {
                prop_assert!(!f.header.is_empty() && f.header.len() <= MAX_HEADER);
                prop_assert!(f.header.len() + f.body.len() <= MAX_FRAME);
            }
        }
    }

    #[test]
    fn valid_streams_round_trip_whatever_the_split(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..10),
        chunks in proptest::collection::vec(1usize..4000, 1..8),
    ) {
        let mut wire = SYNC.to_vec();
        for (i, b) in bodies.iter().enumerate() {
            wire.extend(frame::encode(format!("{{\"id\":{i}}}").as_bytes(), b));
        }
        let (items, _) = decode(&wire, &chunks, true);
        let frames: Vec<_> = items.into_iter().map(|r| r.unwrap()).collect();
        prop_assert_eq!(frames.len(), bodies.len() + 1);
        prop_assert_eq!(&frames[0], &Item::Sync);
        for (item, body) in frames[1..].iter().zip(&bodies) {
            let Item::Frame(f) = item else { panic!("not a frame") };
            prop_assert_eq!(&f.body, body);
        }
    }

    /// A pause anywhere in a valid stream (a late end of stream on a serial
    /// port): the same host's bytes after it decode as if there was none; a
    /// new host's sync and hello after it are decoded whatever was cut.
    #[test]
    fn a_pause_keeps_the_stream_or_yields_to_a_new_host(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..6),
        cut in any::<proptest::sample::Index>(),
        chunks in proptest::collection::vec(1usize..4000, 1..8),
        new_host in any::<bool>(),
    ) {
        let mut wire = SYNC.to_vec();
        for (i, b) in bodies.iter().enumerate() {
            wire.extend(frame::encode(format!("{{\"id\":{i}}}").as_bytes(), b));
        }
        let cut = cut.index(wire.len() + 1);
        let mut d = Decoder::scanning();
        let mut items: Vec<Item> = d.extend(&wire[..cut]).into_iter().map(|r| r.unwrap()).collect();
        d.mark_resume();
        let mut rest = if new_host {
            let mut w = SYNC.to_vec();
            w.extend(frame::encode(b"{\"hello\":1}", b""));
            w
        } else {
            wire[cut..].to_vec()
        };
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunks[i % chunks.len()].min(rest.len());
            i += 1;
            items.extend(d.extend(&rest[..n]).into_iter().map(|r| r.unwrap()));
            rest.drain(..n);
        }
        if new_host {
            let hello = Item::Frame(frame::Frame { header: b"{\"hello\":1}".to_vec(), body: vec![] });
            prop_assert_eq!(&items[items.len() - 2..], &[Item::Sync, hello][..]);
        } else {
            prop_assert_eq!(items.len(), bodies.len() + 1);
            for (item, body) in items[1..].iter().zip(&bodies) {
                let Item::Frame(f) = item else { panic!("not a frame") };
                prop_assert_eq!(&f.body, body);
            }
        }
        prop_assert_eq!(d.buffered(), 0);
    }
}

/// Lengths at and around the limits, announced but never sent in full:
/// the decoder must not reserve for more than a maximal frame.
#[test]
fn announced_lengths_at_the_limits() {
    for (h, b) in [
        (1u32, (MAX_FRAME - 1) as u32),
        (1, MAX_FRAME as u32),
        (MAX_HEADER as u32, (MAX_FRAME - MAX_HEADER) as u32),
        (MAX_HEADER as u32 + 1, 0),
        (u32::MAX - 1, u32::MAX),
        (0, 5),
    ] {
        let mut wire = h.to_be_bytes().to_vec();
        wire.extend(b.to_be_bytes());
        wire.extend(vec![0u8; 70_000]);
        let (_, largest) = decode(&wire, &[4096], false);
        assert!(largest <= MAX_BUFFER, "({h}, {b}): allocated {largest}");
        if h == 1 && b as usize == MAX_FRAME - 1 {
            // A legal maximal frame is announced: the buffer grows to hold it
            // (and this shows the measurement works).
            assert_eq!(largest, MAX_BUFFER);
        }
    }
}
