//! Test support: a fake physical memory and builders for firmware table images.
//!
//! The builders write every field at its byte offset from the ACPI specification, independently
//! of the `zerocopy` layouts in `layout.rs`, so a layout mistake cannot hide in a round trip.

use crate::{checksum, AddressSpace, Gas, PhysMemory, Rsdp};

/// Sparse physical memory made of byte regions; reads must fall entirely inside one region.
pub struct FakeMem {
    regions: Vec<(u64, Vec<u8>)>,
}

impl FakeMem {
    pub fn new() -> Self {
        Self { regions: Vec::new() }
    }

    pub fn add(&mut self, base: u64, bytes: Vec<u8>) {
        self.regions.push((base, bytes));
    }

    /// Overwrites bytes inside an existing region.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) {
        let (base, region) = self
            .regions
            .iter_mut()
            .find(|(base, r)| addr >= *base && addr + bytes.len() as u64 <= *base + r.len() as u64)
            .expect("write outside every region");
        let off = (addr - *base) as usize;
        region[off..off + bytes.len()].copy_from_slice(bytes);
    }
}

impl PhysMemory for FakeMem {
    fn read(&self, phys: u64, buf: &mut [u8]) -> Result<(), ()> {
        let end = phys.checked_add(buf.len() as u64).ok_or(())?;
        let (base, region) =
            self.regions.iter().find(|(base, r)| phys >= *base && end <= *base + r.len() as u64).ok_or(())?;
        let off = (phys - base) as usize;
        buf.copy_from_slice(&region[off..off + buf.len()]);
        Ok(())
    }
}

fn put16(v: &mut [u8], off: usize, x: u16) {
    v[off..off + 2].copy_from_slice(&x.to_le_bytes());
}

fn put32(v: &mut [u8], off: usize, x: u32) {
    v[off..off + 4].copy_from_slice(&x.to_le_bytes());
}

fn put64(v: &mut [u8], off: usize, x: u64) {
    v[off..off + 8].copy_from_slice(&x.to_le_bytes());
}

/// Recomputes the length and checksum fields of a complete SDT image.
pub fn fix_sdt(v: &mut [u8]) {
    let len = v.len() as u32;
    put32(v, 4, len);
    v[9] = 0;
    v[9] = 0u8.wrapping_sub(checksum(v));
}

/// An SDT with header fields at their spec offsets, `body` after the 36-byte header.
pub fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 36];
    v[0..4].copy_from_slice(signature);
    v[8] = revision;
    v[10..16].copy_from_slice(b"KTEST ");
    v[16..24].copy_from_slice(b"KTESTTBL");
    put32(&mut v, 24, 1);
    v[28..32].copy_from_slice(b"KTST");
    put32(&mut v, 32, 1);
    v.extend_from_slice(body);
    fix_sdt(&mut v);
    v
}

/// An ACPI 1.0 RSDP.
pub fn rsdp_v1(rsdt: u32) -> [u8; 20] {
    let mut v = [0u8; 20];
    v[..8].copy_from_slice(b"RSD PTR ");
    v[9..15].copy_from_slice(b"KTEST ");
    v[15] = 0;
    put32(&mut v, 16, rsdt);
    v[8] = 0u8.wrapping_sub(checksum(&v));
    v
}

/// An ACPI 2.0+ RSDP.
pub fn rsdp_v2(rsdt: u32, xsdt: u64) -> [u8; 36] {
    let mut v = [0u8; 36];
    v[..8].copy_from_slice(b"RSD PTR ");
    v[9..15].copy_from_slice(b"KTEST ");
    v[15] = 2;
    put32(&mut v, 16, rsdt);
    put32(&mut v, 20, 36);
    put64(&mut v, 24, xsdt);
    v[8] = 0u8.wrapping_sub(checksum(&v[..20]));
    v[32] = 0u8.wrapping_sub(checksum(&v));
    v
}

pub fn parse_rsdp_bytes(bytes: &[u8]) -> Rsdp {
    crate::parse_rsdp(bytes).unwrap()
}

pub fn rsdt(entries: &[u32]) -> Vec<u8> {
    let body: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
    sdt(b"RSDT", 1, &body)
}

pub fn xsdt(entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
    sdt(b"XSDT", 1, &body)
}

/// A MADT: local APIC address and flags, then the given raw entries.
pub fn madt(lapic_addr: u32, flags: u32, entries: &[Vec<u8>]) -> Vec<u8> {
    let mut body = vec![0u8; 8];
    put32(&mut body, 0, lapic_addr);
    put32(&mut body, 4, flags);
    for e in entries {
        body.extend_from_slice(e);
    }
    sdt(b"APIC", 3, &body)
}

pub fn lapic(uid: u8, apic_id: u8, flags: u32) -> Vec<u8> {
    let mut v = vec![0, 8, uid, apic_id, 0, 0, 0, 0];
    put32(&mut v, 4, flags);
    v
}

