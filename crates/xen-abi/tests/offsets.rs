//! Cross-checks every line of `data/xen-struct-offsets.txt` (sizes and field offsets that gcc
//! gives for Xen's public headers on x86-64) against the Rust types.
//!
//! Every structure in the file must either have an entry in [`table`] or be listed in
//! [`NOT_MODELLED`] with the reason. Every field line must name a field of the table entry, and
//! every table entry and field must be used by the file, so neither side can drift.

use std::collections::{BTreeMap, BTreeSet};
use std::mem::{offset_of, size_of};
use std::string::String;
use std::vec::Vec;

use xen_abi::console_io::XenconsInterface;
use xen_abi::event_channel::*;
use xen_abi::grant_table::*;
use xen_abi::hvm::{XenHvmEvtchnUpcallVector, XenHvmParam};
use xen_abi::io::blkif::{BlkifRequest, BlkifRequestSegment, BlkifResponse, BlkifSring, BlkifSringEntry};
use xen_abi::io::netif::*;
use xen_abi::memory::*;
use xen_abi::physdev::*;
use xen_abi::platform::XenPlatformOp;
use xen_abi::sched::{SchedPoll, SchedShutdown};
use xen_abi::shared_info::*;
use xen_abi::start_info::{HvmMemmapTableEntry, HvmModlistEntry, HvmStartInfo};
use xen_abi::vcpu::*;
use xen_abi::version::XenFeatureInfo;
use xen_abi::xenstore::{XenstoreDomainInterface, XsdSockmsg};

const OFFSETS: &str = include_str!("data/xen-struct-offsets.txt");

/// Structures in the file that the crate deliberately does not model.
const NOT_MODELLED: &[(&str, &str)] =
    &[("start_info", "the PV start of day; keel runs HVM/PVH guests only, which get hvm_start_info")];

/// A field as the Rust type lays it out, under its C name.
struct Field {
    c: &'static str,
    offset: usize,
    size: usize,
}

/// A structure as the Rust type lays it out, under its C name.
struct Struct {
    c: &'static str,
    size: usize,
    fields: Vec<Field>,
}

fn size_of_field<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

macro_rules! field {
    ($ty:ty, $c:ident) => {
        field!($ty, $c => $c)
    };
    ($ty:ty, $c:ident => $f:ident) => {
        Field { c: stringify!($c), offset: offset_of!($ty, $f), size: size_of_field(|s: &$ty| &s.$f) }
    };
}

macro_rules! layout {
    ($c:ident => $ty:ty { $($fc:ident $(=> $f:ident)?),* $(,)? }) => {
        Struct { c: stringify!($c), size: size_of::<$ty>(), fields: vec![$(field!($ty, $fc $(=> $f)?)),*] }
    };
}

/// A one-page ring type checked against C's `ring[1]` declaration: the C structure is the
/// header plus one entry, so its size is the entry offset plus one entry, and its `ring` field
/// (listed after `;` when the file has it) is one entry long.
macro_rules! sring_layout {
    ($c:ident => $ty:ty, $entry:ty { $($fc:ident),* $(; $ring:ident)? }) => {{
        let entry = size_of::<$entry>();
        #[allow(unused_mut)]
        let mut fields = vec![$(field!($ty, $fc)),*];
        $(fields.push(Field { c: stringify!($ring), offset: offset_of!($ty, $ring), size: entry });)?
        Struct { c: stringify!($c), size: offset_of!($ty, ring) + entry, fields }
    }};
}

