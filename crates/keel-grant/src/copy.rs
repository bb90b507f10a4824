//! `GNTTABOP_copy`: the rules and the grant pins one copy needs.
//!
//! A copy has two ends, each either a grant of some domain (`GNTCOPY_source_gref` /
//! `GNTCOPY_dest_gref`) or a frame of the caller's own. keel runs one `gnttab_copy` element in
//! Xen 4.17's order (`gnttab_copy_one` and its helpers), stopping at the first failure, whose
//! status is the element's:
//!
//! 1. source end: [`check_copy_end`] (`GNTST_permission_denied`), then look its `domid` up,
//!    `DOMID_SELF` allowed (`GNTST_bad_domain`);
//! 2. destination end: the same;
//! 3. source: a grant is [`crate::GrantTable::acquire_copy`] with [`Access::ReadOnly`] on its
//!    domain's table; a frame is keel's own translation of the caller's gfn (`GNTST_bad_page`,
//!    `GNTST_eagain`);
//! 4. destination: the same with [`Access::Writable`] (a frame that cannot be made writable is
//!    `GNTST_general_error`);
//! 5. [`check_copy_range`] (`GNTST_bad_copy_arg`);
//! 6. the copy itself, then [`crate::GrantTable::release_copy`] for each grant acquired (also
//!    after a failure in steps 4 or 5).
//!
//! Xen keeps the pins of one element for the next if it names the same ends, which only saves
//! work; keel may release after each element. The pins count with mappings of the same grant
//! (Xen shares the counters), so a copy and a mapping by the same grantee coexist, and the
//! grant's `GTF_reading`/`GTF_writing` stay set while either is in flight.

use keel_mm::{Gfn, Pfn};
use xen_abi::grant_table::GnttabCopy;
use xen_abi::{DomId, GrantRef, XEN_PAGE_SIZE};

use crate::{Access, GrantStatus};

/// A grant pinned for one copy: the frame to copy from or to. Hand it back to
/// [`crate::GrantTable::release_copy`] on the granter's table when the copy is done.
///
/// Only this crate makes them, so a copy grant always stands for a pin that exists.
#[must_use = "the grant stays pinned until release_copy"]
#[derive(Debug, PartialEq, Eq)]
pub struct CopyGrant {
    granter: DomId,
    gref: GrantRef,
    access: Access,
    gfn: Gfn,
    mfn: Pfn,
}

impl CopyGrant {
    pub(crate) fn new(granter: DomId, gref: GrantRef, access: Access, gfn: Gfn, mfn: Pfn) -> Self {
        Self { granter, gref, access, gfn, mfn }
    }

    /// The granting domain (whose table releases it).
    pub fn granter(&self) -> DomId {
        self.granter
    }

    /// The grant.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }

    /// Read (source) or write (destination).
    pub fn access(&self) -> Access {
        self.access
    }

    /// The granter's frame.
    pub fn gfn(&self) -> Gfn {
        self.gfn
    }

    /// The host frame to copy from or to.
    pub fn mfn(&self) -> Pfn {
        self.mfn
    }
}

/// Xen's rule for an end named by frame rather than grant: only `DOMID_SELF` may be used, by
/// any caller, privileged or not (the caller's own numeric domid is refused too);
/// `GNTST_permission_denied` otherwise (`gnttab_copy_lock_domain`).
pub fn check_copy_end(domid: DomId, is_gref: bool) -> Result<(), GrantStatus> {
    if !is_gref && domid != DomId::SELF {
        return Err(GrantStatus::PermissionDenied);
    }
    Ok(())
}

/// Neither end may run past its page: `offset + len` at most 4096 for both, else
/// `GNTST_bad_copy_arg` (`gnttab_copy_buf`). A version-1 grant covers its whole page, so Xen's
/// further sub-page bounds check cannot fail here.
pub fn check_copy_range(op: &GnttabCopy) -> Result<(), GrantStatus> {
    let fits = |offset: u16| usize::from(offset) + usize::from(op.len) <= XEN_PAGE_SIZE;
    if fits(op.source.offset) && fits(op.dest.offset) {
        Ok(())
    } else {
        Err(GrantStatus::BadCopyArg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_abi::grant_table::GnttabCopyPtr;
    use xen_abi::XenPfn;

    #[test]
    fn frames_only_of_domid_self() {
        assert_eq!(check_copy_end(DomId::SELF, false), Ok(()));
        assert_eq!(check_copy_end(DomId(0), false), Err(GrantStatus::PermissionDenied));
        assert_eq!(check_copy_end(DomId(5), false), Err(GrantStatus::PermissionDenied));
        assert_eq!(check_copy_end(DomId(5), true), Ok(()));
        assert_eq!(check_copy_end(DomId::SELF, true), Ok(()));
    }

    fn op(src_off: u16, dst_off: u16, len: u16) -> GnttabCopy {
        GnttabCopy {
            source: GnttabCopyPtr::by_gref(GrantRef(1), DomId(1), src_off),
            dest: GnttabCopyPtr::by_gmfn(XenPfn(2), DomId::SELF, dst_off),
            len,
            ..Default::default()
        }
    }

    #[test]
    fn range_must_stay_in_the_page() {
        assert_eq!(check_copy_range(&op(0, 0, 4096)), Ok(()));
        assert_eq!(check_copy_range(&op(4095, 0, 1)), Ok(()));
        assert_eq!(check_copy_range(&op(0, 4096, 0)), Ok(()));
        assert_eq!(check_copy_range(&op(4096, 0, 1)), Err(GrantStatus::BadCopyArg));
        assert_eq!(check_copy_range(&op(1, 0, 4096)), Err(GrantStatus::BadCopyArg));
        assert_eq!(check_copy_range(&op(0, 2048, 2049)), Err(GrantStatus::BadCopyArg));
        // No u16 wrap-around.
        assert_eq!(check_copy_range(&op(u16::MAX, 0, 1)), Err(GrantStatus::BadCopyArg));
        assert_eq!(check_copy_range(&op(0, 0, u16::MAX)), Err(GrantStatus::BadCopyArg));
    }
}
