//! Xen's public guest interface, as Rust types.
//!
//! These are keel's own definitions of the facts Xen 4.17's public headers publish (hypercall
//! and sub-op numbers, flags, error values, structure layouts). The crate is `no_std`, needs no
//! allocator and is shared by keel (the hypervisor), its test guests and the dom0 tools, so each
//! type is meant to be used from both sides of a hypercall:
//!
//! * every structure is `#[repr(C)]` with explicit `_pad*` fields where C has implicit
//!   padding, and derives zerocopy's `FromBytes`/`IntoBytes`, so it can be read from or
//!   written to guest memory as bytes without `unsafe`;
//! * every structure's size and field offsets are checked at compile time against what gcc
//!   produces for the public headers on x86-64 (`tests/data/xen-struct-offsets.txt`, which an
//!   integration test also cross-checks line by line);
//! * values the guest controls keep their full C range (a `DomId` may hold any `u16`, a
//!   status any `i16`): decoding them into meaning is done by fallible helpers, never by a
//!   panic.
//!
//! Naming: a constant keeps its C name, upper-cased (`XENMEM_add_to_physmap` is
//! [`memory::XENMEM_ADD_TO_PHYSMAP`]), so the headers and Xen's documentation stay a grep
//! away. Structures drop the `xen_` prefix and become `CamelCase`; a field whose C name is a
//! Rust keyword gets a trailing underscore (`type_`, `in_`, `ref_`). C unions are modelled as
//! raw bytes of the union's size and alignment, with typed accessors for each member.
//!
//! Where a newer Xen extended a structure inside space the older one left unused (the console
//! ring's `connection`, the xenstore ring's `evtchn_port`), the type follows the newer layout,
//! which is what the offsets file records, and says so.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

/// Compile-time check of a structure's size and field offsets:
/// `assert_layout!(Type, size { field: offset, ... });`.
macro_rules! assert_layout {
    ($ty:ty, $size:expr $(, { $($field:ident : $off:expr),* $(,)? })?) => {
        const _: () = {
            assert!(core::mem::size_of::<$ty>() == $size, concat!("size of ", stringify!($ty)));
            $($(
                assert!(
                    core::mem::offset_of!($ty, $field) == $off,
                    concat!("offset of ", stringify!($ty), ".", stringify!($field))
                );
            )*)?
        };
    };
}

/// `Default` as all-zero bytes, for structures whose arrays are too long for `derive(Default)`.
macro_rules! zeroed_default {
    ($($ty:ty),* $(,)?) => {
        $(
            impl Default for $ty {
                fn default() -> Self {
                    <Self as zerocopy::FromZeros>::new_zeroed()
                }
            }
        )*
    };
}

/// A C union modelled as raw bytes with the union's size and alignment.
///
/// `raw_union!(/// docs
/// pub struct Name, size, align);` defines `Name(pub [u8; size])` with `read::<T>()` and
/// `write(&T)` to view or set one member. Owners add typed accessors on top.
macro_rules! raw_union {
    ($(#[$meta:meta])* pub struct $name:ident, $size:literal, $align:literal) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq,
            zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, zerocopy::KnownLayout,
        )]
        #[repr(C, align($align))]
        pub struct $name(pub [u8; $size]);

        impl Default for $name {
            fn default() -> Self {
                Self([0; $size])
            }
        }

        impl $name {
            /// Reads the member of type `T` (its bytes start at offset 0, as in C).
            pub fn read<T: zerocopy::FromBytes>(&self) -> T {
                const { assert!(core::mem::size_of::<T>() <= $size, "member larger than the union") };
                match T::read_from_prefix(&self.0) {
                    Ok((value, _)) => value,
                    // Unreachable: the size is checked above and reading copies, so alignment
                    // does not matter. Zeroes keep this path panic-free all the same.
                    Err(_) => T::new_zeroed(),
                }
            }

            /// Sets the member of type `T`, zeroing the bytes it does not cover (so no stale
            /// data from another member is left behind for the other side to see).
            pub fn write<T: zerocopy::IntoBytes + zerocopy::Immutable>(&mut self, value: &T) {
                const { assert!(core::mem::size_of::<T>() <= $size, "member larger than the union") };
                let bytes = zerocopy::IntoBytes::as_bytes(value);
                self.0 = [0; $size];
                if let Some(dst) = self.0.get_mut(..bytes.len()) {
                    dst.copy_from_slice(bytes);
                }
            }
        }
    };
}

pub mod console_io;
pub mod cpuid;
pub mod domid;
pub mod elfnote;
pub mod errno;
pub mod event_channel;
pub mod grant_table;
pub mod guest_handle;
pub mod hvm;
pub mod hypercall;
pub mod io;
pub mod memory;
pub mod multicall;
pub mod physdev;
pub mod platform;
pub mod sched;
pub mod shared_info;
pub mod start_info;
pub mod vcpu;
pub mod version;
pub mod vm_assist;
pub mod xenstore;

pub use domid::DomId;
pub use errno::Errno;
pub use event_channel::EvtchnPort;
pub use grant_table::{GrantHandle, GrantRef};
pub use guest_handle::GuestHandle;
pub use hypercall::Hypercall;
pub use memory::XenPfn;

/// Size of a guest page as the ABI counts it (`XEN_PAGE_SIZE`, 4 KiB on x86).
pub const XEN_PAGE_SIZE: usize = 4096;
/// log2 of [`XEN_PAGE_SIZE`].
pub const XEN_PAGE_SHIFT: u32 = 12;