/// The Rust side of every structure the file describes.
fn table() -> Vec<Struct> {
    vec![
        layout!(vcpu_time_info => VcpuTimeInfo {
            version, tsc_timestamp, system_time, tsc_to_system_mul, tsc_shift, flags,
        }),
        layout!(arch_vcpu_info => ArchVcpuInfo { cr2, pad }),
        layout!(vcpu_info => VcpuInfo { evtchn_upcall_pending, evtchn_upcall_mask, evtchn_pending_sel, arch, time }),
        layout!(arch_shared_info => ArchSharedInfo {
            max_pfn, pfn_to_mfn_frame_list_list, nmi_reason, p2m_cr3, p2m_vaddr, p2m_generation,
        }),
        layout!(shared_info => SharedInfo {
            vcpu_info, evtchn_pending, evtchn_mask, wc_version, wc_sec, wc_nsec, wc_sec_hi, arch,
        }),
        layout!(xen_add_to_physmap => XenAddToPhysmap { domid, size, space, idx, gpfn }),
        layout!(xen_memory_map => XenMemoryMap { nr_entries, buffer }),
        layout!(xen_memory_reservation => XenMemoryReservation {
            extent_start, nr_extents, extent_order, mem_flags, domid,
        }),
        layout!(vcpu_register_vcpu_info => VcpuRegisterVcpuInfo { mfn, offset, rsvd }),
        layout!(vcpu_set_singleshot_timer => VcpuSetSingleshotTimer { timeout_abs_ns, flags }),
        layout!(vcpu_set_periodic_timer => VcpuSetPeriodicTimer {}),
        layout!(vcpu_register_time_memory_area => VcpuRegisterTimeMemoryArea {}),
        layout!(vcpu_register_runstate_memory_area => VcpuRegisterRunstateMemoryArea {}),
        layout!(vcpu_runstate_info => VcpuRunstateInfo { state, state_entry_time, time }),
        layout!(evtchn_alloc_unbound => EvtchnAllocUnbound { dom, remote_dom, port }),
        layout!(evtchn_bind_interdomain => EvtchnBindInterdomain { remote_dom, remote_port, local_port }),
        layout!(evtchn_bind_virq => EvtchnBindVirq { virq, vcpu, port }),
        layout!(evtchn_bind_ipi => EvtchnBindIpi {}),
        layout!(evtchn_close => EvtchnClose {}),
        layout!(evtchn_send => EvtchnSend {}),
        layout!(evtchn_status => EvtchnStatus { status, vcpu, u }),
        layout!(evtchn_bind_vcpu => EvtchnBindVcpu {}),
        layout!(evtchn_unmask => EvtchnUnmask {}),
        layout!(evtchn_init_control => EvtchnInitControl { control_gfn, offset, vcpu, link_bits }),
        layout!(evtchn_set_priority => EvtchnSetPriority {}),
        layout!(gnttab_setup_table => GnttabSetupTable { dom, nr_frames, status, frame_list }),
        layout!(gnttab_query_size => GnttabQuerySize { dom, nr_frames, max_nr_frames, status }),
        layout!(gnttab_set_version => GnttabSetVersion {}),
        layout!(grant_entry_v1 => GrantEntryV1 { flags, domid, frame }),
        layout!(gnttab_map_grant_ref => GnttabMapGrantRef {
            host_addr, flags, ref => ref_, dom, status, handle, dev_bus_addr,
        }),
        layout!(gnttab_copy => GnttabCopy {}),
        layout!(sched_shutdown => SchedShutdown {}),
        layout!(sched_poll => SchedPoll { ports, nr_ports, timeout }),
        layout!(xen_feature_info => XenFeatureInfo {}),
        layout!(xen_hvm_param => XenHvmParam { domid, index, value }),
        layout!(xen_hvm_evtchn_upcall_vector => XenHvmEvtchnUpcallVector {}),
        layout!(vcpu_hvm_context => VcpuHvmContext { mode, cpu_regs }),
        layout!(vcpu_hvm_x86_32 => VcpuHvmX86_32 {
            eax, eip, eflags, cr0, cr3, cr4, efer, cs_base, cs_limit, cs_ar, tr_ar,
        }),
        layout!(vcpu_hvm_x86_64 => VcpuHvmX86_64 { rax, rip, rflags, cr0, cr3, cr4, efer }),
        layout!(hvm_start_info => HvmStartInfo {
            magic, version, flags, nr_modules, modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr,
            memmap_entries, reserved,
        }),
        layout!(hvm_modlist_entry => HvmModlistEntry {}),
        layout!(hvm_memmap_table_entry => HvmMemmapTableEntry {}),
        layout!(xsd_sockmsg => XsdSockmsg { type => type_, req_id, tx_id, len }),
        layout!(xenstore_domain_interface => XenstoreDomainInterface {
            req, rsp, req_cons, req_prod, rsp_cons, rsp_prod, server_features, connection, error, evtchn_port,
        }),
        layout!(xencons_interface => XenconsInterface { in => in_, out, in_cons, in_prod, out_cons, out_prod }),
        layout!(blkif_request => BlkifRequest { operation, nr_segments, handle, id, sector_number, seg }),
        layout!(blkif_request_segment => BlkifRequestSegment { gref, first_sect, last_sect }),
        layout!(blkif_response => BlkifResponse { id, operation, status }),
        sring_layout!(blkif_sring => BlkifSring, BlkifSringEntry { rsp_event; ring }),
        layout!(netif_tx_request => NetifTxRequest { gref, offset, flags, id, size }),
        layout!(netif_tx_response => NetifTxResponse {}),
        layout!(netif_rx_request => NetifRxRequest { id, gref }),
        layout!(netif_rx_response => NetifRxResponse { id, offset, flags, status }),
        layout!(netif_extra_info => NetifExtraInfo {}),
        sring_layout!(netif_tx_sring => NetifTxSring, NetifTxSringEntry { ; ring }),
        sring_layout!(netif_rx_sring => NetifRxSring, NetifRxSringEntry {}),
        layout!(physdev_map_pirq => PhysdevMapPirq {}),
        layout!(physdev_pci_device_add => PhysdevPciDeviceAdd {}),
        layout!(physdev_setup_gsi => PhysdevSetupGsi {}),
        layout!(physdev_pci_mmcfg_reserved => PhysdevPciMmcfgReserved {}),
        layout!(xen_platform_op => XenPlatformOp { cmd, interface_version, u }),
        layout!(xen_add_to_physmap_batch => XenAddToPhysmapBatch {
            domid, space, size, u => foreign_domid, idxs, gpfns, errs,
        }),
        layout!(xen_remove_from_physmap => XenRemoveFromPhysmap {}),
    ]
}

