//! The shared request/response ring of PV devices (`public/io/ring.h`).
//!
//! A shared ring is one or more granted pages: a 64-byte header with the producer indices and
//! the notification thresholds, then an array of entries, each a union of one request and one
//! response. The frontend produces requests and consumes responses, the backend the reverse.
//! Indices are free-running `u32`s; slot `i` is `i & (size - 1)`, where the size is the
//! largest power of two of entries that fits ([`const_ring_size`]).
//!
//! Notification: after publishing up to index `new` (from `old`), a producer notifies the
//! other side only if the other side's event threshold lies in `(old, new]`
//! ([`needs_notify`]). A consumer that goes idle sets its threshold to `cons + 1` and checks
//! again for work, so no wake-up is lost.

/// `RING_IDX`: a free-running ring index.
pub type RingIdx = u32;

/// Size of the shared-ring header; entries start at this offset.
pub const SRING_HEADER_SIZE: usize = 64;

/// `__CONST_RING_SIZE`: entries of `entry_size` bytes that a ring of `ring_bytes` holds after
/// the header, rounded down to a power of two (0 if none fit).
pub const fn const_ring_size(ring_bytes: usize, entry_size: usize) -> usize {
    if entry_size == 0 || ring_bytes <= SRING_HEADER_SIZE {
        return 0;
    }
    let fit = (ring_bytes - SRING_HEADER_SIZE) / entry_size;
    if fit == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - fit.leading_zeros())
    }
}

/// `RING_PUSH_*_AND_CHECK_NOTIFY`'s test: having moved the producer index from `old` to
/// `new`, must the producer notify a consumer whose threshold is `event`? True if `event` lies
/// in `(old, new]`, with wrapping arithmetic.
pub const fn needs_notify(old: RingIdx, new: RingIdx, event: RingIdx) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// Defines a one-page shared ring: the `ring.h` header fields, then `$entries` entries.
macro_rules! define_sring {
    ($(#[$meta:meta])* pub struct $name:ident, $entry:ty, $entries:expr) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq,
            zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, zerocopy::KnownLayout,
        )]
        #[repr(C)]
        pub struct $name {
            /// Frontend's request producer index.
            pub req_prod: $crate::io::ring::RingIdx,
            /// The backend wants a notification when `req_prod` passes this.
            pub req_event: $crate::io::ring::RingIdx,
            /// Backend's response producer index.
            pub rsp_prod: $crate::io::ring::RingIdx,
            /// The frontend wants a notification when `rsp_prod` passes this.
            pub rsp_event: $crate::io::ring::RingIdx,
            /// C union `pvt`: per-protocol private bytes (netif: `smartpoll_active`).
            pub pvt: [u8; 4],
            /// Padding to 64 bytes (C `__pad`).
            pub _pad: [u8; 44],
            /// The entries (C declares `ring[1]` and lets it run to the end of the page).
            pub ring: [$entry; $entries],
        }

        zeroed_default!($name);

        impl $name {
            /// Number of entries.
            pub const SIZE: usize = $entries;

            /// Slot of free-running index `idx`.
            pub const fn slot(idx: $crate::io::ring::RingIdx) -> usize {
                idx as usize & (Self::SIZE - 1)
            }

            /// A ring as the frontend initialises it (`SHARED_RING_INIT`): all indices 0, both
            /// thresholds 1.
            pub fn new_shared() -> Self {
                Self { req_event: 1, rsp_event: 1, ..Self::default() }
            }
        }

        const _: () = {
            assert!(core::mem::offset_of!($name, rsp_event) == 12);
            assert!(core::mem::offset_of!($name, ring) == $crate::io::ring::SRING_HEADER_SIZE);
            assert!(core::mem::size_of::<$name>() <= $crate::XEN_PAGE_SIZE);
            assert!($name::SIZE.is_power_of_two());
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ring_sizes_for_one_page() {
        assert_eq!(const_ring_size(4096, 112), 32); // blkif: 36 fit
        assert_eq!(const_ring_size(4096, 12), 256); // netif tx: 336 fit
        assert_eq!(const_ring_size(4096, 8), 256); // netif rx: 504 fit
        assert_eq!(const_ring_size(4096 * 4, 112), 128); // blkif, ring-page-order 2
        assert_eq!(const_ring_size(64, 8), 0);
        assert_eq!(const_ring_size(100, 0), 0);
        assert_eq!(const_ring_size(100, 64), 0);
    }

    #[test]
    fn notify_when_the_threshold_is_crossed() {
        assert!(needs_notify(0, 1, 1));
        assert!(needs_notify(0, 5, 3));
        assert!(!needs_notify(0, 5, 6));
        assert!(!needs_notify(3, 5, 3)); // already passed before this push
        assert!(!needs_notify(5, 5, 5)); // nothing pushed
        assert!(needs_notify(u32::MAX - 1, 2, 0)); // across the wrap
        assert!(!needs_notify(u32::MAX - 1, 2, 3));
    }

    proptest! {
        #[test]
        fn notify_iff_event_in_the_pushed_range(old in any::<u32>(), pushed in 0u32..1024, ahead in 0u32..2048) {
            let new = old.wrapping_add(pushed);
            let event = old.wrapping_add(ahead);
            prop_assert_eq!(needs_notify(old, new, event), ahead >= 1 && ahead <= pushed);
        }

        #[test]
        fn ring_size_is_the_largest_power_of_two_that_fits(bytes in 0usize..1 << 20, entry in 1usize..4096) {
            let n = const_ring_size(bytes, entry);
            let fit = bytes.saturating_sub(SRING_HEADER_SIZE) / entry;
            if fit == 0 {
                prop_assert_eq!(n, 0);
            } else {
                prop_assert!(n.is_power_of_two() && n <= fit && n * 2 > fit);
            }
        }
    }
}
