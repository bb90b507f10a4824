//! Decompressing a bzImage payload, bounded by the caller's size limit.
//!
//! Each format uses a pure-Rust `no_std` decoder: `lzma-rust2` for XZ (including the x86 BCJ
//! filter Debian uses) and legacy LZMA, `ruzstd` for zstd, `miniz_oxide` for gzip's deflate
//! stream (the gzip container is parsed here, with its CRC-32 and size checked), and
//! `lz4_flex`'s block decoder for the legacy LZ4 frame Linux writes (`lz4 -l`: the magic
//! 0x184C2102, then chunks of `[u32 LE compressed size][block]`, each decompressing to at most
//! 8 MiB). bzip2 and LZO have no decoder here and are reported as unsupported.
//!
//! The output never grows past `limit + 1` bytes (one more than allowed, so that an overrun is
//! seen rather than silently cut), and an LZMA dictionary or zstd window (which the decoders
//! allocate up front) may not exceed the limit rounded up to a power of two (or 8 MiB, if that
//! is more), so a hostile payload cannot make keel allocate without bound.
//! Allocation failures are reported, not aborted on. Data after the end of the compressed
//! stream is ignored, as Linux's and Xen's decompressors do.

use alloc::boxed::Box;
use alloc::vec::Vec;

use lzma_rust2::{Action, LzmaStream, Status, XzStream};
use miniz_oxide::inflate::core::{decompress as inflate, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
use ruzstd::io::Read as _;

use crate::{Compression, LoadError};

/// Output buffer growth step when nothing better is known.
const GROW_MIN: usize = 64 << 10;
/// Decoder windows (LZMA dictionaries, zstd windows) may be as large as the output limit
/// rounded up to a power of two, but at least this: small windows are always affordable, and
/// encoders use them whatever the data size.
const MIN_WINDOW_LIMIT: u64 = 8 << 20;
/// Headroom, beyond its dictionary, that an LZMA decoder may need for its state (KiB).
const LZMA_STATE_KIB: u64 = 1024;
/// zstd: decode about this much before draining into the output.
const ZSTD_BATCH: usize = 1 << 20;
/// The legacy LZ4 frame's magic number (little endian in the stream).
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Most a legacy LZ4 chunk decompresses to.
const LZ4_LEGACY_CHUNK: usize = 8 << 20;

/// Decompresses `stream` (without the bzImage size word). `expected` is the declared size,
/// used to allocate the output once; it is a hint, the limit is what is enforced.
pub(crate) fn decompress(
    compression: Compression,
    stream: &[u8],
    limit: usize,
    expected: usize,
) -> Result<Vec<u8>, LoadError> {
    let mut out = Output::new(limit, expected)?;
    match compression {
        Compression::Xz => xz(stream, &mut out)?,
        Compression::Lzma => lzma(stream, &mut out)?,
        Compression::Zstd => zstd(stream, &mut out)?,
        Compression::Gzip => gzip(stream, &mut out)?,
        Compression::Lz4 => lz4_legacy(stream, &mut out)?,
        Compression::None | Compression::Bzip2 | Compression::Lzo => {
            return Err(LoadError::UnsupportedCompression(compression));
        }
    }
    out.finish()
}

/// The decompressed bytes so far, in a buffer that grows on demand up to `limit + 1` bytes.
struct Output {
    buf: Vec<u8>,
    /// Bytes of `buf` holding output; the rest is zeroed spare room.
    filled: usize,
    limit: usize,
}

impl Output {
    fn new(limit: usize, expected: usize) -> Result<Self, LoadError> {
        let mut buf = Vec::new();
        buf.try_reserve_exact(expected.min(limit).saturating_add(1)).map_err(|_| LoadError::OutOfMemory)?;
        Ok(Self { buf, filled: 0, limit })
    }

    fn too_large(&self) -> LoadError {
        LoadError::TooLarge { limit: self.limit as u64 }
    }

    /// The largest the buffer may get.
    fn cap(&self) -> usize {
        self.limit.saturating_add(1)
    }

    /// Spare room after the output: at least `want` bytes, or all the limit leaves (at least
    /// one byte, else the output is already too large).
    fn spare(&mut self, want: usize) -> Result<&mut [u8], LoadError> {
        let cap = self.cap();
        if self.filled >= cap {
            return Err(self.too_large());
        }
        let target = self.filled + want.min(cap - self.filled);
        if self.buf.len() < target {
            let grown = self.buf.len().saturating_mul(2).max(self.buf.capacity()).max(GROW_MIN).min(cap);
            let new_len = target.max(grown);
            self.buf.try_reserve_exact(new_len - self.buf.len()).map_err(|_| LoadError::OutOfMemory)?;
            self.buf.resize(new_len, 0);
        }
        Ok(&mut self.buf[self.filled..])
    }

    /// Records that `n` more bytes of the spare room hold output.
    fn advance(&mut self, n: usize) {
        self.filled = self.filled.saturating_add(n).min(self.buf.len());
    }

    /// The output so far.
    fn written(&self) -> &[u8] {
        &self.buf[..self.filled]
    }

    fn finish(mut self) -> Result<Vec<u8>, LoadError> {
        if self.filled > self.limit {
            return Err(self.too_large());
        }
        self.buf.truncate(self.filled);
        Ok(self.buf)
    }
}

/// The largest decoder window accepted for output limit `limit`.
fn window_limit(limit: usize) -> u64 {
    (limit as u64).checked_next_power_of_two().unwrap_or(u64::MAX).max(MIN_WINDOW_LIMIT)
}

/// An LZMA decoder's memory limit for output limit `limit`, in KiB (`u32::MAX` would mean none).
fn lzma_mem_limit_kib(limit: usize) -> u32 {
    let kib = (window_limit(limit) / 1024).saturating_add(LZMA_STATE_KIB);
    u32::try_from(kib).unwrap_or(u32::MAX - 1).min(u32::MAX - 1)
}

/// Runs a `process()`-style stream decoder (XZ, LZMA) over the whole input.
fn drive(
    mut input: &[u8],
    out: &mut Output,
    truncated: &'static str,
    mut step: impl FnMut(&[u8], &mut [u8]) -> Result<(usize, usize, bool), LoadError>,
) -> Result<(), LoadError> {
    loop {
        let window = out.spare(GROW_MIN)?;
        let (consumed, produced, done) = step(input, window)?;
        input = input.get(consumed..).unwrap_or(&[]);
        out.advance(produced);
        if done {
            return Ok(());
        }
        if consumed == 0 && produced == 0 {
            return Err(LoadError::Decompress(truncated));
        }
    }
}

fn xz(stream: &[u8], out: &mut Output) -> Result<(), LoadError> {
    let mut decoder = XzStream::new_mem_limit(false, lzma_mem_limit_kib(out.limit));
    drive(stream, out, "xz: stream is truncated", |input, window| {
        match decoder.process(input, window, Action::Finish) {
            Ok(r) => Ok((r.bytes_consumed, r.bytes_produced, r.status == Status::StreamEnd)),
            Err(_) if decoder.memory_usage().is_some_and(|need| need > decoder.mem_limit()) => {
                Err(LoadError::Decompress("xz: dictionary is larger than the size limit allows"))
            }
            Err(_) => Err(LoadError::Decompress("xz: corrupt or unsupported stream")),
        }
    })
}

fn lzma(stream: &[u8], out: &mut Output) -> Result<(), LoadError> {
    let mut decoder = LzmaStream::new_mem_limit(lzma_mem_limit_kib(out.limit), None);
    drive(stream, out, "lzma: stream is truncated", |input, window| {
        match decoder.process(input, window, Action::Finish) {
            Ok(r) => Ok((r.bytes_consumed, r.bytes_produced, r.status == Status::StreamEnd)),
            Err(_) if decoder.memory_usage().is_some_and(|need| need > decoder.mem_limit()) => {
                Err(LoadError::Decompress("lzma: dictionary is larger than the size limit allows"))
            }
            Err(_) => Err(LoadError::Decompress("lzma: corrupt stream")),
        }
    })
}

fn zstd(mut input: &[u8], out: &mut Output) -> Result<(), LoadError> {
    let mut decoder = FrameDecoder::new();
    decoder.set_max_window_size(window_limit(out.limit));
    decoder.init(&mut input).map_err(|e| match e {
        ruzstd::decoding::errors::FrameDecoderError::WindowSizeTooBig { .. } => {
            LoadError::Decompress("zstd: window is larger than the size limit allows")
        }
        _ => LoadError::Decompress("zstd: bad frame header"),
    })?;
    loop {
        decoder
            .decode_blocks(&mut input, BlockDecodingStrategy::UptoBytes(ZSTD_BATCH))
            .map_err(|_| LoadError::Decompress("zstd: corrupt or truncated block"))?;
        while decoder.can_collect() > 0 {
            let want = decoder.can_collect();
            let window = out.spare(want)?;
            let n = decoder.read(window).map_err(|_| LoadError::Decompress("zstd: decoder failed"))?;
            if n == 0 {
                return Err(LoadError::Decompress("zstd: decoder made no progress"));
            }
            out.advance(n);
        }
        if decoder.is_finished() {
            break;
        }
    }
    match (decoder.get_checksum_from_data(), decoder.get_calculated_checksum()) {
        (Some(stored), Some(computed)) if stored != computed => Err(LoadError::Decompress("zstd: checksum mismatch")),
        _ => Ok(()),
    }
}

/// gzip header flags (RFC 1952).
const FHCRC: u8 = 1 << 1;
const FEXTRA: u8 = 1 << 2;
const FNAME: u8 = 1 << 3;
const FCOMMENT: u8 = 1 << 4;
const FRESERVED: u8 = 0xE0;

/// The deflate stream inside a gzip member: skips the header (RFC 1952 §2.3).
fn gzip_body(stream: &[u8]) -> Result<&[u8], LoadError> {
    let bad = LoadError::Decompress;
    let header = stream.get(..10).ok_or(bad("gzip: header is truncated"))?;
    if header[..2] != [0x1F, 0x8B] {
        return Err(bad("gzip: not a gzip member (old 1F 9E format?)"));
    }
    if header[2] != 8 {
        return Err(bad("gzip: compression method is not deflate"));
    }
    let flags = header[3];
    if flags & FRESERVED != 0 {
        return Err(bad("gzip: reserved header flags are set"));
    }
    let mut rest = &stream[10..];
    if flags & FEXTRA != 0 {
        let len = rest.get(..2).ok_or(bad("gzip: header is truncated"))?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        rest = rest.get(2 + len..).ok_or(bad("gzip: header is truncated"))?;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let nul = rest.iter().position(|&b| b == 0).ok_or(bad("gzip: header is truncated"))?;
            rest = &rest[nul + 1..];
        }
    }
    if flags & FHCRC != 0 {
        rest = rest.get(2..).ok_or(bad("gzip: header is truncated"))?;
    }
    Ok(rest)
}