/// Constants the file records, as the crate defines them.
fn constants() -> BTreeMap<&'static str, u64> {
    BTreeMap::from([("VCPU_HVM_MODE_32B", VCPU_HVM_MODE_32B as u64), ("VCPU_HVM_MODE_64B", VCPU_HVM_MODE_64B as u64)])
}

/// One line of the file.
#[derive(Debug, PartialEq)]
enum Line<'a> {
    Size { name: &'a str, size: usize },
    Field { name: &'a str, field: &'a str, offset: usize, size: usize },
    Constants(Vec<(&'a str, u64)>),
    Blank,
}

fn parse_number(s: &str) -> Result<usize, String> {
    s.trim().parse().map_err(|e| format!("bad number {s:?}: {e}"))
}

/// Parses `sizeof(struct NAME) = N`, `NAME FIELD off= X size=Y` (any spacing) or a line of
/// `NAME=VALUE` constants.
fn parse_line(line: &str) -> Result<Line<'_>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(Line::Blank);
    }
    if let Some(rest) = line.strip_prefix("sizeof(struct ") {
        let (name, size) = rest.split_once(") =").ok_or("sizeof line without `) =`")?;
        return Ok(Line::Size { name: name.trim(), size: parse_number(size)? });
    }
    let mut words = line.split_whitespace();
    let first = words.next().ok_or("empty line")?;
    if first.contains('=') {
        let constants = line
            .split_whitespace()
            .map(|word| {
                let (name, value) = word.split_once('=').ok_or_else(|| format!("bad constant {word:?}"))?;
                Ok((name, parse_number(value)? as u64))
            })
            .collect::<Result<_, String>>()?;
        return Ok(Line::Constants(constants));
    }
    let field = words.next().ok_or("field line without a field name")?;
    let rest: String = words.collect();
    let rest = rest.strip_prefix("off=").ok_or("field line without off=")?;
    let (offset, size) = rest.split_once("size=").ok_or("field line without size=")?;
    Ok(Line::Field { name: first, field, offset: parse_number(offset)?, size: parse_number(size)? })
}

