//! `xen_version` (hypercall 17): every sub-op, what it writes, its bounds and its errors.
//!
//! Xen 4.17: `XENVER_version` returns `major << 16 | minor`; the string sub-ops copy whole
//! NUL-terminated fixed-size buffers; `pagesize` wants a NULL argument; `get_features` knows
//! only submap 0; `commandline` (1024 bytes) and `build_id` are privileged (an unprivileged
//! domain reads `<denied>` and gets `-EPERM` for the build id); unknown sub-ops answer
//! `-ENOSYS`, unreadable or unwritable buffers `-EFAULT`.

use xen_abi::version::*;

use super::fw::{ensure, fail, nr, num, op, raw, EFAULT, EINVAL, ENOBUFS, ENODATA, ENOSYS, EPERM, R, UNMAPPED};
use super::Ctx;
use crate::checks::Tap;

fn ver<T: super::fw::Plain>(cmd: u32, arg: &mut T) -> i64 {
    op(nr::XEN_VERSION, cmd, arg)
}

fn nul_terminated(b: &[u8]) -> bool {
    b.contains(&0)
}

fn text(b: &[u8]) -> &str {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    core::str::from_utf8(&b[..end]).unwrap_or("?")
}

fn version() -> R {
    let v = num(nr::XEN_VERSION, [XENVER_VERSION as u64, 0, 0, 0, 0]);
    ensure!(v > 0 && v >> 16 >= 3 && v >> 32 == 0, "XENVER_version returned {v:#x}");
    Ok(())
}

fn extraversion() -> R {
    let mut b = [0xffu8; 16];
    let rc = ver(XENVER_EXTRAVERSION, &mut b);
    ensure!(rc == 0 && nul_terminated(&b), "rc {rc}, buffer {b:x?}");
    Ok(())
}

fn compile_info() -> R {
    let mut ci = XenCompileInfo::default();
    // Poison so that an unwritten field shows.
    let bytes = zerocopy::IntoBytes::as_mut_bytes(&mut ci);
    bytes.fill(0xff);
    let rc = ver(XENVER_COMPILE_INFO, &mut ci);
    ensure!(rc == 0, "rc {rc}");
    for (name, f) in [
        ("compiler", &ci.compiler.0[..]),
        ("compile_by", &ci.compile_by.0[..]),
        ("compile_domain", &ci.compile_domain.0[..]),
        ("compile_date", &ci.compile_date.0[..]),
    ] {
        ensure!(nul_terminated(f), "{name} is not NUL-terminated");
    }
    Ok(())
}

fn capabilities() -> R {
    let mut b = [0xffu8; 1024];
    let rc = ver(XENVER_CAPABILITIES, &mut b);
    ensure!(rc == 0 && nul_terminated(&b), "rc {rc}");
    let caps = text(&b);
    ensure!(caps.split(' ').any(|c| c == "hvm-3.0-x86_64"), "capabilities '{caps}' lack hvm-3.0-x86_64");
    Ok(())
}

fn changeset() -> R {
    let mut b = [0xffu8; 64];
    let rc = ver(XENVER_CHANGESET, &mut b);
    ensure!(rc == 0 && nul_terminated(&b), "rc {rc}");
    Ok(())
}

fn platform_parameters() -> R {
    let mut p = XenPlatformParameters { virt_start: 1 };
    let rc = ver(XENVER_PLATFORM_PARAMETERS, &mut p);
    // HYPERVISOR_VIRT_START of the x86-64 ABI (public/arch-x86/xen-x86_64.h).
    ensure!(
        rc == 0 && p.virt_start == 0xffff_8000_0000_0000,
        "rc {rc}, virt_start {:#x} (the x86-64 ABI's is 0xffff800000000000)",
        p.virt_start
    );
    Ok(())
}

fn get_features(ctx: &Ctx) -> R {
    let mut fi = XenFeatureInfo { submap_idx: 0, submap: 0xdead_beef };
    let rc = ver(XENVER_GET_FEATURES, &mut fi);
    ensure!(rc == 0, "rc {rc}");
    // What Xen 4.17 reports for a PVH (translated HVM, no PIRQs) domain.
    let mut want = (1 << XENFEAT_WRITABLE_PAGE_TABLES)
        | (1 << XENFEAT_AUTO_TRANSLATED_PHYSMAP)
        | (1 << XENFEAT_HVM_CALLBACK_VECTOR)
        | (1 << XENFEAT_HVM_SAFE_PVCLOCK)
        | (1 << XENFEAT_MEMORY_OP_VNODE_SUPPORTED)
        | (1 << XENFEAT_NOT_DIRECT_MAPPED);
    if ctx.initdomain {
        want |= 1 << XENFEAT_DOM0;
    }
    ensure!(fi.submap == want, "submap 0 = {:#x}, Xen gives a PVH domain {want:#x}", fi.submap);
    let mut fi = XenFeatureInfo { submap_idx: 1, submap: 0 };
    let rc = ver(XENVER_GET_FEATURES, &mut fi);
    ensure!(rc == EINVAL, "submap 1: rc {rc}, want -EINVAL");
    Ok(())
}