fn gzip(stream: &[u8], out: &mut Output) -> Result<(), LoadError> {
    let body = gzip_body(stream)?;
    let mut state = Box::<DecompressorOxide>::default();
    let mut input = body;
    let mut consumed_total = 0usize;
    loop {
        out.spare(GROW_MIN)?;
        let at = out.filled;
        let (status, consumed, produced) =
            inflate(&mut state, input, &mut out.buf, at, inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF);
        input = input.get(consumed..).unwrap_or(&[]);
        consumed_total = consumed_total.saturating_add(consumed);
        out.advance(produced);
        match status {
            TINFLStatus::Done => break,
            TINFLStatus::HasMoreOutput if consumed != 0 || produced != 0 => {}
            TINFLStatus::HasMoreOutput => {
                // Full buffer, no progress: grow it (or fail at the limit).
                let room = out.buf.len() - out.filled + 1;
                out.spare(room)?;
            }
            TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
                return Err(LoadError::Decompress("gzip: deflate stream is truncated"));
            }
            _ => return Err(LoadError::Decompress("gzip: corrupt deflate stream")),
        }
    }
    let trailer = body
        .get(consumed_total..)
        .and_then(|t| t.get(..8))
        .ok_or(LoadError::Decompress("gzip: trailer is truncated"))?;
    let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let isize = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
    if crc32(out.written()) != crc {
        return Err(LoadError::Decompress("gzip: CRC-32 mismatch"));
    }
    if isize != out.filled as u32 {
        return Err(LoadError::Decompress("gzip: size in trailer does not match"));
    }
    Ok(())
}

