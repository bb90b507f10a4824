//! Disabling keel's multiboot(1) header, so that QEMU's `-kernel` boots it via PVH.
//!
//! QEMU's `-kernel` prefers a multiboot header when it finds one: a 4-byte-aligned magic
//! 0x1BADB002 in the first 8192 bytes whose header checksum is valid (magic + flags + checksum
//! == 0 mod 2^32). To test the PVH entry point we boot a copy of keel in which every such
//! header has its magic zeroed; nothing else changes.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The multiboot(1) header magic.
pub const MAGIC: u32 = 0x1BAD_B002;
/// The header must start within this many bytes of the file.
pub const SEARCH_LIMIT: usize = 8192;
/// magic, flags, checksum.
const HEADER_LEN: usize = 12;

fn le32(image: &[u8], at: usize) -> Option<u32> {
    let bytes = image.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Offsets of the valid multiboot(1) headers QEMU would consider, in file order.
pub fn find_headers(image: &[u8]) -> Vec<usize> {
    let end = image.len().min(SEARCH_LIMIT);
    (0..end.saturating_sub(HEADER_LEN - 1))
        .step_by(4)
        .filter(|&at| {
            let (Some(magic), Some(flags), Some(checksum)) =
                (le32(image, at), le32(image, at + 4), le32(image, at + 8))
            else {
                return false;
            };
            magic == MAGIC && magic.wrapping_add(flags).wrapping_add(checksum) == 0
        })
        .collect()
}

/// Zeroes the magic of every valid multiboot(1) header; returns their offsets, sorted.
/// Fails if there is none (the copy would still boot via multiboot, or not at all).
pub fn disable(image: &mut [u8]) -> Result<Vec<usize>> {
    let mut disabled = Vec::new();
    // Zeroing a magic can turn an overlapping candidate (whose flags field it was) into a valid
    // header, so repeat until none is left; each round zeroes at least one magic.
    loop {
        let headers = find_headers(image);
        if headers.is_empty() {
            break;
        }
        for &at in &headers {
            image[at..at + 4].fill(0);
        }
        disabled.extend(headers);
    }
    if disabled.is_empty() {
        bail!(
            "no multiboot(1) header (magic {MAGIC:#010x} with a valid checksum) in the first \
             {SEARCH_LIMIT} bytes"
        );
    }
    disabled.sort_unstable();
    Ok(disabled)
}

/// Writes a copy of `src` to `dst` with its multiboot(1) header disabled.
pub fn write_pvh_copy(src: &Path, dst: &Path) -> Result<()> {
    let mut image = fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
    disable(&mut image).with_context(|| format!("in {}", src.display()))?;
    fs::write(dst, &image).with_context(|| format!("cannot write {}", dst.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A valid header with `flags` at `at` in a zeroed image of `len` bytes.
    fn image_with_header(len: usize, at: usize, flags: u32) -> Vec<u8> {
        let mut image = vec![0u8; len];
        put_header(&mut image, at, flags, 0u32.wrapping_sub(MAGIC).wrapping_sub(flags));
        image
    }

    fn put_header(image: &mut [u8], at: usize, flags: u32, checksum: u32) {
        image[at..at + 4].copy_from_slice(&MAGIC.to_le_bytes());
        image[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        image[at + 8..at + 12].copy_from_slice(&checksum.to_le_bytes());
    }

    #[test]
    fn finds_and_disables_a_header() {
        let mut image = image_with_header(16384, 0x1000, 0x0001_0003);
        assert_eq!(find_headers(&image), [0x1000]);
        let before = image.clone();
        assert_eq!(disable(&mut image).unwrap(), [0x1000]);
        assert_eq!(&image[0x1000..0x1004], [0, 0, 0, 0]);
        // Only the magic changed.
        let changed: Vec<usize> = (0..image.len()).filter(|&i| image[i] != before[i]).collect();
        assert_eq!(changed, [0x1000, 0x1001, 0x1002, 0x1003]);
        assert!(find_headers(&image).is_empty());
        assert!(disable(&mut image).is_err());
    }

    #[test]
    fn header_must_start_within_the_search_limit() {
        // The last place a whole header fits below 8192 bytes.
        let last = SEARCH_LIMIT - HEADER_LEN;
        assert_eq!(last % 4, 0);
        assert_eq!(find_headers(&image_with_header(20000, last, 0)), [last]);
        assert!(find_headers(&image_with_header(20000, last + 4, 0)).is_empty());
        assert!(find_headers(&image_with_header(20000, 12288, 0)).is_empty());
    }

    #[test]
    fn bad_checksum_and_misalignment_are_ignored() {
        let mut image = vec![0u8; 8192];
        put_header(&mut image, 64, 3, 0x1234_5678);
        assert!(find_headers(&image).is_empty());
        let misaligned = image_with_header(8192, 66, 3);
        assert!(find_headers(&misaligned).is_empty());
        assert!(disable(&mut image).is_err());
    }

    #[test]
    fn every_valid_header_is_disabled() {
        let mut image = image_with_header(8192, 8, 0);
        put_header(&mut image, 4000, 2, 0u32.wrapping_sub(MAGIC).wrapping_sub(2));
        assert_eq!(disable(&mut image).unwrap(), [8, 4000]);
        assert!(find_headers(&image).is_empty());
    }

    #[test]
    fn headers_uncovered_by_patching_are_disabled_too() {
        // [MAGIC][MAGIC][-MAGIC][0]: only the header at 4 is valid, but once its magic is
        // zeroed the one at 0 (flags 0, checksum -MAGIC) becomes valid.
        let mut image = vec![0u8; 64];
        put_header(&mut image, 4, 0u32.wrapping_sub(MAGIC), 0);
        image[..4].copy_from_slice(&MAGIC.to_le_bytes());
        assert_eq!(find_headers(&image), [4]);
        assert_eq!(disable(&mut image).unwrap(), [0, 4]);
        assert!(find_headers(&image).is_empty());
    }

    #[test]
    fn tiny_images() {
        assert!(find_headers(&[]).is_empty());
        assert!(find_headers(&MAGIC.to_le_bytes()).is_empty());
        let exact = image_with_header(HEADER_LEN, 0, 0);
        assert_eq!(find_headers(&exact), [0]);
        assert!(find_headers(&exact[..HEADER_LEN - 1]).is_empty());
    }

    #[test]
    fn copies_a_file() {
        let dir = std::env::temp_dir().join(format!("xtask-mb1-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (src, dst) = (dir.join("keel"), dir.join("keel-pvh"));
        fs::write(&src, image_with_header(10000, 512, 0)).unwrap();
        write_pvh_copy(&src, &dst).unwrap();
        assert!(find_headers(&fs::read(&dst).unwrap()).is_empty());
        assert_eq!(find_headers(&fs::read(&src).unwrap()), [512]);
        fs::write(&src, [0u8; 100]).unwrap();
        assert!(write_pvh_copy(&src, &dst).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    proptest! {
        #[test]
        fn disabling_leaves_no_header_and_changes_only_magics(
            mut image in prop::collection::vec(any::<u8>(), 0..9000),
            at in 0usize..2100,
            flags in any::<u32>(),
        ) {
            let at = at * 4;
            if at + HEADER_LEN <= image.len() {
                put_header(&mut image, at, flags, 0u32.wrapping_sub(MAGIC).wrapping_sub(flags));
            }
            let before = image.clone();
            let found = find_headers(&image);
            match disable(&mut image) {
                Ok(offsets) => {
                    prop_assert!(found.iter().all(|o| offsets.contains(o)));
                    prop_assert!(find_headers(&image).is_empty());
                    for i in 0..image.len() {
                        if image[i] != before[i] {
                            prop_assert!(offsets.iter().any(|&o| (o..o + 4).contains(&i)));
                        }
                    }
                }
                Err(_) => {
                    prop_assert!(found.is_empty());
                    prop_assert_eq!(&image, &before);
                }
            }
        }
    }
}
