//! The shared grant frames and the atomic protocol on their entries.
//!
//! A granting guest writes its version-1 entries (`flags: u16, domid: u16, frame: u32`) while
//! keel reads them and sets or clears `GTF_reading`/`GTF_writing`, so keel never holds a plain
//! reference to an entry: a frame is 1024 `AtomicU32` words, each entry two of them. The first
//! word is `flags | domid << 16` (little-endian layout of the C struct), which lets keel check the
//! grantee and set the status bits in one compare-and-swap, exactly as Xen's `_set_status_v1`
//! does on its `union grant_combo`. The guest can change that word at any moment, so the swap is
//! retried a bounded number of times and then the operation fails: a hostile guest cannot make
//! keel spin.

use core::sync::atomic::{AtomicU32, Ordering};

use keel_mm::Gfn;
use xen_abi::grant_table::{
    GrantEntryV1, GRANT_ENTRIES_V1_PER_FRAME, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_SUB_PAGE,
    GTF_TYPE_MASK, GTF_WRITING,
};
use xen_abi::DomId;

use crate::{Access, GrantStatus};

/// 32-bit words in one 4 KiB shared frame.
pub const WORDS_PER_FRAME: usize = 1024;

/// A keel-allocated frame shared with the guest; the crate only touches it atomically.
pub trait SharedFrame {
    /// The frame's contents as 1024 little-endian 32-bit words.
    fn words(&self) -> &[AtomicU32; WORDS_PER_FRAME];
}

/// Gives the table new zeroed frames when it grows (keel allocates them from its allocator) and
/// takes them back.
pub trait FrameSource {
    /// The frames this source hands out.
    type Frame: SharedFrame;

    /// A new frame, all zeroes, or `None` if there is no memory.
    fn alloc_frame(&mut self) -> Option<Self::Frame>;

    /// Takes back a frame the table no longer uses (growth that failed half-way, or
    /// [`crate::GrantTable::destroy`]). The guest must no longer have it mapped.
    fn free_frame(&mut self, frame: Self::Frame);
}

/// How many compare-and-swap attempts Xen makes on an entry the guest keeps changing before it
/// gives up with `GNTST_general_error` (`_set_status_v1`: "retries++ == 4").
pub(crate) const SET_STATUS_ATTEMPTS: u32 = 5;

/// The two words of one version-1 entry.
#[derive(Clone, Copy)]
pub(crate) struct EntryWords<'a> {
    header: &'a AtomicU32,
    frame: &'a AtomicU32,
}

impl<'a> EntryWords<'a> {
    /// Entry `index` (below [`GRANT_ENTRIES_V1_PER_FRAME`]) of `frame`.
    pub(crate) fn new(frame: &'a [AtomicU32; WORDS_PER_FRAME], index: usize) -> Option<Self> {
        if index >= GRANT_ENTRIES_V1_PER_FRAME {
            return None;
        }
        Some(Self { header: frame.get(2 * index)?, frame: frame.get(2 * index + 1)? })
    }

    /// A snapshot of the entry (the two words are read one after the other).
    pub(crate) fn load(&self) -> GrantEntryV1 {
        let (flags, domid) = split(self.header.load(Ordering::Acquire));
        GrantEntryV1 { flags, domid, frame: self.frame.load(Ordering::Acquire) }
    }

    /// The granted frame as the guest has written it now.
    pub(crate) fn frame(&self) -> Gfn {
        Gfn::new(u64::from(self.frame.load(Ordering::Acquire)))
    }

