//! Getting the kernel's ELF image out of a boot module: a bzImage is unwrapped (setup header,
//! payload, decompression), an ELF image is used as it is.
//!
//! A bzImage (Linux `Documentation/x86/boot.rst`) starts with real-mode setup code whose header
//! says where the protected-mode part starts (`(setup_sects + 1) * 512`, where 0 sectors means
//! 4) and, from boot protocol 2.08 on, where inside it the compressed `vmlinux` lies
//! (`payload_offset`, `payload_length`). The payload's last four bytes are the decompressed
//! size (little endian, appended by the kernel's `size_append`); they are not part of the
//! compressed stream. The decompressed data is `vmlinux.bin` followed by `vmlinux.relocs`; the
//! ELF parser ignores that trailing table. Xen's `xen/arch/x86/bzimage.c` does the same.

use alloc::borrow::Cow;

use crate::decompress::decompress;
use crate::elf::ELF_MAGIC;
use crate::{Compression, LoadError};

/// Offset of `setup_sects` (u8; 0 means 4).
const SETUP_SECTS: usize = 0x1F1;
/// Offset of the `"HdrS"` signature.
const HEADER_MAGIC_AT: usize = 0x202;
const HEADER_MAGIC: &[u8; 4] = b"HdrS";
/// Offset of the boot protocol version (u16).
const VERSION: usize = 0x206;
/// First protocol version with `payload_offset` / `payload_length`.
const MIN_VERSION: u16 = 0x0208;
/// Offset of `payload_offset` (u32, from the start of the protected-mode code).
const PAYLOAD_OFFSET: usize = 0x248;
/// Offset of `payload_length` (u32).
const PAYLOAD_LENGTH: usize = 0x24C;
/// Size of the trailing decompressed-size word.
const SIZE_WORD: usize = 4;

/// A parsed bzImage: where its payload is and how it is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BzImage<'a> {
    /// Boot protocol version from the setup header (0x020F is 2.15).
    pub version: u16,
    /// How the payload is compressed ([`Compression::None`]: it is the ELF image).
    pub compression: Compression,
    /// The compressed stream without the trailing size word; the whole payload if uncompressed.
    pub payload: &'a [u8],
    /// The decompressed size the payload's trailing word declares (`None` if uncompressed).
    pub decompressed_size: Option<u32>,
}

fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Identifies a payload's format by its magic number (the table in `xen-abi.md` §1.7).
fn identify(payload: &[u8]) -> Option<Compression> {
    const MAGICS: &[(&[u8], Compression)] = &[
        (ELF_MAGIC, Compression::None),
        (&[0x1F, 0x8B], Compression::Gzip),
        (&[0x1F, 0x9E], Compression::Gzip),
        (b"BZh", Compression::Bzip2),
        (&[0xFD, b'7', b'z', b'X', b'Z', 0x00], Compression::Xz),
        (&[0x5D, 0x00], Compression::Lzma),
        (&[0x89, b'L', b'Z', b'O'], Compression::Lzo),
        (&[0x02, 0x21, 0x4C, 0x18], Compression::Lz4),
        (&[0x28, 0xB5, 0x2F, 0xFD], Compression::Zstd),
    ];
    MAGICS.iter().find(|(magic, _)| payload.starts_with(magic)).map(|&(_, c)| c)
}

/// Parses a bzImage's setup header and locates its payload.
///
/// # Errors
/// [`LoadError::NotAKernel`] without the `HdrS` signature, [`LoadError::BadSetupHeader`] for a
/// protocol older than 2.08 or an impossible payload, [`LoadError::Truncated`] if the payload
/// runs past the end of the module, [`LoadError::UnknownCompression`] for an unknown magic.
pub fn parse_bzimage(module: &[u8]) -> Result<BzImage<'_>, LoadError> {
    if module.get(HEADER_MAGIC_AT..HEADER_MAGIC_AT + HEADER_MAGIC.len()) != Some(HEADER_MAGIC) {
        return Err(LoadError::NotAKernel);
    }
    let version = le16(module, VERSION).ok_or(LoadError::Truncated)?;
    if version < MIN_VERSION {
        return Err(LoadError::BadSetupHeader("boot protocol older than 2.08 has no payload fields"));
    }
    let (Some(offset), Some(length)) = (le32(module, PAYLOAD_OFFSET), le32(module, PAYLOAD_LENGTH)) else {
        return Err(LoadError::Truncated);
    };
    let setup_sects = match module.get(SETUP_SECTS) {
        Some(0) => 4,
        Some(&n) => u64::from(n),
        None => return Err(LoadError::Truncated),
    };
    let start = (setup_sects + 1) * 512 + u64::from(offset);
    let end = start + u64::from(length);
    if end > module.len() as u64 {
        return Err(LoadError::Truncated);
    }
    // Both fit in usize: they are at most the module's length.
    let payload = &module[start as usize..end as usize];
    let compression = identify(payload).ok_or(LoadError::UnknownCompression)?;
    if compression == Compression::None {
        return Ok(BzImage { version, compression, payload, decompressed_size: None });
    }
    let Some(stream_len) = payload.len().checked_sub(SIZE_WORD) else {
        return Err(LoadError::BadSetupHeader("payload too short for its size word"));
    };
    let (stream, size_word) = payload.split_at(stream_len);
    let decompressed_size = le32(size_word, 0);
    Ok(BzImage { version, compression, payload: stream, decompressed_size })
}

