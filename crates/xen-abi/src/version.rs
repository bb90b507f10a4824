//! `xen_version` (hypercall 17): version, build information and feature bits
//! (`public/version.h`, `public/features.h`).
//!
//! Called as `xen_version(cmd, arg)`. `XENVER_version` returns `major << 16 | minor` in RAX and
//! `XENVER_pagesize` the page size; the other sub-ops fill the buffer at `arg` and return 0.
//! String results are fixed-size, NUL-terminated character arrays ([`FixedCStr`]).

use core::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Returns `major << 16 | minor` in RAX; `arg` is ignored.
pub const XENVER_VERSION: u32 = 0;
/// Fills a [`XenExtraversion`] (e.g. `".0"`).
pub const XENVER_EXTRAVERSION: u32 = 1;
/// Fills a [`XenCompileInfo`].
pub const XENVER_COMPILE_INFO: u32 = 2;
/// Fills a [`XenCapabilitiesInfo`] (e.g. `"xen-3.0-x86_64 hvm-3.0-x86_64 "`).
pub const XENVER_CAPABILITIES: u32 = 3;
/// Fills a [`XenChangesetInfo`].
pub const XENVER_CHANGESET: u32 = 4;
/// Fills a [`XenPlatformParameters`].
pub const XENVER_PLATFORM_PARAMETERS: u32 = 5;
/// Fills a [`XenFeatureInfo`]: one 32-bit word of `XENFEAT_*` bits.
pub const XENVER_GET_FEATURES: u32 = 6;
/// Returns the page size in RAX.
pub const XENVER_PAGESIZE: u32 = 7;
/// Fills the 16-byte domain handle (UUID).
pub const XENVER_GUEST_HANDLE: u32 = 8;
/// Fills a [`XenCommandline`] (hypervisor command line; privileged).
pub const XENVER_COMMANDLINE: u32 = 9;
/// Fills a `xen_build_id` (length-prefixed; privileged).
pub const XENVER_BUILD_ID: u32 = 10;

/// `XENVER_version` result for a version: `major << 16 | minor` (4.17 is `0x0004_0011`).
pub const fn version_word(major: u16, minor: u16) -> u32 {
    (major as u32) << 16 | minor as u32
}

/// A fixed-size C character array holding a NUL-terminated string (`char name[N]`).
///
/// Building one from Rust truncates to `N - 1` bytes so the terminator always fits; reading one
/// from a guest accepts an array without a NUL (the whole array is then the string).
#[derive(Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(transparent)]
pub struct FixedCStr<const N: usize>(pub [u8; N]);

impl<const N: usize> FixedCStr<N> {
    /// `s`, truncated to `N - 1` bytes and NUL-padded. (Truncation may split a UTF-8
    /// character; the bytes are what the guest gets.)
    pub const fn new(s: &[u8]) -> Self {
        let mut out = [0u8; N];
        let mut i = 0;
        while i < s.len() && i + 1 < N {
            out[i] = s[i];
            i += 1;
        }
        Self(out)
    }

    /// The bytes before the first NUL (all `N` if there is none).
    pub fn as_bytes_until_nul(&self) -> &[u8] {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(N);
        self.0.get(..len).unwrap_or(&self.0)
    }

    /// The string as UTF-8, if it is.
    pub fn to_str(&self) -> Option<&str> {
        core::str::from_utf8(self.as_bytes_until_nul()).ok()
    }
}

impl<const N: usize> Default for FixedCStr<N> {
    fn default() -> Self {
        Self([0; N])
    }
}

impl<const N: usize> fmt::Debug for FixedCStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for chunk in self.as_bytes_until_nul().utf8_chunks() {
            write!(f, "{}", chunk.valid().escape_debug())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")
    }
}

/// `xen_extraversion_t`: the version suffix, e.g. `".0"`.
pub type XenExtraversion = FixedCStr<16>;
/// `XEN_EXTRAVERSION_LEN`.
pub const XEN_EXTRAVERSION_LEN: usize = 16;
/// `xen_capabilities_info_t`: space-separated guest types, e.g. `"hvm-3.0-x86_64"`.
pub type XenCapabilitiesInfo = FixedCStr<1024>;
/// `XEN_CAPABILITIES_INFO_LEN`.
pub const XEN_CAPABILITIES_INFO_LEN: usize = 1024;
/// `xen_changeset_info_t`: the source revision.
pub type XenChangesetInfo = FixedCStr<64>;
/// `XEN_CHANGESET_INFO_LEN`.
pub const XEN_CHANGESET_INFO_LEN: usize = 64;
/// `xen_commandline_t`: the hypervisor command line.
pub type XenCommandline = FixedCStr<1024>;

/// `struct xen_compile_info`: who built the hypervisor, with what, when.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenCompileInfo {
    /// Compiler name and version.
    pub compiler: FixedCStr<64>,
    /// User who built it.
    pub compile_by: FixedCStr<16>,
    /// Build host's domain.
    pub compile_domain: FixedCStr<32>,
    /// Build date.
    pub compile_date: FixedCStr<32>,
}

/// `struct xen_platform_parameters`: where the hypervisor's virtual area starts (PV only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenPlatformParameters {
    /// Start of the hypervisor's reserved virtual range.
    pub virt_start: u64,
}