    /// Xen's `_set_status_v1`: marks the entry in use for `access` by `grantee`.
    ///
    /// An entry that is not pinned yet must be `GTF_permit_access` for `grantee` (for a mapping,
    /// `GTF_sub_page` must also be clear: it is part of the type mask then); a writable use
    /// needs `GTF_readonly` clear whether pinned or not. On success `GTF_reading` is set, and
    /// for writable use `GTF_writing` too, in the same compare-and-swap as the checks.
    pub(crate) fn set_status(
        &self,
        pinned: bool,
        access: Access,
        for_mapping: bool,
        grantee: DomId,
    ) -> Result<(), GrantStatus> {
        let type_mask = if for_mapping { GTF_TYPE_MASK | GTF_SUB_PAGE } else { GTF_TYPE_MASK };
        let update = |current: u32| {
            let (flags, domid) = split(current);
            if !pinned && (flags & type_mask != GTF_PERMIT_ACCESS || domid != grantee) {
                return Err(GrantStatus::GeneralError);
            }
            let mut new_flags = flags | GTF_READING;
            if access == Access::Writable {
                if flags & GTF_READONLY != 0 {
                    // Xen: "Attempt to write-pin a r/o grant entry".
                    return Err(GrantStatus::GeneralError);
                }
                new_flags |= GTF_WRITING;
            }
            Ok(join(new_flags, domid))
        };
        bounded_update(self.header.load(Ordering::Acquire), update, |old, new| {
            self.header.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire).map(|_| ())
        })
    }

    /// Clears `flags` (a subset of `GTF_reading | GTF_writing`) and nothing else, as Xen's
    /// `gnttab_clear_flags` (`lock andw` on the flags half) does.
    pub(crate) fn clear_flags(&self, flags: u16) {
        self.header.fetch_and(!u32::from(flags), Ordering::AcqRel);
    }

    /// Overwrites the whole entry (for `GNTTABOP_swap_grant_ref`, which Xen does with plain
    /// stores while the guest may be writing too).
    pub(crate) fn store(&self, entry: GrantEntryV1) {
        self.frame.store(entry.frame, Ordering::Release);
        self.header.store(join(entry.flags, entry.domid), Ordering::Release);
    }
}

/// A compare-and-swap loop that gives up after [`SET_STATUS_ATTEMPTS`] tries: from the word
/// last seen (`current`), `update` computes the new word or refuses; `swap(old, new)` installs
/// it if the word is still `old`, else returns the word it found. The checks in `update` are
/// re-made on every word seen, so they hold for the word actually replaced.
fn bounded_update(
    mut current: u32,
    mut update: impl FnMut(u32) -> Result<u32, GrantStatus>,
    mut swap: impl FnMut(u32, u32) -> Result<(), u32>,
) -> Result<(), GrantStatus> {
    for _ in 0..SET_STATUS_ATTEMPTS {
        let new = update(current)?;
        match swap(current, new) {
            Ok(()) => return Ok(()),
            Err(seen) => current = seen,
        }
    }
    // Xen: "Shared grant entry is unstable".
    Err(GrantStatus::GeneralError)
}

/// `(flags, domid)` of a header word.
fn split(word: u32) -> (u16, DomId) {
    (word as u16, DomId((word >> 16) as u16))
}

