//! The frame table and the buddy frame allocator.
//!
//! keel keeps one 16-byte [`FrameInfo`] per 4 KiB host frame. Today it holds
//! the buddy allocator's state; later the same entry records which domain owns
//! the frame, its type and its reference counts, which is why the layout is
//! fixed here (a state/order byte pair, a 16-bit owner, two 32-bit link words
//! and a 32-bit count word).
//!
//! [`FrameAllocator`] is a binary buddy allocator over such a table with
//! orders `0..=MAX_ORDER` (4 KiB to 1 GiB). Blocks are naturally aligned in
//! absolute frame numbers, so an order-9 block is a real 2 MiB superpage and an
//! order-18 block a 1 GiB one, wherever the table starts. The free lists are
//! intrusive doubly linked lists threaded through the head entries (u32
//! indices relative to the table base), so the allocator needs no memory
//! beyond the table and `alloc`/`free` take O(`MAX_ORDER`) steps.
//!
//! Each block is recorded in O(1) entries: its head says free or allocated
//! and the order; every other frame of the block is marked as a tail and is
//! not touched again until a split or merge makes it a head. That is enough
//! for [`FrameAllocator::free`] to reject double frees, frees of tails and
//! frees with the wrong order without a full scan, and for
//! [`FrameAllocator::state`] to find a frame's block in O(`MAX_ORDER`).
//!
//! # Allocation policy
//!
//! The smallest order with a free block is used, and a larger block is split
//! with the upper halves going back to the free lists. Within an order the
//! block at the head of the list is taken. A block returning to a list goes to
//! the front if it lies below the current front and to the back otherwise.
//! After a donation in ascending address order, and for the remainders of
//! splits, this hands out the lowest-addressed block first, which keeps
//! allocation deterministic and packs early allocations low. It is a
//! preference, not a guarantee: after arbitrary frees the order can differ,
//! because strict address order would need O(n) sorted insertion or memory
//! beyond the table.

use core::fmt;

use crate::addr::{Pfn, MAX_ORDER};

const ORDERS: usize = MAX_ORDER as usize + 1;
/// "No entry" in a free-list link.
const NONE: u32 = u32::MAX;

/// The most frames a [`FrameAllocator`] manages: table indices must fit in a
/// `u32` with [`u32::MAX`] reserved as the list terminator (16 TiB of RAM).
pub const MAX_TABLE_FRAMES: usize = u32::MAX as usize;

// Stored states of a `FrameInfo`.
const ST_RESERVED: u8 = 0;
const ST_FREE: u8 = 1;
const ST_ALLOCATED: u8 = 2;
const ST_TAIL: u8 = 3;

/// Per-frame metadata. Exactly 16 bytes (compile-time assert). Holds the buddy state now,
/// and will hold ownership (domain id), type and reference counts later.
///
/// Every field is a plain integer, so any bit pattern (in particular all
/// zeroes) is a valid `FrameInfo`; [`FrameAllocator::new`] initialises the
/// whole table anyway.
#[repr(C)]
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct FrameInfo {
    /// One of the `ST_*` states.
    state: u8,
    /// Block order, meaningful on block heads.
    order: u8,
    /// Owning domain; 0 until ownership is tracked. Must be 0 on free frames.
    owner: u16,
    /// Free blocks: next head on the free list (table index or `NONE`).
    next: u32,
    /// Free blocks: previous head on the free list (table index or `NONE`).
    prev: u32,
    /// Reference/type count; 0 until tracked. Must be 0 on free frames.
    count: u32,
}

const _: () = assert!(core::mem::size_of::<FrameInfo>() == 16);

impl FrameInfo {
    /// A frame the allocator does not manage (the initial state of every entry).
    pub const RESERVED: Self = Self::with_state(ST_RESERVED, 0);
    const TAIL: Self = Self::with_state(ST_TAIL, 0);

    const fn with_state(state: u8, order: u8) -> Self {
        Self { state, order, owner: 0, next: NONE, prev: NONE, count: 0 }
    }
}

impl Default for FrameInfo {
    fn default() -> Self {
        Self::RESERVED
    }
}

/// What a frame is, as far as the allocator knows.
#[derive(Debug, Clone, Copy, Eq, PartialEq)]
pub enum FrameState {
    /// Never donated to the allocator.
    Reserved,
    /// First frame of a free block of `2^order` frames.
    Free {
        /// Block order.
        order: u8,
    },
    /// Any other frame of a free block.
    FreeTail,
    /// First frame of an allocated block of `2^order` frames.
    Allocated {
        /// Block order.
        order: u8,
    },
    /// Any other frame of an allocated block.
    AllocatedTail,
}

/// Why a [`FrameAllocator`] operation failed. A failed operation changes nothing.
#[derive(Debug, Clone, Copy, Eq, PartialEq)]
pub enum FrameError {
    /// No free block of the requested order or larger.
    OutOfMemory,
    /// Order above [`MAX_ORDER`].
    BadOrder,
    /// The frame or range is not inside the table (or the range is reversed).
    NotInTable,
    /// The frame is not aligned to the order.
    Unaligned,
    /// The frame is not the head of an allocated block (double free, a tail
    /// of a block, or a frame never handed out).
    NotAllocated,
    /// The block was allocated with a different order.
    WrongOrder,
    /// A donated frame was already donated.
    NotReserved,
    /// The block belongs to another owner than the one freeing it.
    WrongOwner,
}