pub fn ioapic(id: u8, addr: u32, gsi_base: u32) -> Vec<u8> {
    let mut v = vec![1, 12, id, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    put32(&mut v, 4, addr);
    put32(&mut v, 8, gsi_base);
    v
}

/// An ISA (bus 0) interrupt source override.
pub fn iso(source: u8, gsi: u32, flags: u16) -> Vec<u8> {
    let mut v = vec![2, 10, 0, source, 0, 0, 0, 0, 0, 0];
    put32(&mut v, 4, gsi);
    put16(&mut v, 8, flags);
    v
}

pub fn lapic_nmi(uid: u8, lint: u8) -> Vec<u8> {
    vec![4, 6, uid, 0, 0, lint]
}

pub fn lapic_override(addr: u64) -> Vec<u8> {
    let mut v = vec![5, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    put64(&mut v, 4, addr);
    v
}

pub fn x2apic(uid: u32, x2apic_id: u32, flags: u32) -> Vec<u8> {
    let mut v = vec![9, 16, 0, 0];
    v.extend_from_slice(&x2apic_id.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&uid.to_le_bytes());
    v
}

pub fn x2apic_nmi(uid: u32, lint: u8) -> Vec<u8> {
    let mut v = vec![0xA, 12, 0, 0];
    v.extend_from_slice(&uid.to_le_bytes());
    v.extend_from_slice(&[lint, 0, 0, 0]);
    v
}

/// A 64-byte FACS.
pub fn facs() -> Vec<u8> {
    let mut v = vec![0u8; 64];
    v[..4].copy_from_slice(b"FACS");
    put32(&mut v, 4, 64);
    v[32] = 2;
    v
}

/// Values for a hand-built FADT; unset fields are zero.
#[derive(Default, Clone, Copy)]
pub struct FadtSpec {
    pub facs: u32,
    pub dsdt: u32,
    pub sci_int: u16,
    pub smi_cmd: u32,
    pub acpi_enable: u8,
    pub pm1a_evt: u32,
    pub pm1a_cnt: u32,
    pub pm1b_cnt: u32,
    pub pm_tmr: u32,
    pub gpe0: u32,
    pub iapc_boot_arch: u16,
    pub flags: u32,
    pub reset: Option<(Gas, u8)>,
    pub x_facs: u64,
    pub x_dsdt: u64,
    pub x_pm1a_cnt: Option<Gas>,
    pub x_pm_tmr: Option<Gas>,
    pub sleep_control: Option<Gas>,
}

fn put_gas(v: &mut [u8], off: usize, gas: Gas) {
    v[off] = match gas.space {
        AddressSpace::SystemMemory => 0,
        AddressSpace::SystemIo => 1,
        AddressSpace::PciConfig => 2,
        AddressSpace::Other(id) => id,
    };
    v[off + 1] = gas.bit_width;
    v[off + 2] = gas.bit_offset;
    v[off + 3] = gas.access_size;
    put64(v, off + 4, gas.address);
}

/// The FADT fields at their ACPI 6.5 offsets, 276 bytes; callers truncate.
fn fadt_body(s: &FadtSpec) -> Vec<u8> {
    let mut v = vec![0u8; 276];
    put32(&mut v, 36, s.facs);
    put32(&mut v, 40, s.dsdt);
    v[44] = 1; // INT_MODEL (ACPI 1.0)
    put16(&mut v, 46, s.sci_int);
    put32(&mut v, 48, s.smi_cmd);
    v[52] = s.acpi_enable;
    v[53] = s.acpi_enable.wrapping_sub(1);
    put32(&mut v, 56, s.pm1a_evt);
    put32(&mut v, 64, s.pm1a_cnt);
    put32(&mut v, 68, s.pm1b_cnt);
    put32(&mut v, 76, s.pm_tmr);
    put32(&mut v, 80, s.gpe0);
    v[88] = 4; // PM1_EVT_LEN
    v[89] = 2; // PM1_CNT_LEN
    v[91] = 4; // PM_TMR_LEN
    v[92] = if s.gpe0 != 0 { 4 } else { 0 };
    put16(&mut v, 96, 0x0FFF);
    put16(&mut v, 98, 0x0FFF);
    v[108] = 0x32; // CENTURY
    put16(&mut v, 109, s.iapc_boot_arch);
    put32(&mut v, 112, s.flags);
    if let Some((gas, value)) = s.reset {
        put_gas(&mut v, 116, gas);
        v[128] = value;
    }
    put64(&mut v, 132, s.x_facs);
    put64(&mut v, 140, s.x_dsdt);
    if let Some(gas) = s.x_pm1a_cnt {
        put_gas(&mut v, 172, gas);
    }
    if let Some(gas) = s.x_pm_tmr {
        put_gas(&mut v, 208, gas);
    }
    if let Some(gas) = s.sleep_control {
        put_gas(&mut v, 244, gas);
    }
    v
}

fn fadt_image(s: &FadtSpec, revision: u8, len: usize) -> Vec<u8> {
    let mut body = fadt_body(s);
    body.truncate(len);
    sdt(b"FACP", revision, &body[36..])
}

/// An ACPI 1.0 FADT: revision 1, 116 bytes.
pub fn fadt_v1(s: FadtSpec) -> Vec<u8> {
    fadt_image(&s, 1, 116)
}

/// An ACPI 5.0 FADT: revision 5, 268 bytes.
pub fn fadt_v5(s: FadtSpec) -> Vec<u8> {
    fadt_image(&s, 5, 268)
}