fn pagesize() -> R {
    let rc = num(nr::XEN_VERSION, [XENVER_PAGESIZE as u64, 0, 0, 0, 0]);
    ensure!(rc == 4096, "pagesize(NULL) returned {rc}");
    let mut dummy = 0u64;
    let rc = ver(XENVER_PAGESIZE, &mut dummy);
    ensure!(rc == EINVAL, "pagesize with a non-NULL argument returned {rc}, want -EINVAL");
    Ok(())
}

fn guest_handle(ctx: &Ctx) -> R {
    let mut h = [0xffu8; 16];
    let rc = ver(XENVER_GUEST_HANDLE, &mut h);
    ensure!(rc == 0, "rc {rc}");
    // dom0 is built by the hypervisor, with no toolstack handle: all zero.
    if ctx.initdomain {
        ensure!(h == [0; 16], "dom0's handle is {h:x?}, want zeroes");
    } else {
        ensure!(h != [0xff; 16], "the handle was not written");
    }
    Ok(())
}

fn commandline(ctx: &Ctx) -> R {
    let mut b = [0xffu8; 1024];
    let rc = ver(XENVER_COMMANDLINE, &mut b);
    ensure!(rc == 0 && nul_terminated(&b), "rc {rc}");
    if !ctx.privileged {
        ensure!(text(&b) == "<denied>", "an unprivileged domain read '{}', want '<denied>'", text(&b));
    }
    Ok(())
}

fn build_id(ctx: &Ctx) -> R {
    // xen_build_id_t: u32 len, then the bytes.
    let size = num(nr::XEN_VERSION, [XENVER_BUILD_ID as u64, 0, 0, 0, 0]);
    if !ctx.privileged {
        ensure!(size == EPERM, "NULL buffer: rc {size}, want -EPERM for an unprivileged domain");
        return Ok(());
    }
    if size == ENODATA {
        return Ok(()); // built without a build id: Xen's answer then
    }
    ensure!(size > 0 && size <= 64, "NULL buffer: rc {size}, want the id's size or -ENODATA");
    let mut buf = [0u8; 72];
    let call = |len: u32, buf: &mut [u8; 72]| {
        buf[..4].copy_from_slice(&len.to_le_bytes());
        // SAFETY: a 72-byte buffer; `len` never exceeds the 68 bytes after the length word.
        unsafe { raw(nr::XEN_VERSION, [XENVER_BUILD_ID as u64, buf.as_mut_ptr() as u64, 0, 0, 0]) }
    };
    let rc = call(0, &mut buf);
    ensure!(rc == EINVAL, "len 0: rc {rc}, want -EINVAL");
    let rc = call(size as u32 - 1, &mut buf);
    ensure!(rc == ENOBUFS, "len {}: rc {rc}, want -ENOBUFS", size - 1);
    let rc = call(size as u32, &mut buf);
    ensure!(rc == size, "len {size}: rc {rc}, want {size}");
    Ok(())
}

fn unknown_subop() -> R {
    for cmd in [11u64, 64, 0x7fff_ffff] {
        let rc = num(nr::XEN_VERSION, [cmd, 0, 0, 0, 0]);
        ensure!(rc == ENOSYS, "sub-op {cmd}: rc {rc}, want -ENOSYS");
    }
    Ok(())
}

fn bad_pointers(ctx: &Ctx) -> R {
    for cmd in [
        XENVER_EXTRAVERSION,
        XENVER_COMPILE_INFO,
        XENVER_CAPABILITIES,
        XENVER_CHANGESET,
        XENVER_PLATFORM_PARAMETERS,
        XENVER_GET_FEATURES,
        XENVER_GUEST_HANDLE,
        XENVER_COMMANDLINE,
        XENVER_BUILD_ID,
    ] {
        if cmd == XENVER_BUILD_ID && !ctx.privileged {
            continue; // refused before the buffer is looked at
        }
        let rc = num(nr::XEN_VERSION, [cmd as u64, UNMAPPED, 0, 0, 0]);
        if rc != EFAULT {
            fail!("sub-op {cmd} with an unmapped buffer: rc {rc}, want -EFAULT");
        }
    }
    Ok(())
}

/// The `ver-` checks.
pub fn run(t: &mut Tap, ctx: &Ctx) {
    t.run("ver-version", version());
    t.run("ver-extraversion", extraversion());
    t.run("ver-compile-info", compile_info());
    t.run("ver-capabilities-hvm", capabilities());
    t.run("ver-changeset", changeset());
    t.run("ver-platform-parameters", platform_parameters());
    t.run("ver-get-features", get_features(ctx));
    t.run("ver-pagesize", pagesize());
    t.run("ver-guest-handle", guest_handle(ctx));
    t.run("ver-commandline", commandline(ctx));
    t.run("ver-build-id", build_id(ctx));
    t.run("ver-unknown-subop", unknown_subop());
    t.run("ver-bad-pointer", bad_pointers(ctx));
}