/// Who an allocated block belongs to. Every allocated frame has exactly one owner; freeing
/// checks it, so one domain's frames can never be returned on another's behalf.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Owner {
    /// keel itself (page tables, VMCBs, heap, ...).
    Hypervisor,
    /// A domain, by id (below 0xFFFF).
    Domain(u16),
}

impl Owner {
    /// The frame table encoding: 0 for the hypervisor (and on free frames), domid + 1 else.
    fn encode(self) -> u16 {
        match self {
            Owner::Hypervisor => 0,
            Owner::Domain(d) => d.saturating_add(1),
        }
    }

    fn decode(v: u16) -> Self {
        match v {
            0 => Owner::Hypervisor,
            d => Owner::Domain(d - 1),
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OutOfMemory => "out of memory",
            Self::BadOrder => "order above MAX_ORDER",
            Self::NotInTable => "frame range not inside the frame table",
            Self::Unaligned => "frame not aligned to the block order",
            Self::NotAllocated => "frame is not the head of an allocated block",
            Self::WrongOrder => "block was allocated with a different order",
            Self::NotReserved => "frame was already donated",
            Self::WrongOwner => "block belongs to another owner",
        })
    }
}

/// Head, tail and length of one order's free list.
#[derive(Clone, Copy, Debug)]
struct FreeList {
    head: u32,
    tail: u32,
    len: usize,
}

const EMPTY_LIST: FreeList = FreeList { head: NONE, tail: NONE, len: 0 };

/// The buddy allocator over a frame table covering pfns [base, base + table.len()).
/// All frames start Reserved; add_free_range() donates RAM.
pub struct FrameAllocator<'t> {
    table: &'t mut [FrameInfo],
    base: u64,
    lists: [FreeList; ORDERS],
    free_frames: u64,
    total_frames: u64,
}

impl<'t> FrameAllocator<'t> {
    /// An allocator for pfns `[base, base + table.len())` with every frame
    /// Reserved. Initialises every entry. Entries beyond
    /// [`MAX_TABLE_FRAMES`], or beyond the largest frame number, are not used.
    pub fn new(table: &'t mut [FrameInfo], base: Pfn) -> Self {
        let room = usize::try_from(u64::MAX - base.as_u64()).unwrap_or(usize::MAX);
        let len = table.len().min(MAX_TABLE_FRAMES).min(room);
        let table = &mut table[..len];
        table.fill(FrameInfo::RESERVED);
        Self { table, base: base.as_u64(), lists: [EMPTY_LIST; ORDERS], free_frames: 0, total_frames: 0 }
    }

    /// Bytes of frame table needed for `frames` frames.
    pub fn table_bytes(frames: u64) -> u64 {
        frames.saturating_mul(core::mem::size_of::<FrameInfo>() as u64)
    }

    /// First frame the table covers.
    pub fn base(&self) -> Pfn {
        Pfn::new(self.base)
    }

    /// One past the last frame the table covers.
    pub fn end(&self) -> Pfn {
        Pfn::new(self.base + self.table.len() as u64)
    }

    /// Donate [start, end) (page-aligned, must be Reserved and inside the table, else Err).
    /// Splits into maximal naturally-aligned blocks and coalesces with free neighbours.
    ///
    /// An empty range is a no-op. Takes O(end - start) steps.
    pub fn add_free_range(&mut self, start: Pfn, end: Pfn) -> Result<(), FrameError> {
        if start > end {
            return Err(FrameError::NotInTable);
        }
        if start == end {
            return Ok(());
        }
        let first = self.index(start).ok_or(FrameError::NotInTable)?;
        let frames = end.as_u64() - start.as_u64();
        if frames > (self.table.len() - first) as u64 {
            return Err(FrameError::NotInTable);
        }
        let last = first + frames as usize;
        if self.table[first..last].iter().any(|f| f.state != ST_RESERVED) {
            return Err(FrameError::NotReserved);
        }
        let mut i = first;
        while i < last {
            let align = self.pfn_of(i).trailing_zeros().min(u32::from(MAX_ORDER));
            let order = align.min((last - i).ilog2()) as u8;
            let size = 1usize << order;
            self.table[i + 1..i + size].fill(FrameInfo::TAIL);
            self.free_frames += size as u64;
            self.total_frames += size as u64;
            self.release(i, order);
            i += size;
        }
        Ok(())
    }

    /// Allocates a naturally aligned block of `2^order` frames and returns
    /// its first frame. See the module documentation for the policy.
    /// `Err(OutOfMemory)` on exhaustion, `Err(BadOrder)` above [`MAX_ORDER`].
    pub fn alloc(&mut self, order: u8) -> Result<Pfn, FrameError> {
        self.alloc_owned(order, Owner::Hypervisor)
    }

