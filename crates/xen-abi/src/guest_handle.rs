//! Typed guest pointers (`XEN_GUEST_HANDLE(type)`).
//!
//! A guest handle is the address, in the calling guest's virtual address space, of one or more
//! `T`s that the hypervisor reads or writes. On x86-64 it is a plain 8-byte value in every
//! structure that carries one. [`GuestHandle`] keeps the pointee type in the Rust type so a
//! handle to event-channel ports cannot be passed where a handle to frame numbers is expected,
//! while staying exactly 8 bytes of `u64` in memory.
//!
//! The address is untrusted: it may be null, unaligned, unmapped or near the top of the address
//! space. The helpers here only do checked arithmetic; translating and accessing the memory is
//! the hypervisor's job.

use core::fmt;
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;
use core::mem::size_of;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XEN_GUEST_HANDLE(T)`: the guest-virtual address of a `T` (or of an array of them).
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(transparent)]
pub struct GuestHandle<T>(u64, PhantomData<fn() -> T>);

impl<T> GuestHandle<T> {
    /// The null handle (address 0), which Xen treats as "no buffer".
    pub const NULL: Self = Self::new(0);

    /// A handle to the `T` at guest-virtual address `addr`.
    pub const fn new(addr: u64) -> Self {
        Self(addr, PhantomData)
    }

    /// The guest-virtual address.
    pub const fn addr(self) -> u64 {
        self.0
    }

    /// True for the null handle.
    pub const fn is_null(self) -> bool {
        self.0 == 0
    }

    /// The address of element `index` of the array this handle points to, or `None` if it
    /// does not fit in 64 bits.
    pub const fn element_addr(self, index: u64) -> Option<u64> {
        match index.checked_mul(size_of::<T>() as u64) {
            Some(offset) => self.0.checked_add(offset),
            None => None,
        }
    }

    /// A handle to element `index` of the array this handle points to (Xen's
    /// `guest_handle_add_offset`), or `None` on overflow.
    pub const fn offset(self, index: u64) -> Option<Self> {
        match self.element_addr(index) {
            Some(addr) => Some(Self::new(addr)),
            None => None,
        }
    }

    /// Size in bytes of `count` elements, or `None` on overflow.
    pub const fn byte_len(count: u64) -> Option<u64> {
        count.checked_mul(size_of::<T>() as u64)
    }

    /// The same address, seen as a handle to `U` (Xen's `guest_handle_cast`).
    pub const fn cast<U>(self) -> GuestHandle<U> {
        GuestHandle::new(self.0)
    }
}

// Manual impls: deriving would require `T: Clone` etc., but the handle is just a number.
impl<T> Clone for GuestHandle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for GuestHandle<T> {}

impl<T> PartialEq for GuestHandle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<T> Eq for GuestHandle<T> {}

impl<T> Hash for GuestHandle<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl<T> Default for GuestHandle<T> {
    fn default() -> Self {
        Self::NULL
    }
}

impl<T> fmt::Debug for GuestHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestHandle({:#x})", self.0)
    }
}

assert_layout!(GuestHandle<u8>, 8);
assert_layout!(GuestHandle<[u64; 64]>, 8);
const _: () = assert!(core::mem::align_of::<GuestHandle<u8>>() == 8);

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn element_addresses_scale_by_the_element_size() {
        let h = GuestHandle::<u64>::new(0x1000);
        assert_eq!(h.element_addr(0), Some(0x1000));
        assert_eq!(h.element_addr(3), Some(0x1018));
        assert_eq!(h.offset(2).map(GuestHandle::addr), Some(0x1010));
        assert_eq!(h.cast::<u32>().element_addr(3), Some(0x100c));
        assert_eq!(GuestHandle::<u32>::byte_len(5), Some(20));
    }

    #[test]
    fn element_addresses_never_overflow() {
        let h = GuestHandle::<u64>::new(u64::MAX - 8);
        assert_eq!(h.element_addr(1), Some(u64::MAX));
        assert_eq!(h.element_addr(2), None);
        assert_eq!(GuestHandle::<u64>::new(0).element_addr(u64::MAX), None);
        assert_eq!(GuestHandle::<u64>::byte_len(u64::MAX / 4), None);
    }

    #[test]
    fn null_default_and_debug() {
        assert!(GuestHandle::<u8>::default().is_null());
        assert!(!GuestHandle::<u8>::new(1).is_null());
        assert_eq!(format!("{:?}", GuestHandle::<u8>::new(0xabc)), "GuestHandle(0xabc)");
    }

    #[test]
    fn is_eight_little_endian_bytes() {
        let h = GuestHandle::<u32>::new(0x1122_3344_5566_7788);
        assert_eq!(h.as_bytes(), &0x1122_3344_5566_7788u64.to_ne_bytes());
        assert_eq!(GuestHandle::<u32>::read_from_bytes(&7u64.to_ne_bytes()).ok(), Some(GuestHandle::new(7)));
    }
}
