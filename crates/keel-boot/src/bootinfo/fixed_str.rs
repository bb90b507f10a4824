//! [`FixedStr`]: an inline, fixed-capacity UTF-8 string for data copied out of
//! the boot loader before keel has a heap.
//!
//! Boot-loader strings are untrusted bytes of any length, so the type never
//! grows, cuts only at character boundaries, replaces invalid UTF-8 with
//! U+FFFD, and remembers whether anything was cut so the caller can say so.

use core::fmt;

/// A string of at most `N` bytes stored inline.
#[derive(Clone)]
pub struct FixedStr<const N: usize> {
    buf: [u8; N],
    /// Invariant: `len <= N` and `buf[..len]` is valid UTF-8.
    len: usize,
    truncated: bool,
}

impl<const N: usize> FixedStr<N> {
    /// An empty string.
    pub const fn new() -> Self {
        Self { buf: [0; N], len: 0, truncated: false }
    }

    /// The stored text.
    pub fn as_str(&self) -> &str {
        // The invariant makes this infallible; "" is an unreachable fallback
        // that avoids both a panic and `unsafe`.
        core::str::from_utf8(self.buf.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }

    /// Length in bytes.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// True if no text is stored.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The capacity in bytes, `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// True if text was dropped because it did not fit.
    pub const fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// Empties the string and clears the truncation mark.
    pub fn clear(&mut self) {
        self.len = 0;
        self.truncated = false;
    }

    /// Appends as much of `s` as fits, cutting at a character boundary.
    /// Returns false (and marks the string truncated) if anything was cut.
    /// Once truncated, nothing more is appended, so the text never has gaps.
    pub fn push_str(&mut self, s: &str) -> bool {
        if self.truncated {
            return false;
        }
        let room = N - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            self.truncated = true;
        }
        !self.truncated
    }

    /// Replaces the contents with `bytes` decoded as UTF-8, each invalid
    /// sequence replaced by U+FFFD. Returns true if any byte was invalid.
    pub fn set_lossy(&mut self, bytes: &[u8]) -> bool {
        self.clear();
        let mut invalid = false;
        for chunk in bytes.utf8_chunks() {
            self.push_str(chunk.valid());
            if !chunk.invalid().is_empty() {
                invalid = true;
                self.push_str(char::REPLACEMENT_CHARACTER.encode_utf8(&mut [0; 4]));
            }
        }
        invalid
    }

    /// Marks the string as truncated (the source was longer than was read).
    pub(crate) fn mark_truncated(&mut self) {
        self.truncated = true;
    }
}

impl<const N: usize> Default for FixedStr<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> PartialEq for FixedStr<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str() && self.truncated == other.truncated
    }
}

impl<const N: usize> Eq for FixedStr<N> {}

impl<const N: usize> PartialEq<str> for FixedStr<N> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl<const N: usize> PartialEq<&str> for FixedStr<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<const N: usize> AsRef<str> for FixedStr<N> {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> fmt::Display for FixedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for FixedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)?;
        if self.truncated {
            f.write_str(" (truncated)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::format;

    #[test]
    fn push_and_truncate_at_char_boundary() {
        let mut s = FixedStr::<5>::new();
        assert!(s.is_empty());
        assert!(s.push_str("ab"));
        assert!(!s.push_str("cdé"));
        // 'é' is two bytes and only one byte was left.
        assert_eq!(s, "abcd");
        assert!(s.is_truncated());
        assert!(!s.push_str("e"));
        assert_eq!(s.as_str(), "abcd");
        assert_eq!(format!("{s:?}"), "\"abcd\" (truncated)");
        s.clear();
        assert!(!s.is_truncated() && s.is_empty());
    }

    #[test]
    fn lossy_replaces_invalid_bytes() {
        let mut s = FixedStr::<16>::new();
        assert!(s.set_lossy(b"a\xffb\xc3"));
        assert_eq!(s, "a\u{fffd}b\u{fffd}");
        assert!(!s.set_lossy("ok ü".as_bytes()));
        assert_eq!(s, "ok ü");
        assert_eq!(s.len(), 5);
        assert_eq!(s.capacity(), 16);
    }

    #[test]
    fn zero_capacity() {
        let mut s = FixedStr::<0>::new();
        assert!(s.push_str(""));
        assert!(!s.push_str("x"));
        assert_eq!(s, "");
    }

    proptest! {
        #[test]
        fn lossy_is_a_valid_prefix(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut s = FixedStr::<17>::new();
            s.set_lossy(&bytes);
            let full = std::string::String::from_utf8_lossy(&bytes);
            prop_assert!(full.starts_with(s.as_str()));
            prop_assert_eq!(s.is_truncated(), s.len() < full.len());
            prop_assert!(s.len() <= 17);
        }
    }
}