    /// Allocate a block of 2^order frames for `owner`.
    pub fn alloc_owned(&mut self, order: u8, owner: Owner) -> Result<Pfn, FrameError> {
        if order > MAX_ORDER {
            return Err(FrameError::BadOrder);
        }
        let mut o = (order..=MAX_ORDER).find(|&o| self.lists[usize::from(o)].len > 0).ok_or(FrameError::OutOfMemory)?;
        let idx = self.lists[usize::from(o)].head as usize;
        self.unlink(idx);
        while o > order {
            o -= 1;
            self.push(idx + (1usize << o), o);
        }
        self.table[idx] = FrameInfo::with_state(ST_ALLOCATED, order);
        self.table[idx].owner = owner.encode();
        self.free_frames -= 1u64 << order;
        Ok(Pfn::new(self.pfn_of(idx)))
    }

    /// Free a block previously returned by alloc with the same order. Double frees, wrong
    /// order, unaligned or foreign pfns return Err(..) and change nothing.
    ///
    /// The block is merged with its buddy as long as the buddy is free.
    pub fn free(&mut self, pfn: Pfn, order: u8) -> Result<(), FrameError> {
        self.free_owned(pfn, order, Owner::Hypervisor)
    }

    /// Split `owner`'s allocated block of 2^order frames at `pfn` into 2^(order - into)
    /// allocated blocks of 2^into frames, each with the same owner (e.g. when part of a 2 MiB
    /// guest mapping is to be freed on its own). Nothing changes on error.
    pub fn split_block(&mut self, pfn: Pfn, order: u8, into: u8, owner: Owner) -> Result<(), FrameError> {
        if order > MAX_ORDER || into > order {
            return Err(FrameError::BadOrder);
        }
        let idx = self.index(pfn).ok_or(FrameError::NotInTable)?;
        if !pfn.is_aligned(order) {
            return Err(FrameError::Unaligned);
        }
        let f = self.table[idx];
        if f.state != ST_ALLOCATED {
            return Err(FrameError::NotAllocated);
        }
        if f.order != order {
            return Err(FrameError::WrongOrder);
        }
        if f.owner != owner.encode() {
            return Err(FrameError::WrongOwner);
        }
        for k in 0..(1usize << (order - into)) {
            let i = idx + (k << into);
            self.table[i] = FrameInfo::with_state(ST_ALLOCATED, into);
            self.table[i].owner = owner.encode();
        }
        Ok(())
    }

    /// The owner of the allocated block whose head is `pfn`.
    pub fn owner(&self, pfn: Pfn) -> Option<Owner> {
        let f = self.table[self.index(pfn)?];
        (f.state == ST_ALLOCATED).then(|| Owner::decode(f.owner))
    }

    /// Free `owner`'s block at `pfn` (see [`FrameAllocator::free`]); a block of another owner
    /// is refused with [`FrameError::WrongOwner`] and nothing changes.
    pub fn free_owned(&mut self, pfn: Pfn, order: u8, owner: Owner) -> Result<(), FrameError> {
        if order > MAX_ORDER {
            return Err(FrameError::BadOrder);
        }
        let idx = self.index(pfn).ok_or(FrameError::NotInTable)?;
        if !pfn.is_aligned(order) {
            return Err(FrameError::Unaligned);
        }
        let f = self.table[idx];
        if f.state != ST_ALLOCATED {
            return Err(FrameError::NotAllocated);
        }
        if f.order != order {
            return Err(FrameError::WrongOrder);
        }
        if f.owner != owner.encode() {
            return Err(FrameError::WrongOwner);
        }
        self.table[idx].owner = 0;
        self.free_frames += 1u64 << order;
        self.release(idx, order);
        Ok(())
    }

    /// Frames currently free.
    pub fn free_frames(&self) -> u64 {
        self.free_frames
    }

    /// Frames ever donated (free plus allocated).
    pub fn total_frames(&self) -> u64 {
        self.total_frames
    }

    /// Number of free blocks of `order` (0 for orders above [`MAX_ORDER`]).
    pub fn free_blocks(&self, order: u8) -> usize {
        self.lists.get(usize::from(order)).map_or(0, |l| l.len)
    }

    /// The state of `pfn`, or `None` if it is outside the table.
    /// O(1) for heads and reserved frames, O(`MAX_ORDER`) for tails.
    pub fn state(&self, pfn: Pfn) -> Option<FrameState> {
        let idx = self.index(pfn)?;
        let f = self.table[idx];
        match f.state {
            ST_FREE => Some(FrameState::Free { order: f.order }),
            ST_ALLOCATED => Some(FrameState::Allocated { order: f.order }),
            ST_TAIL => {
                // The block's head is the first head met when aligning down
                // to ever larger orders: everything between is a tail.
                (1..=MAX_ORDER).find_map(|o| {
                    let head = self.index(Pfn::new(pfn.as_u64() & !((1u64 << o) - 1)))?;
                    let h = self.table[head];
                    let covers = idx < head + (1usize << h.order);
                    match h.state {
                        ST_FREE if covers => Some(FrameState::FreeTail),
                        ST_ALLOCATED if covers => Some(FrameState::AllocatedTail),
                        _ => None,
                    }
                })
            }
            _ => Some(FrameState::Reserved),
        }
    }

