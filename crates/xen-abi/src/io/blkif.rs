//! The PV block device protocol (`public/io/blkif.h`): requests and responses on a
//! [`BlkifSring`].
//!
//! A request moves sectors of 512 bytes between the disk and up to
//! [`BLKIF_MAX_SEGMENTS_PER_REQUEST`] granted pages; each segment names a grant and the first
//! and last sector (0 to 7) it covers within that page.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::grant_table::GrantRef;
use crate::io::ring::const_ring_size;

/// Read sectors into the segments.
pub const BLKIF_OP_READ: u8 = 0;
/// Write sectors from the segments.
pub const BLKIF_OP_WRITE: u8 = 1;
/// Write with a barrier (`feature-barrier`).
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
/// Flush the disk cache (`feature-flush-cache`).
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
/// Reserved (was used by a vendor extension).
pub const BLKIF_OP_RESERVED_1: u8 = 4;
/// Discard sectors (`feature-discard`; the request has the discard layout).
pub const BLKIF_OP_DISCARD: u8 = 5;
/// Indirect request (`feature-max-indirect-segments`; the indirect layout).
pub const BLKIF_OP_INDIRECT: u8 = 6;

/// Segments a direct request may carry.
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// Pages of segment descriptors an indirect request may name.
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Discard flag: secure erase (only if the backend offers `discard-secure`).
pub const BLKIF_DISCARD_SECURE: u8 = 1 << 0;

/// Response status: done.
pub const BLKIF_RSP_OKAY: i16 = 0;
/// Response status: failed.
pub const BLKIF_RSP_ERROR: i16 = -1;
/// Response status: the operation is not supported.
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;

/// Size of a sector in the protocol, whatever the disk's own sector size.
pub const BLKIF_SECTOR_SIZE: u64 = 512;

/// `struct blkif_request_segment`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BlkifRequestSegment {
    /// Grant of the data page.
    pub gref: GrantRef,
    /// First sector in the page (0 to 7).
    pub first_sect: u8,
    /// Last sector in the page (`first_sect` to 7).
    pub last_sect: u8,
    /// Padding.
    pub _pad0: u16,
}

impl BlkifRequestSegment {
    /// Bytes this segment covers, or `None` if its sectors are out of order or past the page.
    pub const fn byte_len(&self) -> Option<u64> {
        let sectors_per_page = crate::XEN_PAGE_SIZE as u64 / BLKIF_SECTOR_SIZE;
        if self.first_sect > self.last_sect || self.last_sect as u64 >= sectors_per_page {
            return None;
        }
        Some((self.last_sect - self.first_sect + 1) as u64 * BLKIF_SECTOR_SIZE)
    }
}

/// `struct blkif_request` (the direct read/write layout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BlkifRequest {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    /// Number of valid entries in `seg`.
    pub nr_segments: u8,
    /// Device handle (read/write only).
    pub handle: u16,
    /// Padding.
    pub _pad0: u32,
    /// The frontend's id, echoed in the response.
    pub id: u64,
    /// First sector on the disk (512-byte units).
    pub sector_number: u64,
    /// Data pages.
    pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

impl BlkifRequest {
    /// The valid segments, or `None` if `nr_segments` exceeds the array.
    pub fn segments(&self) -> Option<&[BlkifRequestSegment]> {
        self.seg.get(..self.nr_segments as usize)
    }
}

/// `struct blkif_response`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BlkifResponse {
    /// The request's id.
    pub id: u64,
    /// The request's operation.
    pub operation: u8,
    /// Padding.
    pub _pad0: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
    /// Padding.
    pub _pad1: u32,
}

raw_union!(
    /// One slot of the block ring: C `union blkif_sring_entry { req; rsp; }`.
    pub struct BlkifSringEntry, 112, 8
);

impl BlkifSringEntry {
    /// The slot read as a request.
    pub fn request(&self) -> BlkifRequest {
        self.read()
    }

    /// The slot read as a response.
    pub fn response(&self) -> BlkifResponse {
        self.read()
    }

    /// Stores a request in the slot.
    pub fn set_request(&mut self, req: &BlkifRequest) {
        self.write(req);
    }

    /// Stores a response in the slot (the rest of the slot is zeroed).
    pub fn set_response(&mut self, rsp: &BlkifResponse) {
        self.write(rsp);
    }
}

/// Entries of a one-page block ring (32).
pub const BLKIF_RING_SIZE: usize = const_ring_size(crate::XEN_PAGE_SIZE, core::mem::size_of::<BlkifSringEntry>());

define_sring!(
    /// `struct blkif_sring` of one page (`ring-page-order` 0).
    pub struct BlkifSring, BlkifSringEntry, BLKIF_RING_SIZE
);

assert_layout!(BlkifRequestSegment, 8, { gref: 0, first_sect: 4, last_sect: 5 });
assert_layout!(BlkifRequest, 112, { operation: 0, nr_segments: 1, handle: 2, id: 8, sector_number: 16, seg: 24 });
assert_layout!(BlkifResponse, 16, { id: 0, operation: 8, status: 10 });
assert_layout!(BlkifSringEntry, 112);
assert_layout!(BlkifSring, 64 + 32 * 112, { req_prod: 0, req_event: 4, rsp_prod: 8, rsp_event: 12, ring: 64 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_ring_holds_32_requests() {
        assert_eq!(BLKIF_RING_SIZE, 32);
        assert_eq!(BlkifSring::SIZE, 32);
        assert_eq!(BlkifSring::slot(33), 1);
        let ring = BlkifSring::new_shared();
        assert_eq!((ring.req_event, ring.rsp_event, ring.req_prod, ring.rsp_prod), (1, 1, 0, 0));
    }

    #[test]
    fn entry_holds_either_message() {
        let mut req = BlkifRequest {
            operation: BLKIF_OP_WRITE,
            nr_segments: 2,
            id: 77,
            sector_number: 2048,
            ..Default::default()
        };
        req.seg[0] = BlkifRequestSegment { gref: GrantRef(9), first_sect: 0, last_sect: 7, _pad0: 0 };
        req.seg[1] = BlkifRequestSegment { gref: GrantRef(10), first_sect: 2, last_sect: 3, _pad0: 0 };
        let mut slot = BlkifSringEntry::default();
        slot.set_request(&req);
        assert_eq!(slot.request(), req);
        let lens: std::vec::Vec<_> = slot.request().segments().unwrap().iter().map(|s| s.byte_len()).collect();
        assert_eq!(lens, [Some(4096), Some(1024)]);

        slot.set_response(&BlkifResponse {
            id: 77,
            operation: BLKIF_OP_WRITE,
            status: BLKIF_RSP_OKAY,
            ..Default::default()
        });
        assert_eq!(slot.response().id, 77);
        assert!(slot.0[16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn hostile_segments_are_rejected() {
        let req = BlkifRequest { nr_segments: 12, ..Default::default() };
        assert!(req.segments().is_none());
        let backwards = BlkifRequestSegment { first_sect: 5, last_sect: 4, ..Default::default() };
        assert_eq!(backwards.byte_len(), None);
        let past_page = BlkifRequestSegment { first_sect: 0, last_sect: 8, ..Default::default() };
        assert_eq!(past_page.byte_len(), None);
    }
}
