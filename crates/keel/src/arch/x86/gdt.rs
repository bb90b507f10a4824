//! Each CPU's global descriptor table and task state segment.
//!
//! Selectors match the boot GDT (`boot.rs`), so switching tables changes no segment: 0x08 is
//! the 64-bit code segment, 0x10 data, 0x18 the 16-byte TSS descriptor. The TSS only carries
//! the interrupt-stack-table pointers: keel has no ring 3, so no privilege-change stacks.

use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, SegmentSelector};
use x86_64::{PrivilegeLevel, VirtAddr};

use super::percpu::{ist, PerCpu};

/// Kernel code segment selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data segment selector.
pub const KERNEL_DS: u16 = 0x10;
/// TSS selector.
pub const TSS_SEL: u16 = 0x18;

/// Fill `percpu`'s TSS and GDT (before it is published).
pub fn build(percpu: &mut PerCpu) {
    for i in 0..ist::COUNT {
        percpu.tss.interrupt_stack_table[i] = VirtAddr::new(percpu.ist_stacks[i].top);
    }
    percpu.tss.privilege_stack_table[0] = VirtAddr::new(percpu.stack.top);
    let cs = percpu.gdt.append(Descriptor::kernel_code_segment());
    let ds = percpu.gdt.append(Descriptor::kernel_data_segment());
    // SAFETY: the TSS lives in the same leaked `PerCpu` as the GDT, so it outlives every use
    // of the descriptor.
    let tss = percpu.gdt.append(unsafe { Descriptor::tss_segment_unchecked(&percpu.tss) });
    debug_assert_eq!((cs.0, ds.0, tss.0), (KERNEL_CS, KERNEL_DS, TSS_SEL));
}

/// Load `percpu`'s GDT and TSS on the current CPU.
pub fn load(percpu: &'static PerCpu) {
    percpu.gdt.load();
    // SAFETY: the selectors name the code, data and TSS descriptors `build` put in this GDT.
    unsafe {
        CS::set_reg(SegmentSelector::new(KERNEL_CS >> 3, PrivilegeLevel::Ring0));
        let ds = SegmentSelector::new(KERNEL_DS >> 3, PrivilegeLevel::Ring0);
        SS::set_reg(ds);
        DS::set_reg(ds);
        ES::set_reg(ds);
        load_tss(SegmentSelector::new(TSS_SEL >> 3, PrivilegeLevel::Ring0));
    }
}