    /// Debug check of every invariant (lists consistent, no overlap, counts match);
    /// used by the tests, O(n).
    ///
    /// Checked: the table is a sequence of reserved frames and naturally
    /// aligned blocks whose non-head frames are all tails; no two free buddies
    /// of the same order coexist (coalescing is complete); free blocks have no
    /// owner or references; each free list is a well-linked list of exactly
    /// the free heads of its order; the free and donated frame counts match.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let len = self.table.len();
        let mut free_heads = [0usize; ORDERS];
        let (mut free, mut donated) = (0u64, 0u64);
        let mut i = 0;
        while i < len {
            let f = self.table[i];
            match f.state {
                ST_RESERVED => {
                    i += 1;
                    continue;
                }
                ST_FREE | ST_ALLOCATED => {}
                ST_TAIL => return Err("tail frame outside any block"),
                _ => return Err("invalid frame state"),
            }
            if f.order > MAX_ORDER {
                return Err("block order above MAX_ORDER");
            }
            if !Pfn::new(self.pfn_of(i)).is_aligned(f.order) {
                return Err("block not naturally aligned");
            }
            let size = 1usize << f.order;
            if size > len - i {
                return Err("block runs past the end of the table");
            }
            if self.table[i + 1..i + size].iter().any(|t| t.state != ST_TAIL) {
                return Err("block contains a frame that is not a tail");
            }
            donated += size as u64;
            if f.state == ST_FREE {
                if f.owner != 0 || f.count != 0 {
                    return Err("free block has an owner or references");
                }
                free_heads[usize::from(f.order)] += 1;
                free += size as u64;
                if f.order < MAX_ORDER {
                    let buddy = Pfn::new(self.pfn_of(i) ^ (1u64 << f.order));
                    if self
                        .index(buddy)
                        .is_some_and(|b| self.table[b].state == ST_FREE && self.table[b].order == f.order)
                    {
                        return Err("free buddies not coalesced");
                    }
                }
            }
            i += size;
        }
        for (order, list) in self.lists.iter().enumerate() {
            let (mut prev, mut cur, mut n) = (NONE, list.head, 0usize);
            while cur != NONE {
                if n >= len {
                    return Err("free list has a cycle");
                }
                let Some(f) = self.table.get(cur as usize) else {
                    return Err("free list link outside the table");
                };
                if f.state != ST_FREE || usize::from(f.order) != order {
                    return Err("free list holds a block that is not free at its order");
                }
                if f.prev != prev {
                    return Err("free list back link broken");
                }
                (prev, cur, n) = (cur, f.next, n + 1);
            }
            if list.tail != prev {
                return Err("free list tail is wrong");
            }
            if n != list.len {
                return Err("free list length is wrong");
            }
            if n != free_heads[order] {
                return Err("a free block is missing from its list");
            }
        }
        if free != self.free_frames {
            return Err("free frame count is wrong");
        }
        if donated != self.total_frames {
            return Err("donated frame count is wrong");
        }
        Ok(())
    }

    /// Table index of `pfn`, if it is inside the table.
    fn index(&self, pfn: Pfn) -> Option<usize> {
        let i = pfn.as_u64().checked_sub(self.base)?;
        (i < self.table.len() as u64).then_some(i as usize)
    }

    /// Frame number of table index `idx` (always representable, see `new`).
    fn pfn_of(&self, idx: usize) -> u64 {
        self.base + idx as u64
    }

    /// Makes `idx` the head of a free block of `order` and puts it on its
    /// list: at the front if it is below the current front, else at the back.
    fn push(&mut self, idx: usize, order: u8) {
        let list = &mut self.lists[usize::from(order)];
        let i = idx as u32;
        let mut entry = FrameInfo::with_state(ST_FREE, order);
        if list.head == NONE {
            (list.head, list.tail) = (i, i);
        } else if i < list.head {
            entry.next = list.head;
            self.table[list.head as usize].prev = i;
            list.head = i;
        } else {
            entry.prev = list.tail;
            self.table[list.tail as usize].next = i;
            list.tail = i;
        }
        list.len += 1;
        self.table[idx] = entry;
    }

    /// Takes the free block headed by `idx` off its list. The caller
    /// rewrites the entry.
    fn unlink(&mut self, idx: usize) {
        let f = self.table[idx];
        let list = &mut self.lists[usize::from(f.order)];
        match f.prev {
            NONE => list.head = f.next,
            p => self.table[p as usize].next = f.next,
        }
        match f.next {
            NONE => list.tail = f.prev,
            n => self.table[n as usize].prev = f.prev,
        }
        list.len -= 1;
    }

    /// Returns the block of `order` at `idx` (whose non-head frames are
    /// already tails) to the free lists, merging it with free buddies.
    fn release(&mut self, mut idx: usize, mut order: u8) {
        while order < MAX_ORDER {
            let buddy = Pfn::new(self.pfn_of(idx) ^ (1u64 << order));
            let Some(b) = self.index(buddy) else { break };
            let bf = self.table[b];
            if bf.state != ST_FREE || bf.order != order {
                break;
            }
            self.unlink(b);
            self.table[idx.max(b)] = FrameInfo::TAIL;
            idx = idx.min(b);
            order += 1;
        }
        self.push(idx, order);
    }
}