/// The header word for `flags` and `domid`.
fn join(flags: u16, domid: DomId) -> u32 {
    u32::from(flags) | u32::from(domid.0) << 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestFrame;
    use xen_abi::grant_table::GTF_PWT;

    const ME: DomId = DomId(3);

    fn entry(frame: &TestFrame, i: usize) -> EntryWords<'_> {
        EntryWords::new(frame.words(), i).unwrap()
    }

    fn write(frame: &TestFrame, i: usize, flags: u16, domid: DomId, gfn: u32) {
        entry(frame, i).store(GrantEntryV1 { flags, domid, frame: gfn });
    }

    #[test]
    fn layout_is_the_c_structs() {
        let f = TestFrame::new();
        write(&f, 1, GTF_PERMIT_ACCESS | GTF_READONLY, DomId(0x1234), 0xabcd_ef01);
        let w = f.words();
        assert_eq!(w[2].load(Ordering::Relaxed), 0x1234_0005);
        assert_eq!(w[3].load(Ordering::Relaxed), 0xabcd_ef01);
        assert_eq!(entry(&f, 1).frame(), Gfn::new(0xabcd_ef01));
        assert_eq!(
            entry(&f, 1).load(),
            GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_READONLY, domid: DomId(0x1234), frame: 0xabcd_ef01 }
        );
        assert!(EntryWords::new(f.words(), 511).is_some());
        assert!(EntryWords::new(f.words(), 512).is_none());
    }

    #[test]
    fn set_status_checks_type_and_grantee_when_unpinned() {
        let f = TestFrame::new();
        let e = entry(&f, 0);
        for (flags, domid) in [
            (0, ME),
            (GTF_PERMIT_ACCESS, DomId(4)),
            (2, ME), // accept_transfer
            (3, ME), // transitive
        ] {
            write(&f, 0, flags, domid, 7);
            assert_eq!(e.set_status(false, Access::ReadOnly, true, ME), Err(GrantStatus::GeneralError));
            assert_eq!(e.load().flags, flags, "untouched on failure");
        }
        // Pinned: neither type nor grantee is checked any more (Xen trusts the active entry).
        write(&f, 0, 0, DomId(9), 7);
        assert_eq!(e.set_status(true, Access::ReadOnly, true, ME), Ok(()));
        assert_eq!(e.load().flags, GTF_READING);
    }

    #[test]
    fn sub_page_only_matters_for_mappings() {
        let f = TestFrame::new();
        let e = entry(&f, 0);
        write(&f, 0, GTF_PERMIT_ACCESS | GTF_SUB_PAGE, ME, 7);
        assert_eq!(e.set_status(false, Access::ReadOnly, true, ME), Err(GrantStatus::GeneralError));
        assert_eq!(e.set_status(false, Access::ReadOnly, false, ME), Ok(()));
    }

    #[test]
    fn set_status_sets_reading_and_writing() {
        let f = TestFrame::new();
        let e = entry(&f, 5);
        write(&f, 5, GTF_PERMIT_ACCESS | GTF_PWT, ME, 7);
        e.set_status(false, Access::ReadOnly, true, ME).unwrap();
        assert_eq!(e.load().flags, GTF_PERMIT_ACCESS | GTF_PWT | GTF_READING);
        e.set_status(true, Access::Writable, true, ME).unwrap();
        assert_eq!(e.load().flags, GTF_PERMIT_ACCESS | GTF_PWT | GTF_READING | GTF_WRITING);
        assert_eq!(e.load().domid, ME);
        e.clear_flags(GTF_WRITING);
        assert_eq!(e.load().flags, GTF_PERMIT_ACCESS | GTF_PWT | GTF_READING);
        e.clear_flags(GTF_READING);
        assert_eq!(e.load(), GrantEntryV1 { flags: GTF_PERMIT_ACCESS | GTF_PWT, domid: ME, frame: 7 });
    }

    #[test]
    fn the_swap_loop_gives_up_after_five_attempts() {
        // A guest that changes the word before every swap.
        let mut tries = 0;
        let r = bounded_update(0, Ok, |old, _| {
            tries += 1;
            Err(old + 1)
        });
        assert_eq!((r, tries), (Err(GrantStatus::GeneralError), 5));
        // Four changes, then the fifth swap goes through.
        let mut tries = 0;
        let mut seen = std::vec::Vec::new();
        let r = bounded_update(
            10,
            |w| {
                seen.push(w);
                Ok(w | 0x8)
            },
            |old, new| {
                tries += 1;
                if tries < 5 {
                    Err(old + 1)
                } else {
                    assert_eq!(new, old | 0x8);
                    Ok(())
                }
            },
        );
        assert_eq!((r, tries), (Ok(()), 5));
        assert_eq!(seen, [10, 11, 12, 13, 14], "each attempt re-checks the word it saw");
        // A word that fails the checks stops the loop at once.
        let mut tries = 0;
        let r = bounded_update(
            0,
            |w| if w == 2 { Err(GrantStatus::GeneralError) } else { Ok(w) },
            |old, _| {
                tries += 1;
                Err(old + 1)
            },
        );
        assert_eq!((r, tries), (Err(GrantStatus::GeneralError), 2));
    }

    #[test]
    fn writable_refused_on_readonly_entry_pinned_or_not() {
        let f = TestFrame::new();
        let e = entry(&f, 0);
        write(&f, 0, GTF_PERMIT_ACCESS | GTF_READONLY, ME, 7);
        assert_eq!(e.set_status(false, Access::Writable, true, ME), Err(GrantStatus::GeneralError));
        assert_eq!(e.set_status(true, Access::Writable, false, ME), Err(GrantStatus::GeneralError));
        assert_eq!(e.load().flags, GTF_PERMIT_ACCESS | GTF_READONLY);
        assert_eq!(e.set_status(false, Access::ReadOnly, false, ME), Ok(()));
    }
}