#[test]
fn every_line_of_the_offsets_file_matches_the_rust_types() {
    let table = table();
    let by_name: BTreeMap<&str, &Struct> = table.iter().map(|s| (s.c, s)).collect();
    assert_eq!(by_name.len(), table.len(), "a structure is in the table twice");
    let not_modelled: BTreeMap<&str, &str> = NOT_MODELLED.iter().copied().collect();
    let constants = constants();

    let mut failures: Vec<String> = Vec::new();
    let mut seen_structs = BTreeSet::new();
    let mut seen_fields = BTreeSet::new();
    let mut seen_constants = BTreeSet::new();
    let mut fail = |line_no: usize, msg: String| failures.push(format!("line {}: {msg}", line_no + 1));

    for (line_no, text) in OFFSETS.lines().enumerate() {
        match parse_line(text) {
            Err(e) => fail(line_no, format!("{e}: {text:?}")),
            Ok(Line::Blank) => {}
            Ok(Line::Size { name, size }) => {
                seen_structs.insert(name);
                match (by_name.get(name), not_modelled.contains_key(name)) {
                    (Some(s), _) if s.size != size => {
                        fail(line_no, format!("sizeof {name}: C {size}, Rust {}", s.size))
                    }
                    (Some(_), _) | (None, true) => {}
                    (None, false) => fail(line_no, format!("{name} is neither modelled nor listed in NOT_MODELLED")),
                }
            }
            Ok(Line::Field { name, field, offset, size }) => {
                seen_structs.insert(name);
                if not_modelled.contains_key(name) {
                    continue;
                }
                let Some(s) = by_name.get(name) else {
                    fail(line_no, format!("{name} is neither modelled nor listed in NOT_MODELLED"));
                    continue;
                };
                let Some(f) = s.fields.iter().find(|f| f.c == field) else {
                    fail(line_no, format!("{name}.{field} is not in the table"));
                    continue;
                };
                seen_fields.insert((name, field));
                if f.offset != offset || f.size != size {
                    fail(
                        line_no,
                        format!("{name}.{field}: C off {offset} size {size}, Rust off {} size {}", f.offset, f.size),
                    );
                }
            }
            Ok(Line::Constants(list)) => {
                for (name, value) in list {
                    seen_constants.insert(name);
                    match constants.get(name) {
                        Some(&v) if v == value => {}
                        Some(&v) => fail(line_no, format!("{name}: C {value}, Rust {v}")),
                        None => fail(line_no, format!("constant {name} is not checked")),
                    }
                }
            }
        }
    }

    // The other direction: nothing in the table or the exclusion list is stale.
    for s in &table {
        if !seen_structs.contains(s.c) {
            failures.push(format!("{} is in the table but not in the file", s.c));
        }
        for f in &s.fields {
            if !seen_fields.contains(&(s.c, f.c)) {
                failures.push(format!("{}.{} is in the table but not in the file", s.c, f.c));
            }
        }
    }
    for (name, _) in NOT_MODELLED {
        if !seen_structs.contains(name) || by_name.contains_key(name) {
            failures.push(format!("NOT_MODELLED entry {name} is stale"));
        }
    }
    for name in constants.keys() {
        if !seen_constants.contains(name) {
            failures.push(format!("constant {name} is not in the file"));
        }
    }

    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    // Guard against a file that silently parsed into nothing.
    assert!(seen_structs.len() >= table.len() + NOT_MODELLED.len());
}

#[test]
fn parser_reads_every_line_form() {
    assert_eq!(parse_line("sizeof(struct vcpu_info) = 64"), Ok(Line::Size { name: "vcpu_info", size: 64 }));
    assert_eq!(
        parse_line("shared_info     evtchn_mask    off=2560 size=512"),
        Ok(Line::Field { name: "shared_info", field: "evtchn_mask", offset: 2560, size: 512 })
    );
    assert_eq!(
        parse_line("vcpu_info   evtchn_upcall_pending   off=  0 size=1"),
        Ok(Line::Field { name: "vcpu_info", field: "evtchn_upcall_pending", offset: 0, size: 1 })
    );
    assert_eq!(parse_line("A=0 B=1"), Ok(Line::Constants(vec![("A", 0), ("B", 1)])));
    assert_eq!(parse_line("   "), Ok(Line::Blank));
}

#[test]
fn parser_rejects_malformed_lines() {
    for bad in [
        "sizeof(struct x = 4",
        "sizeof(struct x) = four",
        "x y",
        "x y off=1",
        "x y size=1 off=2",
        "x y off=a size=1",
        "A=1 B",
        "A=x",
    ] {
        assert!(parse_line(bad).is_err(), "{bad:?} parsed");
    }
}
