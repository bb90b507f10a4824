//! `multicall` (13), `physdev_op` (33) and `vm_assist` (21) as a PVH guest meets them.
//!
//! Xen 4.17: a multicall runs every entry and writes each result (an unknown or PV-only
//! hypercall is `-ENOSYS` there, a nested multicall `-EINVAL`) and fails as a whole only when
//! the list cannot be read (`-EFAULT`). A PVH domain has no PIRQs, so the PIRQ and PV
//! `physdev_op`s are `-ENOSYS`; the hardware domain reaches `pci_mmcfg_reserved` (which checks
//! its flags, `-EINVAL`, and knows only the host's MCFG segments, `-ENODEV`), others get
//! `-ENOSYS`. `vm_assist` knows only `VMASST_TYPE_runstate_update_flag` for HVM (`-EINVAL` for
//! the PV types), and commands 0 and 1 (`-ENOSYS`).

use xen_abi::event_channel::{EvtchnStatus, EVTCHNOP_STATUS, EVTCHNSTAT_CLOSED};
use xen_abi::multicall::MulticallEntry;
use xen_abi::physdev::*;
use xen_abi::vm_assist::*;
use xen_abi::DomId;

use super::fw::{ensure, nr, num, raw, EFAULT, EINVAL, ENOSYS, R, UNMAPPED};
use super::Ctx;
use crate::checks::Tap;

const ENODEV: i64 = -19;

fn entry(op: u64, args: [u64; 6]) -> MulticallEntry {
    MulticallEntry { op, result: 0x7777, args }
}

fn multicall(list: &mut [MulticallEntry]) -> i64 {
    // SAFETY: the entries' own pointer arguments are set up by the callers to point at live
    // locals (or are null); the list itself is a valid, exclusively borrowed array.
    unsafe { raw(nr::MULTICALL, [list.as_mut_ptr() as u64, list.len() as u64, 0, 0, 0]) }
}

fn several() -> R {
    let version = num(nr::XEN_VERSION, [0, 0, 0, 0, 0]);
    let mut status = EvtchnStatus { dom: DomId::SELF, ..Default::default() };
    status.status = 0x77;
    let mut list = [
        entry(nr::XEN_VERSION, [0; 6]),
        entry(nr::SCHED_OP, [0; 6]),
        entry(nr::EVENT_CHANNEL_OP, [EVTCHNOP_STATUS as u64, &mut status as *mut EvtchnStatus as u64, 0, 0, 0, 0]),
    ];
    let rc = multicall(&mut list);
    ensure!(rc == 0, "rc {rc}");
    let r: [i64; 3] = [list[0].result_signed(), list[1].result_signed(), list[2].result_signed()];
    ensure!(r == [version, 0, 0], "results {r:?}, want [{version}, 0, 0]");
    ensure!(status.status == EVTCHNSTAT_CLOSED, "the status entry wrote status {}", status.status);
    Ok(())
}

fn invalid_entries() -> R {
    let mut inner = [entry(nr::XEN_VERSION, [0; 6])];
    let mut list = [
        entry(nr::XEN_VERSION, [7, 0, 0, 0, 0, 0]), // XENVER_pagesize
        entry(60, [0; 6]),
        entry(1, [0; 6]), // mmu_update: PV only
        entry(nr::MULTICALL, [inner.as_mut_ptr() as u64, 1, 0, 0, 0, 0]),
        entry(nr::XEN_VERSION, [7, 0, 0, 0, 0, 0]),
    ];
    let rc = multicall(&mut list);
    ensure!(rc == 0, "rc {rc}");
    let r: [i64; 5] = core::array::from_fn(|i| list[i].result_signed());
    ensure!(
        r == [4096, ENOSYS, ENOSYS, EINVAL, 4096],
        "results {r:?}, want [4096, -ENOSYS (unknown), -ENOSYS (PV only), -EINVAL (nested), 4096]"
    );
    ensure!(inner[0].result == 0x7777, "the nested multicall ran its entry");
    Ok(())
}

fn edge_cases() -> R {
    let rc = multicall(&mut []);
    ensure!(rc == 0, "no entries: rc {rc}");
    let rc = num(nr::MULTICALL, [UNMAPPED, 1, 0, 0, 0]);
    ensure!(rc == EFAULT, "an unmapped list: rc {rc}, want -EFAULT");
    Ok(())
}

