//! The hypercall page Xen writes for an HVM/PVH guest (when it writes the hypercall-page
//! MSR): 128 stubs of 32 bytes, `mov eax, <nr>; vmmcall; ret` (VMCALL on Intel), the rest of
//! each stub `int3`; stub 23 (`iret`, PV only) is `ud2`.

/// Hypercall number whose stub is `ud2` for HVM guests.
pub const HYPERCALL_IRET: usize = 23;

/// The page's bytes. `vmmcall`: AMD's instruction (else Intel's VMCALL).
pub fn hypercall_page(vmmcall: bool) -> [u8; 4096] {
    let mut page = [0xccu8; 4096];
    for (nr, stub) in page.chunks_exact_mut(32).enumerate() {
        if nr == HYPERCALL_IRET {
            stub[..2].copy_from_slice(&[0x0f, 0x0b]);
            continue;
        }
        stub[0] = 0xb8;
        stub[1..5].copy_from_slice(&(nr as u32).to_le_bytes());
        stub[5..8].copy_from_slice(if vmmcall { &[0x0f, 0x01, 0xd9] } else { &[0x0f, 0x01, 0xc1] });
        stub[8] = 0xc3;
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs() {
        let p = hypercall_page(true);
        assert_eq!(&p[17 * 32..17 * 32 + 9], &[0xb8, 17, 0, 0, 0, 0x0f, 0x01, 0xd9, 0xc3]);
        assert_eq!(&p[23 * 32..23 * 32 + 3], &[0x0f, 0x0b, 0xcc]);
        assert_eq!(p[17 * 32 + 9], 0xcc);
        assert_eq!(p[4095], 0xcc);
        let i = hypercall_page(false);
        assert_eq!(&i[0..9], &[0xb8, 0, 0, 0, 0, 0x0f, 0x01, 0xc1, 0xc3]);
    }
}