impl fmt::Debug for FrameAllocator<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let blocks: [usize; ORDERS] = core::array::from_fn(|o| self.lists[o].len);
        f.debug_struct("FrameAllocator")
            .field("base", &self.base())
            .field("end", &self.end())
            .field("free_frames", &self.free_frames)
            .field("total_frames", &self.total_frames)
            .field("free_blocks", &blocks)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    use FrameError::*;

    fn p(x: u64) -> Pfn {
        Pfn::new(x)
    }

    fn table(frames: usize) -> Vec<FrameInfo> {
        vec![FrameInfo::RESERVED; frames]
    }

    /// Free blocks as (pfn, order), in address order.
    fn layout(fa: &FrameAllocator<'_>) -> Vec<(u64, u8)> {
        let mut out = Vec::new();
        let mut pfn = fa.base().as_u64();
        while pfn < fa.end().as_u64() {
            match fa.state(p(pfn)) {
                Some(FrameState::Free { order }) => {
                    out.push((pfn, order));
                    pfn += 1 << order;
                }
                Some(FrameState::Allocated { order }) => pfn += 1 << order,
                _ => pfn += 1,
            }
        }
        out
    }

    fn ok(fa: &FrameAllocator<'_>) {
        assert_eq!(fa.check_invariants(), Ok(()));
    }

    #[test]
    fn every_block_has_one_owner_and_only_it_frees_the_block() {
        let mut t = table(64);
        let mut fa = FrameAllocator::new(&mut t, p(0));
        fa.add_free_range(p(0), p(64)).unwrap();
        let a = fa.alloc_owned(2, Owner::Domain(0)).unwrap();
        let b = fa.alloc_owned(0, Owner::Domain(7)).unwrap();
        let k = fa.alloc(0).unwrap();
        assert_eq!(fa.owner(a), Some(Owner::Domain(0)));
        assert_eq!(fa.owner(b), Some(Owner::Domain(7)));
        assert_eq!(fa.owner(k), Some(Owner::Hypervisor));
        let before = fa.free_frames();
        assert_eq!(fa.free_owned(a, 2, Owner::Domain(7)), Err(WrongOwner));
        assert_eq!(fa.free(a, 2), Err(WrongOwner));
        assert_eq!(fa.free_owned(k, 0, Owner::Domain(0)), Err(WrongOwner));
        assert_eq!(fa.free_frames(), before);
        ok(&fa);
        fa.free_owned(a, 2, Owner::Domain(0)).unwrap();
        fa.free_owned(b, 0, Owner::Domain(7)).unwrap();
        fa.free(k, 0).unwrap();
        assert_eq!(fa.owner(a), None);
        assert_eq!(fa.free_frames(), 64);
        ok(&fa);
    }

    #[test]
    fn split_blocks_free_piece_by_piece_and_coalesce_back() {
        let mut t = table(1024);
        let mut fa = FrameAllocator::new(&mut t, p(0));
        fa.add_free_range(p(0), p(1024)).unwrap();
        let initial = layout(&fa);
        let d = Owner::Domain(3);
        let big = fa.alloc_owned(9, d).unwrap();
        assert_eq!(fa.split_block(big, 9, 0, Owner::Domain(4)), Err(WrongOwner));
        assert_eq!(fa.split_block(big, 8, 0, d), Err(WrongOrder));
        assert_eq!(fa.split_block(big, 9, 10, d), Err(BadOrder));
        fa.split_block(big, 9, 0, d).unwrap();
        ok(&fa);
        assert_eq!(fa.free_owned(big, 9, d), Err(WrongOrder));
        for i in 0..512 {
            assert_eq!(fa.owner(p(big.as_u64() + i)), Some(d));
        }
        // Free them in a scrambled order; the buddy system coalesces them all back.
        for i in (0..512).rev().step_by(2).chain((0..512).step_by(2)) {
            fa.free_owned(p(big.as_u64() + i), 0, d).unwrap();
        }
        ok(&fa);
        assert_eq!(layout(&fa), initial);
    }

    #[test]
    fn frame_info_is_16_bytes() {
        assert_eq!(core::mem::size_of::<FrameInfo>(), 16);
        assert_eq!(core::mem::align_of::<FrameInfo>(), 4);
        assert_eq!(FrameAllocator::table_bytes(1 << 20), 16 << 20);
        assert_eq!(FrameAllocator::table_bytes(u64::MAX), u64::MAX);
    }

    #[test]
    fn new_initialises_every_entry() {
        let mut t = vec![FrameInfo::with_state(ST_FREE, 5); 64];
        t[3].next = 7;
        let mut fa = FrameAllocator::new(&mut t, p(0x100));
        ok(&fa);
        assert_eq!(fa.free_frames(), 0);
        assert_eq!(fa.total_frames(), 0);
        assert_eq!(fa.alloc(0), Err(OutOfMemory));
        assert_eq!(fa.state(p(0x100)), Some(FrameState::Reserved));
        assert_eq!(fa.state(p(0x13f)), Some(FrameState::Reserved));
        assert_eq!(fa.state(p(0x140)), None);
        assert_eq!(fa.state(p(0xff)), None);
        assert!(t.iter().all(|f| *f == FrameInfo::RESERVED));
    }

    #[test]
    fn table_is_clamped_to_representable_frames() {
        let mut t = table(16);
        let fa = FrameAllocator::new(&mut t, p(u64::MAX - 4));
        assert_eq!(fa.end(), p(u64::MAX));
        assert_eq!(fa.state(p(u64::MAX - 1)), Some(FrameState::Reserved));
        assert_eq!(fa.state(p(u64::MAX)), None);
    }

    #[test]
    fn donation_splits_into_maximal_aligned_blocks() {
        let mut t = table(64);
        let mut fa = FrameAllocator::new(&mut t, p(0));
        fa.add_free_range(p(3), p(37)).unwrap();
        ok(&fa);
        assert_eq!(layout(&fa), vec![(3, 0), (4, 2), (8, 3), (16, 4), (32, 2), (36, 0)]);
        assert_eq!(fa.free_frames(), 34);
        assert_eq!(fa.total_frames(), 34);
        assert_eq!(fa.state(p(2)), Some(FrameState::Reserved));
        assert_eq!(fa.state(p(20)), Some(FrameState::FreeTail));
    }

    #[test]
    fn alignment_is_absolute_not_relative_to_the_table() {
        // The table starts at an odd pfn; blocks still align to absolute pfns.
        let mut t = table(1100);
        let mut fa = FrameAllocator::new(&mut t, p(0x3ff));
        fa.add_free_range(p(0x3ff), p(0x3ff + 1100)).unwrap();
        ok(&fa);
        assert_eq!(layout(&fa)[..2], [(0x3ff, 0), (0x400, 10)]);
        assert_eq!(fa.alloc(9), Ok(p(0x400)));
    }

    #[test]
    fn donation_coalesces_with_free_neighbours() {
        let mut t = table(8);
        let mut fa = FrameAllocator::new(&mut t, p(0));
        fa.add_free_range(p(0), p(3)).unwrap();
        fa.add_free_range(p(4), p(8)).unwrap();
        assert_eq!(layout(&fa), vec![(0, 1), (2, 0), (4, 2)]);
        fa.add_free_range(p(3), p(4)).unwrap();
        ok(&fa);
        assert_eq!(layout(&fa), vec![(0, 3)]);
        assert_eq!(fa.free_blocks(3), 1);
    }

    #[test]
    fn aligned_gigabyte_becomes_one_order_18_block() {
        let frames = 1usize << MAX_ORDER;
        let mut t = table(frames);
        let mut fa = FrameAllocator::new(&mut t, p(frames as u64)); // 1 GiB
        fa.add_free_range(p(frames as u64), p(2 * frames as u64)).unwrap();
        ok(&fa);
        assert_eq!(fa.free_blocks(MAX_ORDER), 1);
        assert!((0..MAX_ORDER).all(|o| fa.free_blocks(o) == 0));
        assert_eq!(fa.alloc(MAX_ORDER), Ok(p(frames as u64)));
        assert_eq!(fa.free_frames(), 0);
        fa.free(p(frames as u64), MAX_ORDER).unwrap();
        assert_eq!(fa.free_blocks(MAX_ORDER), 1);
        ok(&fa);
    }

    #[test]
    fn orders_0_9_and_18_work_together() {
        let frames = 2usize << MAX_ORDER; // 2 GiB
        let mut t = table(frames);
        let mut fa = FrameAllocator::new(&mut t, p(0));
        fa.add_free_range(p(0), p(frames as u64)).unwrap();
        let initial = layout(&fa);
        assert_eq!(initial, vec![(0, 18), (1 << 18, 18)]);
        let small = fa.alloc(0).unwrap();
        let mid = fa.alloc(9).unwrap();
        let big = fa.alloc(18).unwrap();
        ok(&fa);
        assert_eq!(small, p(0));
        assert_eq!(mid, p(512)); // lowest 2 MiB block left after the split
        assert_eq!(big, p(1 << 18));
        assert!(mid.is_aligned(9) && big.is_aligned(18));
        assert_eq!(fa.alloc(18), Err(OutOfMemory));
        assert_eq!(fa.free_frames(), frames as u64 - 1 - 512 - (1 << 18));
        assert_eq!(fa.state(p(600)), Some(FrameState::AllocatedTail));
        assert_eq!(fa.state(p(1 << 18 | 12345)), Some(FrameState::AllocatedTail));
        fa.free(mid, 9).unwrap();
        fa.free(big, 18).unwrap();
        fa.free(small, 0).unwrap();
        ok(&fa);
        assert_eq!(layout(&fa), initial);
    }

    #[test]
    fn fresh_memory_is_handed_out_lowest_first() {
        let mut t = table(64);
        let mut fa = FrameAllocator::new(&mut t, p(0));
        fa.add_free_range(p(0), p(64)).unwrap();
        let got: Vec<_> = (0..64).map(|_| fa.alloc(0).unwrap().as_u64()).collect();
        assert_eq!(got, (0..64).collect::<Vec<_>>());
        // A freed low frame comes back first.
        fa.free(p(40), 0).unwrap();
        fa.free(p(7), 0).unwrap();
        assert_eq!(fa.alloc(0), Ok(p(7)));
    }

    #[test]
    fn exhaustion_is_an_error_and_recoverable() {
        let mut t = table(16);
        let mut fa = FrameAllocator::new(&mut t, p(0));
        fa.add_free_range(p(0), p(8)).unwrap();
        assert_eq!(fa.alloc(4), Err(OutOfMemory));
        let got: Vec<_> = (0..8).map(|_| fa.alloc(0).unwrap()).collect();
        assert_eq!(fa.alloc(0), Err(OutOfMemory));
        assert_eq!(fa.free_frames(), 0);
        ok(&fa);
        fa.free(got[5], 0).unwrap();
        assert_eq!(fa.alloc(0), Ok(got[5]));
        for pfn in got {
            fa.free(pfn, 0).unwrap();
        }
        assert_eq!(layout(&fa), vec![(0, 3)]);
        assert_eq!(fa.alloc(3), Ok(p(0)));
        ok(&fa);
    }

    #[test]
    fn bad_orders_are_rejected() {
        let mut t = table(8);
        let mut fa = FrameAllocator::new(&mut t, p(0));
        fa.add_free_range(p(0), p(8)).unwrap();
        assert_eq!(fa.alloc(MAX_ORDER + 1), Err(BadOrder));
        assert_eq!(fa.alloc(u8::MAX), Err(BadOrder));
        assert_eq!(fa.free(p(0), MAX_ORDER + 1), Err(BadOrder));
        assert_eq!(fa.free_blocks(MAX_ORDER + 1), 0);
        ok(&fa);
    }

    #[test]
    fn bad_frees_are_rejected_without_change() {
        let mut t = table(64);
        let mut fa = FrameAllocator::new(&mut t, p(0x1000));
        fa.add_free_range(p(0x1000), p(0x1020)).unwrap();
        let a = fa.alloc(2).unwrap();
        let b = fa.alloc(0).unwrap();
        let snapshot = fa.table.to_vec();
        let free = fa.free_frames();
        let attempts = [
            (p(0x0fff), 0, NotInTable),
            (p(0x1040), 0, NotInTable),
            (p(u64::MAX), 0, NotInTable),
            (a.checked_add(1).unwrap(), 0, NotAllocated), // tail of an allocated block
            (a.checked_add(2).unwrap(), 2, Unaligned),
            (a, 1, WrongOrder),
            (a, 3, WrongOrder),
            (p(0x1010), 0, NotAllocated), // free
            (p(0x1018), 0, NotAllocated), // free tail
            (p(0x1030), 0, NotAllocated), // reserved
        ];
        for (pfn, order, err) in attempts {
            assert_eq!(fa.free(pfn, order), Err(err), "free({pfn:?}, {order})");
            assert_eq!(fa.table, &snapshot[..]);
            assert_eq!(fa.free_frames(), free);
        }
        fa.free(b, 0).unwrap();
        assert_eq!(fa.free(b, 0), Err(NotAllocated), "double free");
        fa.free(a, 2).unwrap();
        assert_eq!(fa.free(a, 2), Err(NotAllocated), "double free after coalescing");
        ok(&fa);
        assert_eq!(layout(&fa), vec![(0x1000, 5)]);
    }

    #[test]
    fn bad_donations_are_rejected_without_change() {
        let mut t = table(32);
        let mut fa = FrameAllocator::new(&mut t, p(16));
        fa.add_free_range(p(20), p(24)).unwrap();
        let snapshot = fa.table.to_vec();
        assert_eq!(fa.add_free_range(p(15), p(20)), Err(NotInTable));
        assert_eq!(fa.add_free_range(p(40), p(49)), Err(NotInTable));
        assert_eq!(fa.add_free_range(p(30), p(29)), Err(NotInTable));
        assert_eq!(fa.add_free_range(p(16), p(21)), Err(NotReserved));
        assert_eq!(fa.add_free_range(p(23), p(30)), Err(NotReserved));
        assert_eq!(fa.add_free_range(p(30), p(30)), Ok(()));
        assert_eq!(fa.table, &snapshot[..]);
        assert_eq!(fa.total_frames(), 4);
        let a = fa.alloc(1).unwrap();
        assert_eq!(fa.add_free_range(a, a.checked_add(1).unwrap()), Err(NotReserved));
        ok(&fa);
    }

    #[test]
    fn state_reports_heads_and_tails() {
        let mut t = table(16);
        let mut fa = FrameAllocator::new(&mut t, p(0));
        fa.add_free_range(p(0), p(16)).unwrap();
        let a = fa.alloc(2).unwrap();
        assert_eq!(a, p(0));
        assert_eq!(fa.state(p(0)), Some(FrameState::Allocated { order: 2 }));
        assert_eq!(fa.state(p(3)), Some(FrameState::AllocatedTail));
        assert_eq!(fa.state(p(4)), Some(FrameState::Free { order: 2 }));
        assert_eq!(fa.state(p(5)), Some(FrameState::FreeTail));
        assert_eq!(fa.state(p(8)), Some(FrameState::Free { order: 3 }));
        assert_eq!(fa.state(p(15)), Some(FrameState::FreeTail));
    }

    #[test]
    fn check_invariants_detects_corruption() {
        type Corrupt = fn(&mut FrameAllocator<'_>);
        let cases: [(Corrupt, &str); 7] = [
            (|fa| fa.table[1] = FrameInfo::RESERVED, "block contains a frame that is not a tail"),
            (|fa| fa.table[8] = FrameInfo::TAIL, "tail frame outside any block"),
            (|fa| fa.table[8].state = 9, "invalid frame state"),
            (|fa| fa.free_frames += 1, "free frame count is wrong"),
            (|fa| fa.lists[3].len += 1, "free list length is wrong"),
            (|fa| fa.table[8].owner = 1, "free block has an owner or references"),
            (|fa| fa.lists[3].head = NONE, "free list tail is wrong"),
        ];
        for (corrupt, expect) in cases {
            let mut t = table(16);
            let mut fa = FrameAllocator::new(&mut t, p(0));
            fa.add_free_range(p(0), p(16)).unwrap();
            fa.alloc(2).unwrap();
            ok(&fa);
            corrupt(&mut fa);
            assert_eq!(fa.check_invariants(), Err(expect));
        }
    }

    // ---- property test against a model ----

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(u8),
        Free(usize),
        BadFree(u64, u8),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0u8..=7).prop_map(Op::Alloc),
            4 => any::<usize>().prop_map(Op::Free),
            1 => (0u64..1200, 0u8..=8).prop_map(|(pfn, o)| Op::BadFree(pfn, o)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn random_alloc_free_matches_model(
            base in 0u64..2048,
            frames in 16usize..1024,
            cuts in proptest::collection::vec(0usize..1024, 2..7),
            ops in proptest::collection::vec(arb_op(), 0..200),
        ) {
            // Donate every other piece between sorted cut points.
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (frames + 1)).collect();
            cuts.sort_unstable();
            let mut t = table(frames);
            let mut fa = FrameAllocator::new(&mut t, p(base));
            let mut donated = vec![false; frames];
            for pair in cuts.chunks_exact(2) {
                fa.add_free_range(p(base + pair[0] as u64), p(base + pair[1] as u64)).unwrap();
                donated[pair[0]..pair[1]].iter_mut().for_each(|d| *d = true);
            }
            prop_assert_eq!(fa.check_invariants(), Ok(()));
            let initial = layout(&fa);
            let total = fa.total_frames();
            prop_assert_eq!(total, donated.iter().filter(|d| **d).count() as u64);

            let mut live: Vec<(Pfn, u8)> = Vec::new();
            let mut used = vec![false; frames];
            for op in ops {
                match op {
                    Op::Alloc(order) => match fa.alloc(order) {
                        Ok(pfn) => {
                            prop_assert!(pfn.is_aligned(order));
                            let i = (pfn.as_u64() - base) as usize;
                            for f in i..i + (1 << order) {
                                prop_assert!(donated[f], "handed out an undonated frame");
                                prop_assert!(!used[f], "handed out a frame twice");
                                used[f] = true;
                            }
                            live.push((pfn, order));
                        }
                        Err(e) => {
                            prop_assert_eq!(e, OutOfMemory);
                            prop_assert!((order..=MAX_ORDER).all(|o| fa.free_blocks(o) == 0));
                        }
                    },
                    Op::Free(k) if !live.is_empty() => {
                        let (pfn, order) = live.swap_remove(k % live.len());
                        prop_assert_eq!(fa.free(pfn, order), Ok(()));
                        let i = (pfn.as_u64() - base) as usize;
                        used[i..i + (1 << order)].iter_mut().for_each(|u| *u = false);
                    }
                    Op::Free(_) => {}
                    Op::BadFree(pfn, order) => {
                        let pfn = p(base.saturating_sub(100) + pfn);
                        if !live.contains(&(pfn, order)) {
                            let snapshot = fa.table.to_vec();
                            prop_assert!(fa.free(pfn, order).is_err());
                            prop_assert!(fa.table == &snapshot[..]);
                        }
                    }
                }
                prop_assert_eq!(fa.check_invariants(), Ok(()));
                let in_use: u64 = live.iter().map(|&(_, o)| 1u64 << o).sum();
                prop_assert_eq!(fa.free_frames(), total - in_use);
            }
            for (pfn, order) in live.drain(..) {
                prop_assert_eq!(fa.free(pfn, order), Ok(()));
            }
            prop_assert_eq!(fa.check_invariants(), Ok(()));
            prop_assert_eq!(layout(&fa), initial);
            prop_assert_eq!(fa.free_frames(), total);
        }
    }
}
