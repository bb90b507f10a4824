//! `multicall` (hypercall 13): several hypercalls in one trap (`public/xen.h`).
//!
//! Called as `multicall(call_list, nr_calls)` with an array of [`MulticallEntry`]. Xen runs
//! each entry's hypercall with its arguments and stores the return value in `result`; the
//! multicall itself returns 0 unless the list could not be read.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `struct multicall_entry`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MulticallEntry {
    /// Hypercall number ([`crate::hypercall::nr`]).
    pub op: u64,
    /// OUT: the hypercall's return value (`-errno` as a two's-complement `u64`).
    pub result: u64,
    /// Arguments 1 to 6.
    pub args: [u64; 6],
}

impl MulticallEntry {
    /// `result` as the signed value a hypercall returns.
    pub const fn result_signed(&self) -> i64 {
        self.result as i64
    }
}

assert_layout!(MulticallEntry, 64, { op: 0, result: 8, args: 16 });

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::Errno;

    #[test]
    fn result_is_signed() {
        let e = MulticallEntry { result: Errno::ENOSYS.as_ret() as u64, ..Default::default() };
        assert_eq!(Errno::from_ret(e.result_signed()), Some(Errno::ENOSYS));
    }
}