/// `struct xen_feature_info`: argument of `XENVER_get_features`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenFeatureInfo {
    /// IN: which 32-bit word of feature bits (only 0 exists: [`XENFEAT_NR_SUBMAPS`]).
    pub submap_idx: u32,
    /// OUT: the bits, `1 << XENFEAT_*`.
    pub submap: u32,
}

/// Number of 32-bit feature words.
pub const XENFEAT_NR_SUBMAPS: u32 = 1;

/// PV: the guest may write its page tables directly.
pub const XENFEAT_WRITABLE_PAGE_TABLES: u32 = 0;
/// PV: the guest may write descriptor tables directly.
pub const XENFEAT_WRITABLE_DESCRIPTOR_TABLES: u32 = 1;
/// The guest's physical addresses are translated by the hypervisor (true for HVM/PVH).
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
/// PV: the guest kernel runs in ring 0.
pub const XENFEAT_SUPERVISOR_MODE_KERNEL: u32 = 3;
/// PV: PAE page directories may sit above 4 GiB.
pub const XENFEAT_PAE_PGDIR_ABOVE_4GB: u32 = 4;
/// PV: `mmu_update` preserves accessed/dirty bits.
pub const XENFEAT_MMU_PT_UPDATE_PRESERVE_AD: u32 = 5;
/// PV: the highmem assist is available.
pub const XENFEAT_HIGHMEM_ASSIST: u32 = 6;
/// Grant mappings may use the available PTE bits.
pub const XENFEAT_GNTTAB_MAP_AVAIL_BITS: u32 = 7;
/// HVM: events may be delivered through a callback vector (`HVM_PARAM_CALLBACK_IRQ` type 2).
pub const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;
/// HVM: the pvclock is safe to use.
pub const XENFEAT_HVM_SAFE_PVCLOCK: u32 = 9;
/// HVM: physical interrupts may be routed through event channels (PIRQs).
pub const XENFEAT_HVM_PIRQS: u32 = 10;
/// The domain is dom0.
pub const XENFEAT_DOM0: u32 = 11;
/// Grant mappings are 1:1 (ARM).
pub const XENFEAT_GRANT_MAP_IDENTITY: u32 = 12;
/// `XENMEM_get_vnumainfo` is supported.
pub const XENFEAT_MEMORY_OP_VNODE_SUPPORTED: u32 = 13;
/// ARM SMCCC is supported.
pub const XENFEAT_ARM_SMCCC_SUPPORTED: u32 = 14;
/// The RSDP may be placed anywhere, not only below 1 MiB (Linux `rsdp_unrestricted`).
pub const XENFEAT_LINUX_RSDP_UNRESTRICTED: u32 = 15;
/// The domain's memory is not 1:1 mapped (ARM).
pub const XENFEAT_NOT_DIRECT_MAPPED: u32 = 16;
/// The domain's memory is 1:1 mapped (ARM).
pub const XENFEAT_DIRECT_MAPPED: u32 = 17;

assert_layout!(XenCompileInfo, 144, { compiler: 0, compile_by: 64, compile_domain: 80, compile_date: 112 });
assert_layout!(XenPlatformParameters, 8, { virt_start: 0 });
assert_layout!(XenFeatureInfo, 8, { submap_idx: 0, submap: 4 });
assert_layout!(XenExtraversion, XEN_EXTRAVERSION_LEN);
assert_layout!(XenCapabilitiesInfo, XEN_CAPABILITIES_INFO_LEN);
assert_layout!(XenChangesetInfo, XEN_CHANGESET_INFO_LEN);

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn version_word_of_4_17() {
        assert_eq!(version_word(4, 17), 0x0004_0011);
    }

    #[test]
    fn fixed_cstr_truncates_and_terminates() {
        let s = XenExtraversion::new(b".0");
        assert_eq!(s.as_bytes_until_nul(), b".0");
        assert_eq!(s.to_str(), Some(".0"));
        let long = XenExtraversion::new(b"0123456789abcdefXYZ");
        assert_eq!(long.as_bytes_until_nul(), b"0123456789abcde");
        assert_eq!(long.0[15], 0);
        assert_eq!(FixedCStr::<0>::new(b"abc").as_bytes_until_nul(), b"");
        assert_eq!(FixedCStr::<1>::new(b"abc").0, [0]);
    }

    #[test]
    fn fixed_cstr_from_a_guest_without_nul() {
        let s = FixedCStr::<4>(*b"abcd");
        assert_eq!(s.as_bytes_until_nul(), b"abcd");
        let bad = FixedCStr::<4>([b'a', 0xff, b'b', 0]);
        assert_eq!(bad.to_str(), None);
        assert_eq!(format!("{bad:?}"), "\"a\\xffb\"");
        assert_eq!(format!("{:?}", FixedCStr::<8>::new(b"a\"b")), "\"a\\\"b\"");
    }

    #[test]
    fn feature_bits() {
        assert_eq!(XENFEAT_AUTO_TRANSLATED_PHYSMAP, 2);
        assert_eq!(XENFEAT_HVM_CALLBACK_VECTOR, 8);
        assert_eq!(XENFEAT_HVM_SAFE_PVCLOCK, 9);
        assert_eq!(XENFEAT_DOM0, 11);
        assert_eq!(XENFEAT_LINUX_RSDP_UNRESTRICTED, 15);
        assert_eq!(XENFEAT_DIRECT_MAPPED, 17);
    }
}
