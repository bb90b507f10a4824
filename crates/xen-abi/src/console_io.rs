//! Consoles: the `console_io` hypercall (18) and the PV console ring (`public/io/console.h`).
//!
//! `console_io(CONSOLEIO_write, count, buffer)` writes `count` bytes from the guest-virtual
//! `buffer` to the hypervisor console; `CONSOLEIO_read` reads from it (dom0's `hvc0`).
//!
//! A domU's PV console is a shared page holding an [`XenconsInterface`] (found with
//! `HVM_PARAM_CONSOLE_PFN` and `HVM_PARAM_CONSOLE_EVTCHN`). Each direction is a byte ring
//! whose indices run freely over `u32`; the byte for index `i` is at `i & (size - 1)`
//! ([`mask_in`], [`mask_out`]). Producers advance `*_prod`, consumers `*_cons`, and each side
//! notifies the other over the event channel. `prod - cons` (wrapping) larger than the ring
//! means the other side corrupted the indices.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `console_io` sub-op: write `count` bytes from `buffer`.
pub const CONSOLEIO_WRITE: u32 = 0;
/// `console_io` sub-op: read up to `count` bytes into `buffer`; returns the number read.
pub const CONSOLEIO_READ: u32 = 1;

/// Size of the backend-to-guest (keyboard) ring.
pub const XENCONS_IN_SIZE: usize = 1024;
/// Size of the guest-to-backend (output) ring.
pub const XENCONS_OUT_SIZE: usize = 2048;

/// `connection` value: the backend services the ring.
pub const XENCONSOLE_CONNECTED: u8 = 0;
/// `connection` value: nobody empties the ring yet.
pub const XENCONSOLE_DISCONNECTED: u8 = 1;

/// `struct xencons_interface`: the PV console page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenconsInterface {
    /// C `in[]`: backend to guest (input).
    pub in_: [u8; XENCONS_IN_SIZE],
    /// Guest to backend (output).
    pub out: [u8; XENCONS_OUT_SIZE],
    /// Guest's consumer index into `in_`.
    pub in_cons: u32,
    /// Backend's producer index into `in_`.
    pub in_prod: u32,
    /// Backend's consumer index into `out`.
    pub out_cons: u32,
    /// Guest's producer index into `out`.
    pub out_prod: u32,
    /// `XENCONSOLE_*`. Added after Xen 4.17 in bytes 4.17 leaves unused: a 4.17 guest never
    /// reads it, and zero means connected.
    pub connection: u8,
    /// Padding to the structure's alignment.
    pub _pad0: [u8; 3],
}

zeroed_default!(XenconsInterface);

/// `MASK_XENCONS_IDX(idx, in)`: position in `in[]` of free-running index `idx`.
pub const fn mask_in(idx: u32) -> usize {
    idx as usize & (XENCONS_IN_SIZE - 1)
}

/// `MASK_XENCONS_IDX(idx, out)`: position in `out[]` of free-running index `idx`.
pub const fn mask_out(idx: u32) -> usize {
    idx as usize & (XENCONS_OUT_SIZE - 1)
}

assert_layout!(XenconsInterface, 3092, {
    in_: 0, out: 1024, in_cons: 3072, in_prod: 3076, out_cons: 3080, out_prod: 3084, connection: 3088,
});
const _: () = assert!(XENCONS_IN_SIZE.is_power_of_two() && XENCONS_OUT_SIZE.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_wrap_free_running_indices() {
        assert_eq!(mask_in(0), 0);
        assert_eq!(mask_in(1023), 1023);
        assert_eq!(mask_in(1024), 0);
        assert_eq!(mask_in(u32::MAX), 1023);
        assert_eq!(mask_out(2047), 2047);
        assert_eq!(mask_out(2048), 0);
        assert_eq!(mask_out(u32::MAX), 2047);
    }

    #[test]
    fn default_is_an_empty_connected_ring() {
        let ring = XenconsInterface::default();
        assert_eq!((ring.in_cons, ring.in_prod, ring.out_cons, ring.out_prod), (0, 0, 0, 0));
        assert_eq!(ring.connection, XENCONSOLE_CONNECTED);
        assert!(ring.as_bytes().iter().all(|&b| b == 0));
    }
}