fn lz4_legacy(stream: &[u8], out: &mut Output) -> Result<(), LoadError> {
    let bad = LoadError::Decompress;
    let mut input = match stream.split_first_chunk::<4>() {
        Some((magic, rest)) if u32::from_le_bytes(*magic) == LZ4_LEGACY_MAGIC => rest,
        _ => return Err(bad("lz4: not a legacy frame")),
    };
    while !input.is_empty() {
        let (size, rest) = input.split_first_chunk::<4>().ok_or(bad("lz4: chunk header is truncated"))?;
        let size = u32::from_le_bytes(*size);
        if size == LZ4_LEGACY_MAGIC {
            // Another legacy frame follows (concatenated archives).
            input = rest;
            continue;
        }
        let chunk = rest.get(..size as usize).ok_or(bad("lz4: chunk is truncated"))?;
        input = &rest[chunk.len()..];
        let window = out.spare(LZ4_LEGACY_CHUNK)?;
        let len = window.len().min(LZ4_LEGACY_CHUNK);
        match lz4_flex::block::decompress_into(chunk, &mut window[..len]) {
            Ok(n) => out.advance(n),
            Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) if len < LZ4_LEGACY_CHUNK => {
                return Err(out.too_large());
            }
            Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) => {
                return Err(bad("lz4: chunk decompresses to more than 8 MiB"));
            }
            Err(_) => return Err(bad("lz4: corrupt chunk")),
        }
    }
    Ok(())
}