fn physdev_enosys() -> R {
    for (what, cmd) in [
        ("map_pirq", PHYSDEVOP_MAP_PIRQ),
        ("unmap_pirq", PHYSDEVOP_UNMAP_PIRQ),
        ("eoi", PHYSDEVOP_EOI),
        ("irq_status_query", PHYSDEVOP_IRQ_STATUS_QUERY),
        ("get_free_pirq", PHYSDEVOP_GET_FREE_PIRQ),
        ("set_iopl", PHYSDEVOP_SET_IOPL),
        ("set_iobitmap", PHYSDEVOP_SET_IOBITMAP),
        ("apic_read", PHYSDEVOP_APIC_READ),
        ("alloc_irq_vector", PHYSDEVOP_ALLOC_IRQ_VECTOR),
        ("manage_pci_add", PHYSDEVOP_MANAGE_PCI_ADD),
        ("restore_msi", PHYSDEVOP_RESTORE_MSI),
        ("setup_gsi", PHYSDEVOP_SETUP_GSI),
        ("pirq_eoi_gmfn_v2", PHYSDEVOP_PIRQ_EOI_GMFN_V2),
        ("op 100", 100),
    ] {
        let rc = num(nr::PHYSDEV_OP, [cmd as u64, UNMAPPED, 0, 0, 0]);
        ensure!(rc == ENOSYS, "{what}: rc {rc}, want -ENOSYS for a PVH domain");
    }
    Ok(())
}

fn physdev_mmcfg(ctx: &Ctx) -> R {
    let call = |segment: u16, flags: u32| {
        let mut m = PhysdevPciMmcfgReserved { address: 0, segment, start_bus: 0, end_bus: 0, flags };
        // SAFETY: a valid, exclusively borrowed argument without pointers.
        unsafe { raw(nr::PHYSDEV_OP, [PHYSDEVOP_PCI_MMCFG_RESERVED as u64, &mut m as *mut _ as u64, 0, 0, 0]) }
    };
    if !ctx.initdomain {
        let rc = call(0xffff, 0);
        ensure!(rc == ENOSYS, "pci_mmcfg_reserved from a domU: rc {rc}, want -ENOSYS");
        return Ok(());
    }
    let rc = call(0, 2);
    ensure!(rc == EINVAL, "unknown flags: rc {rc}, want -EINVAL");
    let rc = call(0xffff, 0);
    ensure!(rc == ENODEV, "segment 0xffff (no such MCFG entry): rc {rc}, want -ENODEV");
    Ok(())
}

fn vm_assist(cmd: u32, kind: u32) -> i64 {
    num(nr::VM_ASSIST, [cmd as u64, kind as u64, 0, 0, 0])
}

fn vmassist_runstate_flag() -> R {
    let rc = vm_assist(VMASST_CMD_ENABLE, VMASST_TYPE_RUNSTATE_UPDATE_FLAG);
    ensure!(rc == 0, "enable runstate_update_flag: rc {rc}");
    let rc = vm_assist(VMASST_CMD_DISABLE, VMASST_TYPE_RUNSTATE_UPDATE_FLAG);
    ensure!(rc == 0, "disable runstate_update_flag: rc {rc}");
    Ok(())
}

fn vmassist_errors() -> R {
    for (what, kind) in [
        ("4gb_segments", VMASST_TYPE_4GB_SEGMENTS),
        ("4gb_segments_notify", VMASST_TYPE_4GB_SEGMENTS_NOTIFY),
        ("writable_pagetables", VMASST_TYPE_WRITABLE_PAGETABLES),
        ("pae_extended_cr3", VMASST_TYPE_PAE_EXTENDED_CR3),
        ("architectural_iopl", VMASST_TYPE_ARCHITECTURAL_IOPL),
        ("m2p_strict", VMASST_TYPE_M2P_STRICT),
        ("type 64", 64),
    ] {
        let rc = vm_assist(VMASST_CMD_ENABLE, kind);
        ensure!(rc == EINVAL, "enable {what}: rc {rc}, want -EINVAL for HVM");
    }
    let rc = vm_assist(2, VMASST_TYPE_RUNSTATE_UPDATE_FLAG);
    ensure!(rc == ENOSYS, "command 2: rc {rc}, want -ENOSYS");
    Ok(())
}

/// The `mc-`, `physdev-` and `vmassist-` checks.
pub fn run(t: &mut Tap, ctx: &Ctx) {
    t.run("mc-several", several());
    t.run("mc-invalid-entries", invalid_entries());
    t.run("mc-edge-cases", edge_cases());
    t.run("physdev-enosys", physdev_enosys());
    t.run("physdev-pci-mmcfg-reserved", physdev_mmcfg(ctx));
    t.run("vmassist-runstate-update-flag", vmassist_runstate_flag());
    t.run("vmassist-errors", vmassist_errors());
}
