//! `xen_version`: which Xen keel is (4.17 by its guest ABI), and the features it offers.

use xen_abi::errno::Errno;
use xen_abi::version::*;

use super::{Call, Gva, HcResult, Outcome};

/// The version keel reports: the ABI it implements.
pub const MAJOR: u16 = 4;
/// Minor version.
pub const MINOR: u16 = 17;
/// `XENVER_extraversion`.
const EXTRAVERSION: &[u8] = b".0-keel";
/// Start of the hypervisor's reserved virtual range on x86-64 (PV guests; reported as Xen does).
const HYPERVISOR_VIRT_START: u64 = 0xffff_8000_0000_0000;

/// The feature bits of submap 0 for `domain` (as Xen 4.17 reports them for HVM/PVH guests).
pub fn features(privileged: bool) -> u32 {
    let mut f = (1 << XENFEAT_WRITABLE_PAGE_TABLES)
        | (1 << XENFEAT_AUTO_TRANSLATED_PHYSMAP)
        | (1 << XENFEAT_HVM_CALLBACK_VECTOR)
        | (1 << XENFEAT_HVM_SAFE_PVCLOCK)
        | (1 << XENFEAT_MEMORY_OP_VNODE_SUPPORTED)
        | (1 << XENFEAT_NOT_DIRECT_MAPPED);
    if privileged {
        f |= 1 << XENFEAT_DOM0;
    }
    f
}

/// `xen_version(cmd, arg)`.
pub fn xen_version(c: &mut Call<'_>, cmd: u32, arg: Gva) -> HcResult {
    match cmd {
        XENVER_VERSION => Ok(Outcome::Ret(version_word(MAJOR, MINOR) as i64)),
        XENVER_EXTRAVERSION => {
            c.write(arg, &XenExtraversion::new(EXTRAVERSION))?;
            Ok(Outcome::Ret(0))
        }
        XENVER_COMPILE_INFO => {
            let info = XenCompileInfo {
                compiler: FixedCStr::new(b"rustc"),
                compile_by: FixedCStr::new(b"keel"),
                compile_domain: FixedCStr::new(b""),
                compile_date: FixedCStr::new(b""),
            };
            c.write(arg, &info)?;
            Ok(Outcome::Ret(0))
        }
        XENVER_CAPABILITIES => {
            c.write(arg, &XenCapabilitiesInfo::new(b"xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64"))?;
            Ok(Outcome::Ret(0))
        }
        XENVER_CHANGESET => {
            c.write(arg, &XenChangesetInfo::new(concat!("keel ", env!("CARGO_PKG_VERSION")).as_bytes()))?;
            Ok(Outcome::Ret(0))
        }
        XENVER_PLATFORM_PARAMETERS => {
            c.write(arg, &XenPlatformParameters { virt_start: HYPERVISOR_VIRT_START })?;
            Ok(Outcome::Ret(0))
        }
        XENVER_GET_FEATURES => {
            let mut fi: XenFeatureInfo = c.read(arg)?;
            fi.submap = match fi.submap_idx {
                0 => features(c.domain.privileged),
                _ => return Err(Errno::EINVAL),
            };
            c.write(arg, &fi)?;
            Ok(Outcome::Ret(0))
        }
        // Xen answers -EINVAL when a buffer is passed.
        XENVER_PAGESIZE if arg.0 != 0 => Err(Errno::EINVAL),
        XENVER_PAGESIZE => Ok(Outcome::Ret(4096)),
        XENVER_GUEST_HANDLE => {
            c.write(arg, &[0u8; 16])?;
            Ok(Outcome::Ret(0))
        }
        // Unprivileged domains learn nothing of keel's command line: Xen copies "<denied>".
        XENVER_COMMANDLINE if !c.domain.privileged => {
            c.write_bytes(arg, b"<denied>\0")?;
            Ok(Outcome::Ret(0))
        }
        XENVER_BUILD_ID if !c.domain.privileged => Err(Errno::EPERM),
        XENVER_COMMANDLINE => {
            let line = crate::boot::info().options_cmdline().as_bytes().to_vec();
            c.write(arg, &XenCommandline::new(&line))?;
            Ok(Outcome::Ret(0))
        }
        XENVER_BUILD_ID => {
            // A non-null buffer must be readable and announce room (Xen checks both before
            // it looks for its build id); keel is linked without one.
            if arg.0 != 0 {
                let len: u32 = c.read(arg)?;
                if len == 0 {
                    return Err(Errno::EINVAL);
                }
            }
            Err(Errno::ENODATA)
        }
        _ => Err(Errno::ENOSYS),
    }
}