/// CRC-32 (IEEE 802.3, reflected, as gzip uses), one table lookup per byte.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, &b| TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{compress, gzip_member, lz4_legacy_frame, ALL_SUPPORTED};
    use proptest::prelude::*;
    use std::vec;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: a slowly changing pattern with some noise.
        (0..len).map(|i| ((i / 7) as u8).wrapping_mul(31) ^ (i as u8 & 3)).collect()
    }

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
    }

    #[test]
    fn round_trip_every_format_and_size() {
        for len in [0, 1, 100, 70_000, 300_000] {
            let data = sample(len);
            for c in ALL_SUPPORTED {
                let got = decompress(c, &compress(c, &data), 1 << 20, len).unwrap_or_else(|e| panic!("{c} {len}: {e}"));
                assert_eq!(got, data, "{c} {len}");
                // The expected size is only a hint.
                assert_eq!(decompress(c, &compress(c, &data), 1 << 20, 0).unwrap(), data, "{c} {len}");
            }
        }
    }

    #[test]
    fn output_exactly_at_the_limit_is_accepted() {
        let data = sample(10_000);
        for c in ALL_SUPPORTED {
            let stream = compress(c, &data);
            assert_eq!(decompress(c, &stream, 10_000, 10_000).unwrap(), data, "{c}");
            assert_eq!(decompress(c, &stream, 9_999, 9_999), Err(LoadError::TooLarge { limit: 9_999 }), "{c}");
        }
    }

    #[test]
    fn truncated_streams_fail() {
        let data = sample(50_000);
        for c in ALL_SUPPORTED {
            let stream = compress(c, &data);
            for cut in [0, 1, stream.len() / 2, stream.len() - 1] {
                let r = decompress(c, &stream[..cut], 1 << 20, data.len());
                assert!(matches!(r, Err(LoadError::Decompress(_))), "{c} cut at {cut}: {r:?}");
            }
        }
    }

    #[test]
    fn gzip_header_fields_are_skipped_and_checked() {
        let data = sample(5000);
        let all_fields = gzip_member(&data, FEXTRA | FNAME | FCOMMENT | FHCRC);
        assert_eq!(decompress(Compression::Gzip, &all_fields, 1 << 20, 0).unwrap(), data);

        let mut reserved = all_fields.clone();
        reserved[3] |= 0x80;
        assert_eq!(
            decompress(Compression::Gzip, &reserved, 1 << 20, 0),
            Err(LoadError::Decompress("gzip: reserved header flags are set"))
        );
        let mut method = all_fields.clone();
        method[2] = 7;
        assert_eq!(
            decompress(Compression::Gzip, &method, 1 << 20, 0),
            Err(LoadError::Decompress("gzip: compression method is not deflate"))
        );
        let mut old = all_fields.clone();
        old[1] = 0x9E;
        assert!(matches!(decompress(Compression::Gzip, &old, 1 << 20, 0), Err(LoadError::Decompress(_))));

        let plain = gzip_member(&data, 0);
        let n = plain.len();
        let mut crc = plain.clone();
        crc[n - 8] ^= 1;
        assert_eq!(
            decompress(Compression::Gzip, &crc, 1 << 20, 0),
            Err(LoadError::Decompress("gzip: CRC-32 mismatch"))
        );
        let mut size = plain.clone();
        size[n - 4] ^= 1;
        assert_eq!(
            decompress(Compression::Gzip, &size, 1 << 20, 0),
            Err(LoadError::Decompress("gzip: size in trailer does not match"))
        );
        assert_eq!(
            decompress(Compression::Gzip, &plain[..n - 3], 1 << 20, 0),
            Err(LoadError::Decompress("gzip: trailer is truncated"))
        );
    }

    #[test]
    fn lz4_legacy_frame_details() {
        let data = sample(100_000);
        // Small chunks: the decoder must not assume 8 MiB ones.
        let frame = lz4_legacy_frame(&data, 7_000);
        assert_eq!(decompress(Compression::Lz4, &frame, 1 << 20, 0).unwrap(), data);

        // Two concatenated frames (the magic reappears where a chunk size would be).
        let mut two = frame.clone();
        two.extend_from_slice(&lz4_legacy_frame(&data, 50_000));
        let mut both = data.clone();
        both.extend_from_slice(&data);
        assert_eq!(decompress(Compression::Lz4, &two, 1 << 20, 0).unwrap(), both);

        // Trailing bytes that cannot be a chunk header.
        let mut tail = frame.clone();
        tail.extend_from_slice(&[1, 2]);
        assert_eq!(
            decompress(Compression::Lz4, &tail, 1 << 20, 0),
            Err(LoadError::Decompress("lz4: chunk header is truncated"))
        );
    }

    #[test]
    fn lz4_chunk_above_8_mib_is_rejected() {
        let data = vec![7u8; LZ4_LEGACY_CHUNK + 1];
        let frame = lz4_legacy_frame(&data, data.len());
        assert_eq!(
            decompress(Compression::Lz4, &frame, 64 << 20, 0),
            Err(LoadError::Decompress("lz4: chunk decompresses to more than 8 MiB"))
        );
    }

    #[test]
    fn decoder_memory_is_bounded_by_the_limit() {
        // A tiny payload declaring a huge dictionary/window must not be decoded with a small limit.
        let data = sample(1000);
        let xz = crate::testutil::xz_with_dict(&data, 64 << 20);
        assert_eq!(
            decompress(Compression::Xz, &xz, 1 << 20, 0),
            Err(LoadError::Decompress("xz: dictionary is larger than the size limit allows"))
        );
        assert_eq!(
            decompress(Compression::Xz, &xz, 32 << 20, 0),
            Err(LoadError::Decompress("xz: dictionary is larger than the size limit allows"))
        );
        assert_eq!(decompress(Compression::Xz, &xz, 64 << 20, 0).unwrap(), data);
        // zstd: a frame header declaring a 1 GiB window (exponent 20), then an empty last block.
        let zstd = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 20 << 3, 0x01, 0x00, 0x00];
        assert_eq!(
            decompress(Compression::Zstd, &zstd, 1 << 20, 0),
            Err(LoadError::Decompress("zstd: window is larger than the size limit allows"))
        );
        assert_eq!(decompress(Compression::Zstd, &zstd, 1 << 30, 0).unwrap(), b"");
        assert_eq!(window_limit(0), MIN_WINDOW_LIMIT);
        assert_eq!(window_limit((32 << 20) + 1), 64 << 20);
        assert_eq!(window_limit(usize::MAX), u64::MAX);
    }

    #[test]
    fn unsupported_formats() {
        for c in [Compression::Bzip2, Compression::Lzo, Compression::None] {
            assert_eq!(decompress(c, b"whatever", 1 << 20, 0), Err(LoadError::UnsupportedCompression(c)));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn corrupt_streams_never_panic_and_respect_the_limit(
            format in 0..ALL_SUPPORTED.len(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let c = ALL_SUPPORTED[format];
            let mut stream = compress(c, &sample(20_000));
            for (at, value) in flips {
                let i = at.index(stream.len());
                stream[i] ^= value;
            }
            let cut = cut.index(stream.len() + 1);
            if let Ok(out) = decompress(c, &stream[..cut], 30_000, 20_000) {
                prop_assert!(out.len() <= 30_000);
            }
        }

        #[test]
        fn random_bytes_never_panic(format in 0..ALL_SUPPORTED.len(), bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decompress(ALL_SUPPORTED[format], &bytes, 1 << 20, 0);
        }
    }
}