/// Turns a boot module into the kernel's ELF image: a bzImage is unwrapped and its payload
/// decompressed (the trailing size word must match, `vmlinux.relocs` stays at the end and is
/// ignored by [`parse_pvh_kernel`](crate::parse_pvh_kernel)); an ELF image is returned as it is.
///
/// `limit` is the largest image accepted, in bytes. Decompression never produces more than that
/// (nor lets a decoder allocate much more for its window), so a hostile module cannot exhaust
/// keel's heap.
///
/// # Errors
/// Everything [`parse_bzimage`] reports, [`LoadError::UnsupportedCompression`] for bzip2 and
/// LZO, [`LoadError::TooLarge`] past `limit`, [`LoadError::Decompress`] for a corrupt stream,
/// [`LoadError::SizeMismatch`] if the output disagrees with the size word,
/// [`LoadError::OutOfMemory`] if the output buffer cannot be allocated, and
/// [`LoadError::BadElf`] if the payload does not decompress to an ELF image.
pub fn kernel_elf(module: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, LoadError> {
    let too_large = LoadError::TooLarge { limit: limit as u64 };
    if module.starts_with(ELF_MAGIC) {
        return if module.len() <= limit { Ok(Cow::Borrowed(module)) } else { Err(too_large) };
    }
    let image = parse_bzimage(module)?;
    let Some(declared) = image.decompressed_size else {
        return if image.payload.len() <= limit { Ok(Cow::Borrowed(image.payload)) } else { Err(too_large) };
    };
    if declared as usize > limit {
        return Err(too_large);
    }
    let elf = decompress(image.compression, image.payload, limit, declared as usize)?;
    if elf.len() != declared as usize {
        return Err(LoadError::SizeMismatch { declared, actual: elf.len() as u64 });
    }
    if !elf.starts_with(ELF_MAGIC) {
        return Err(LoadError::BadElf("bzImage payload is not an ELF image"));
    }
    Ok(Cow::Owned(elf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{bzimage, compress, tiny_elf, ALL_SUPPORTED};
    use proptest::prelude::*;
    use std::vec::Vec;

    #[test]
    fn elf_is_returned_as_is() {
        let elf = tiny_elf();
        let out = kernel_elf(&elf, 1 << 20).unwrap();
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(&*out, &elf[..]);
        assert_eq!(kernel_elf(&elf, elf.len() - 1), Err(LoadError::TooLarge { limit: elf.len() as u64 - 1 }));
    }

    #[test]
    fn every_supported_format_round_trips() {
        let mut elf = tiny_elf();
        // Trailing "relocations", as in a real vmlinux.bin + vmlinux.relocs.
        elf.extend((0..5000u32).map(|i| (i * 7) as u8));
        for c in ALL_SUPPORTED {
            let module = bzimage(c, &compress(c, &elf), elf.len() as u32, 0);
            let parsed = parse_bzimage(&module).unwrap();
            assert_eq!(parsed.compression, c);
            assert_eq!(parsed.version, 0x020F);
            let out = kernel_elf(&module, 1 << 20).unwrap_or_else(|e| panic!("{c}: {e}"));
            assert_eq!(&*out, &elf[..], "{c}");
        }
    }

    #[test]
    fn uncompressed_payload_is_borrowed() {
        let elf = tiny_elf();
        let module = bzimage(Compression::None, &elf, 0, 0);
        let parsed = parse_bzimage(&module).unwrap();
        assert_eq!(parsed.decompressed_size, None);
        let out = kernel_elf(&module, 1 << 20).unwrap();
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(&*out, &elf[..]);
    }

    #[test]
    fn setup_sects_zero_means_four() {
        let elf = tiny_elf();
        let module = bzimage(Compression::None, &elf, 0, 0);
        let mut zero = Vec::new();
        zero.extend_from_slice(&module);
        // bzimage() writes setup_sects = 4 with the payload at 5 * 512; 0 must mean the same.
        assert_eq!(zero[SETUP_SECTS], 4);
        zero[SETUP_SECTS] = 0;
        assert_eq!(parse_bzimage(&zero).unwrap().payload, parse_bzimage(&module).unwrap().payload);
    }

    #[test]
    fn header_errors() {
        let elf = tiny_elf();
        let good = bzimage(Compression::None, &elf, 0, 0);
        assert_eq!(kernel_elf(&[0u8; 4096], 1 << 20), Err(LoadError::NotAKernel));
        assert_eq!(kernel_elf(&good[..0x204], 1 << 20), Err(LoadError::NotAKernel));
        assert_eq!(kernel_elf(&good[..0x207], 1 << 20), Err(LoadError::Truncated));
        assert_eq!(kernel_elf(&good[..0x24F], 1 << 20), Err(LoadError::Truncated));
        assert_eq!(kernel_elf(&good[..good.len() - 1], 1 << 20), Err(LoadError::Truncated));

        let mut old = good.clone();
        old[VERSION..VERSION + 2].copy_from_slice(&0x0207u16.to_le_bytes());
        assert!(matches!(kernel_elf(&old, 1 << 20), Err(LoadError::BadSetupHeader(_))));

        let mut unknown = good.clone();
        let payload = good.len() - elf.len();
        unknown[payload] = 0x42;
        unknown[payload + 1] = 0x42;
        assert_eq!(kernel_elf(&unknown, 1 << 20), Err(LoadError::UnknownCompression));

        // A compressed payload of fewer than 4 bytes has no room for its size word.
        let short = bzimage(Compression::None, &[0x1F, 0x8B, 0x08], 0, 0);
        assert!(matches!(kernel_elf(&short, 1 << 20), Err(LoadError::BadSetupHeader(_))));
    }

    #[test]
    fn unsupported_formats_are_named() {
        for (magic, c) in
            [(&b"BZh91AY&SY"[..], Compression::Bzip2), (&[0x89, b'L', b'Z', b'O', 0, 0][..], Compression::Lzo)]
        {
            let module = bzimage(c, magic, 1000, 0);
            assert_eq!(kernel_elf(&module, 1 << 20), Err(LoadError::UnsupportedCompression(c)));
        }
    }

    #[test]
    fn size_word_is_enforced() {
        let elf = tiny_elf();
        for c in ALL_SUPPORTED {
            let stream = compress(c, &elf);
            let wrong = bzimage(c, &stream, elf.len() as u32 + 1, 0);
            assert_eq!(
                kernel_elf(&wrong, 1 << 20),
                Err(LoadError::SizeMismatch { declared: elf.len() as u32 + 1, actual: elf.len() as u64 }),
                "{c}"
            );
            let huge = bzimage(c, &stream, 2 << 20, 0);
            assert_eq!(kernel_elf(&huge, 1 << 20), Err(LoadError::TooLarge { limit: 1 << 20 }), "{c}");
        }
    }

    #[test]
    fn limit_bounds_the_output_even_when_the_size_word_lies() {
        let big = std::vec![0xAAu8; 300_000];
        for c in ALL_SUPPORTED {
            let module = bzimage(c, &compress(c, &big), 1000, 0);
            assert_eq!(kernel_elf(&module, 100_000), Err(LoadError::TooLarge { limit: 100_000 }), "{c}");
        }
    }

    #[test]
    fn payload_must_be_an_elf() {
        let data = std::vec![0x55u8; 2000];
        for c in ALL_SUPPORTED {
            let module = bzimage(c, &compress(c, &data), data.len() as u32, 0);
            assert!(matches!(kernel_elf(&module, 1 << 20), Err(LoadError::BadElf(_))), "{c}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = kernel_elf(&bytes, 1 << 20);
        }

        #[test]
        fn damaged_bzimages_never_panic(
            format in 0..ALL_SUPPORTED.len(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let c = ALL_SUPPORTED[format];
            let elf = tiny_elf();
            let mut module = bzimage(c, &compress(c, &elf), elf.len() as u32, 0);
            for (at, value) in flips {
                let i = at.index(module.len());
                module[i] ^= value | 1;
            }
            if truncate {
                module.truncate(cut.index(module.len()));
            }
            match kernel_elf(&module, 1 << 20) {
                Ok(out) => prop_assert!(out.len() <= 1 << 20),
                Err(e) => { let _ = std::format!("{e}"); }
            }
        }
    }
}
