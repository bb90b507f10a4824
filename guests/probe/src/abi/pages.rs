//! The pages the suite uses, one pool in .bss: each has one purpose so that checks never
//! share memory by accident. Several are handed to the hypervisor (shared_info, grant-table
//! frames, FIFO control blocks and event arrays) or ballooned out and back in; the probe never
//! touches a page while it is not RAM or a frame the hypervisor put there.

use super::fw::Page;

/// shared_info, first place.
pub const SHINFO_A: usize = 0;
/// shared_info, second place (the move check).
pub const SHINFO_B: usize = 1;
/// Registered vcpu_info areas (vCPU v at offset 64 * v + 64).
pub const VCPU_INFO: usize = 2;
/// Runstate areas (vCPU v at offset 64 * v).
pub const RUNSTATE: usize = 3;
/// FIFO control blocks (vCPU v at offset 128 * v).
pub const FIFO_CB: usize = 4;
/// FIFO event arrays (two pages, 2048 ports).
pub const FIFO_ARRAY: usize = 5;
/// Where grant-table frames 0 and 1 are mapped.
pub const GNT_FRAME: usize = 7;
/// A page the probe grants to itself.
pub const GRANTED: usize = 9;
/// Grant copy source and destination.
pub const COPY_SRC: usize = 10;
/// Grant copy destination.
pub const COPY_DST: usize = 11;
/// Scratch pages that are ballooned out to receive grant mappings.
pub const HOLE: usize = 12;
/// Pages for the balloon cycle.
pub const BALLOON: usize = 16;
/// Pages ballooned by the balloon cycle.
pub const BALLOON_PAGES: usize = 4;
/// A page for the remove_from_physmap check.
pub const REMOVE: usize = 20;
/// Peer (two-domain) checks: the page granted to the peer.
pub const PEER_GRANT: usize = 21;
/// Peer checks: where the peer's grant is mapped (ballooned out first).
pub const PEER_HOLE: usize = 22;
/// Peer checks: grant copy target.
pub const PEER_COPY: usize = 23;
/// Benchmark buffer.
pub const BENCH: usize = 24;
/// Pages in the pool.
pub const COUNT: usize = 25;

#[repr(C, align(4096))]
struct Pool([Page; COUNT]);

static mut POOL: Pool = Pool([const { Page::zeroed() }; COUNT]);

/// Address (= guest-physical address) of page `i` of the pool.
pub fn addr(i: usize) -> u64 {
    core::ptr::addr_of!(POOL) as u64 + 4096 * i.min(COUNT - 1) as u64
}

/// Guest frame number of page `i`.
pub fn gfn(i: usize) -> u64 {
    addr(i) >> 12
}
