//! `event_channel_op` (hypercall 32): event channels, VIRQs and the FIFO ABI
//! (`public/event_channel.h`, `public/xen.h`).
//!
//! Called as `event_channel_op(cmd, arg)`. A port is a per-domain number; port 0 is never
//! valid. With the 2-level ABI the pending and mask bits live in the shared-info page
//! ([`two_level_position`]); with the FIFO ABI they live in guest-provided event-word pages.

use core::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::domid::DomId;
use crate::memory::XenPfn;

/// `evtchn_port_t`: an event-channel port number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(transparent)]
pub struct EvtchnPort(pub u32);

impl fmt::Debug for EvtchnPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EvtchnPort({})", self.0)
    }
}

impl fmt::Display for EvtchnPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Connect to a port another domain allocated ([`EvtchnBindInterdomain`]).
pub const EVTCHNOP_BIND_INTERDOMAIN: u32 = 0;
/// Bind a virtual IRQ ([`EvtchnBindVirq`]).
pub const EVTCHNOP_BIND_VIRQ: u32 = 1;
/// Bind a physical IRQ ([`EvtchnBindPirq`]).
pub const EVTCHNOP_BIND_PIRQ: u32 = 2;
/// Close a port ([`EvtchnClose`]).
pub const EVTCHNOP_CLOSE: u32 = 3;
/// Notify the other end ([`EvtchnSend`]).
pub const EVTCHNOP_SEND: u32 = 4;
/// Query a port ([`EvtchnStatus`]).
pub const EVTCHNOP_STATUS: u32 = 5;
/// Allocate a port for another domain to bind to ([`EvtchnAllocUnbound`]).
pub const EVTCHNOP_ALLOC_UNBOUND: u32 = 6;
/// Allocate an IPI port ([`EvtchnBindIpi`]).
pub const EVTCHNOP_BIND_IPI: u32 = 7;
/// Change which vCPU a port notifies ([`EvtchnBindVcpu`]).
pub const EVTCHNOP_BIND_VCPU: u32 = 8;
/// Unmask a port and redeliver it if pending ([`EvtchnUnmask`]).
pub const EVTCHNOP_UNMASK: u32 = 9;
/// Close all of a domain's ports ([`EvtchnReset`]).
pub const EVTCHNOP_RESET: u32 = 10;
/// Switch to the FIFO ABI and register a control block ([`EvtchnInitControl`]).
pub const EVTCHNOP_INIT_CONTROL: u32 = 11;
/// Add a page of FIFO event words ([`EvtchnExpandArray`]).
pub const EVTCHNOP_EXPAND_ARRAY: u32 = 12;
/// Set a port's FIFO priority ([`EvtchnSetPriority`]).
pub const EVTCHNOP_SET_PRIORITY: u32 = 13;
/// Xen-internal continuation of `EVTCHNOP_reset` (not for guests).
pub const EVTCHNOP_RESET_CONT: u32 = 14;

/// `EVTCHN_2L_NR_CHANNELS` on x86-64 (also `NR_EVENT_CHANNELS`): 64 words of 64 bits.
pub const EVTCHN_2L_NR_CHANNELS: u32 = 64 * 64;
/// `NR_EVENT_CHANNELS`: ports of the 2-level ABI.
pub const NR_EVENT_CHANNELS: u32 = EVTCHN_2L_NR_CHANNELS;

/// Where port `port` lives in the 2-level bitmaps of the shared-info page: (word index, bit
/// in word), or `None` if the 2-level ABI has no such port.
pub const fn two_level_position(port: EvtchnPort) -> Option<(usize, u32)> {
    if port.0 >= EVTCHN_2L_NR_CHANNELS {
        None
    } else {
        Some(((port.0 / 64) as usize, port.0 % 64))
    }
}

/// Per-vCPU timer (`VIRQ_TIMER`).
pub const VIRQ_TIMER: u32 = 0;
/// Per-vCPU: dump debug state.
pub const VIRQ_DEBUG: u32 = 1;
/// Global: bytes received on the hypervisor console (dom0).
pub const VIRQ_CONSOLE: u32 = 2;
/// Global: a domain hit an exceptional event (dom0).
pub const VIRQ_DOM_EXC: u32 = 3;
/// Global: trace buffer records available.
pub const VIRQ_TBUF: u32 = 4;
/// Global: a domain paused for debugging.
pub const VIRQ_DEBUGGER: u32 = 6;
/// Per-vCPU: profiling sample available.
pub const VIRQ_XENOPROF: u32 = 7;
/// Global: bytes received on the console ring.
pub const VIRQ_CON_RING: u32 = 8;
/// Global: a physical CPU changed state.
pub const VIRQ_PCPU_STATE: u32 = 9;
/// Global: a memory event occurred.
pub const VIRQ_MEM_EVENT: u32 = 10;
/// Argo message notification.
pub const VIRQ_ARGO: u32 = 11;
/// Global: the hypervisor is low on memory.
pub const VIRQ_ENOMEM: u32 = 12;
/// Per-vCPU: PMU interrupt.
pub const VIRQ_XENPMU: u32 = 13;
/// Architecture-specific VIRQ 0 (x86: machine check, `VIRQ_MCA`).
pub const VIRQ_ARCH_0: u32 = 16;
/// Architecture-specific VIRQ 7 (the last).
pub const VIRQ_ARCH_7: u32 = 23;
/// `NR_VIRQS`.
pub const NR_VIRQS: u32 = 24;

/// True for the VIRQs Xen binds per vCPU (a vCPU may bind each once); the rest are global.
pub const fn virq_is_per_vcpu(virq: u32) -> bool {
    matches!(virq, VIRQ_TIMER | VIRQ_DEBUG | VIRQ_XENOPROF | VIRQ_XENPMU)
}

/// `EVTCHNOP_status` result: the port is free.
pub const EVTCHNSTAT_CLOSED: u32 = 0;
/// Allocated, waiting for a remote domain to bind.
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
/// Connected to a remote port.
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
/// Bound to a physical IRQ.
pub const EVTCHNSTAT_PIRQ: u32 = 3;
/// Bound to a virtual IRQ.
pub const EVTCHNSTAT_VIRQ: u32 = 4;
/// Bound to an IPI.
pub const EVTCHNSTAT_IPI: u32 = 5;

/// `BIND_PIRQ__WILL_SHARE`: the PIRQ may be shared with other domains.
pub const BIND_PIRQ_WILL_SHARE: u32 = 1;

/// `struct evtchn_alloc_unbound`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnAllocUnbound {
    /// Domain to allocate in (usually [`DomId::SELF`]).
    pub dom: DomId,
    /// Domain allowed to bind the other end.
    pub remote_dom: DomId,
    /// OUT: the new port.
    pub port: EvtchnPort,
}

/// `struct evtchn_bind_interdomain`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnBindInterdomain {
    /// Domain owning the unbound port.
    pub remote_dom: DomId,
    /// Padding.
    pub _pad0: u16,
    /// That domain's unbound port.
    pub remote_port: EvtchnPort,
    /// OUT: the caller's new port.
    pub local_port: EvtchnPort,
}

/// `struct evtchn_bind_virq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnBindVirq {
    /// `VIRQ_*`.
    pub virq: u32,
    /// vCPU to notify.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: EvtchnPort,
}

/// `struct evtchn_bind_pirq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnBindPirq {
    /// Physical IRQ.
    pub pirq: u32,
    /// [`BIND_PIRQ_WILL_SHARE`] or 0.
    pub flags: u32,
    /// OUT: the new port.
    pub port: EvtchnPort,
}

/// `struct evtchn_bind_ipi`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnBindIpi {
    /// vCPU to notify.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: EvtchnPort,
}

/// `struct evtchn_close`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnClose {
    /// Port to close.
    pub port: EvtchnPort,
}

/// `struct evtchn_send`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnSend {
    /// Local port whose other end to notify.
    pub port: EvtchnPort,
}

/// `struct evtchn_status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnStatus {
    /// Domain to query (usually [`DomId::SELF`]).
    pub dom: DomId,
    /// Padding.
    pub _pad0: u16,
    /// Port to query.
    pub port: EvtchnPort,
    /// OUT: `EVTCHNSTAT_*`.
    pub status: u32,
    /// OUT: the vCPU the port notifies.
    pub vcpu: u32,
    /// OUT: C union `u`, whose member depends on `status`; use [`EvtchnStatus::binding`].
    pub u: EvtchnStatusU,
}

raw_union!(
    /// C union `u` of `struct evtchn_status`: `unbound { dom }`, `interdomain { dom, port }`,
    /// `pirq` or `virq`.
    pub struct EvtchnStatusU, 8, 4
);

/// What a port is bound to, as `EVTCHNOP_status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvtchnBinding {
    /// [`EVTCHNSTAT_CLOSED`].
    Closed,
    /// [`EVTCHNSTAT_UNBOUND`]: the domain allowed to bind the other end.
    Unbound {
        /// `u.unbound.dom`.
        remote_dom: DomId,
    },
    /// [`EVTCHNSTAT_INTERDOMAIN`]: the other end.
    Interdomain {
        /// `u.interdomain.dom`.
        dom: DomId,
        /// `u.interdomain.port`.
        port: EvtchnPort,
    },
    /// [`EVTCHNSTAT_PIRQ`].
    Pirq(u32),
    /// [`EVTCHNSTAT_VIRQ`].
    Virq(u32),
    /// [`EVTCHNSTAT_IPI`].
    Ipi,
    /// A status Xen does not define.
    Unknown(u32),
}

/// Member `interdomain` of [`EvtchnStatusU`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct StatusInterdomain {
    dom: DomId,
    _pad0: u16,
    port: EvtchnPort,
}

impl EvtchnStatus {
    /// The binding `status` and `u` describe.
    pub fn binding(&self) -> EvtchnBinding {
        match self.status {
            EVTCHNSTAT_CLOSED => EvtchnBinding::Closed,
            EVTCHNSTAT_UNBOUND => EvtchnBinding::Unbound { remote_dom: self.u.read() },
            EVTCHNSTAT_INTERDOMAIN => {
                let i: StatusInterdomain = self.u.read();
                EvtchnBinding::Interdomain { dom: i.dom, port: i.port }
            }
            EVTCHNSTAT_PIRQ => EvtchnBinding::Pirq(self.u.read()),
            EVTCHNSTAT_VIRQ => EvtchnBinding::Virq(self.u.read()),
            EVTCHNSTAT_IPI => EvtchnBinding::Ipi,
            other => EvtchnBinding::Unknown(other),
        }
    }

    /// Sets `status` and `u` to describe `binding` (the hypervisor's side).
    pub fn set_binding(&mut self, binding: EvtchnBinding) {
        self.u = EvtchnStatusU::default();
        self.status = match binding {
            EvtchnBinding::Closed => EVTCHNSTAT_CLOSED,
            EvtchnBinding::Unbound { remote_dom } => {
                self.u.write(&remote_dom);
                EVTCHNSTAT_UNBOUND
            }
            EvtchnBinding::Interdomain { dom, port } => {
                self.u.write(&StatusInterdomain { dom, _pad0: 0, port });
                EVTCHNSTAT_INTERDOMAIN
            }
            EvtchnBinding::Pirq(pirq) => {
                self.u.write(&pirq);
                EVTCHNSTAT_PIRQ
            }
            EvtchnBinding::Virq(virq) => {
                self.u.write(&virq);
                EVTCHNSTAT_VIRQ
            }
            EvtchnBinding::Ipi => EVTCHNSTAT_IPI,
            EvtchnBinding::Unknown(status) => status,
        };
    }
}

/// `struct evtchn_bind_vcpu`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnBindVcpu {
    /// Port to move.
    pub port: EvtchnPort,
    /// vCPU to notify from now on.
    pub vcpu: u32,
}

/// `struct evtchn_unmask`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnUnmask {
    /// Port to unmask.
    pub port: EvtchnPort,
}

/// `struct evtchn_reset`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnReset {
    /// Domain whose ports to close.
    pub dom: DomId,
}

/// `struct evtchn_init_control`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnInitControl {
    /// Guest frame holding the vCPU's [`EvtchnFifoControlBlock`].
    pub control_gfn: XenPfn,
    /// Byte offset of the control block in that frame.
    pub offset: u32,
    /// vCPU the control block belongs to.
    pub vcpu: u32,
    /// OUT: number of link bits ([`EVTCHN_FIFO_LINK_BITS`]).
    pub link_bits: u8,
    /// Padding (C `_pad`).
    pub _pad: [u8; 7],
}

/// `struct evtchn_expand_array`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnExpandArray {
    /// Guest frame of the next page of event words.
    pub array_gfn: XenPfn,
}

/// `struct evtchn_set_priority`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnSetPriority {
    /// Port.
    pub port: EvtchnPort,
    /// `EVTCHN_FIFO_PRIORITY_*` range, 0 (highest) to 15.
    pub priority: u32,
}

/// FIFO: highest priority.
pub const EVTCHN_FIFO_PRIORITY_MAX: u32 = 0;
/// FIFO: default priority of a new port.
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u32 = 7;
/// FIFO: lowest priority.
pub const EVTCHN_FIFO_PRIORITY_MIN: u32 = 15;
/// FIFO: one queue per priority.
pub const EVTCHN_FIFO_MAX_QUEUES: usize = EVTCHN_FIFO_PRIORITY_MIN as usize + 1;

/// FIFO event word: bit number of PENDING.
pub const EVTCHN_FIFO_PENDING: u32 = 31;
/// FIFO event word: bit number of MASKED.
pub const EVTCHN_FIFO_MASKED: u32 = 30;
/// FIFO event word: bit number of LINKED (the word is on a queue).
pub const EVTCHN_FIFO_LINKED: u32 = 29;
/// FIFO event word: bit number of BUSY (the guest is unlinking it).
pub const EVTCHN_FIFO_BUSY: u32 = 28;
/// FIFO event word: width of the LINK field (bits 0 to 16: the next port in the queue).
pub const EVTCHN_FIFO_LINK_BITS: u32 = 17;
/// FIFO event word: mask of the LINK field.
pub const EVTCHN_FIFO_LINK_MASK: u32 = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
/// FIFO: number of ports the ABI can address.
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << EVTCHN_FIFO_LINK_BITS;

/// `struct evtchn_fifo_control_block`: per-vCPU FIFO state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EvtchnFifoControlBlock {
    /// Bit `q` set: queue `q` has events.
    pub ready: u32,
    /// Reserved (C `_rsvd`).
    pub _rsvd: u32,
    /// Head port of each priority queue.
    pub head: [u32; EVTCHN_FIFO_MAX_QUEUES],
}

assert_layout!(EvtchnPort, 4);
assert_layout!(EvtchnAllocUnbound, 8, { dom: 0, remote_dom: 2, port: 4 });
assert_layout!(EvtchnBindInterdomain, 12, { remote_dom: 0, remote_port: 4, local_port: 8 });
assert_layout!(EvtchnBindVirq, 12, { virq: 0, vcpu: 4, port: 8 });
assert_layout!(EvtchnBindPirq, 12, { pirq: 0, flags: 4, port: 8 });
assert_layout!(EvtchnBindIpi, 8, { vcpu: 0, port: 4 });
assert_layout!(EvtchnClose, 4, { port: 0 });
assert_layout!(EvtchnSend, 4, { port: 0 });
assert_layout!(EvtchnStatusU, 8);
assert_layout!(EvtchnStatus, 24, { dom: 0, port: 4, status: 8, vcpu: 12, u: 16 });
assert_layout!(StatusInterdomain, 8, { dom: 0, port: 4 });
assert_layout!(EvtchnBindVcpu, 8, { port: 0, vcpu: 4 });
assert_layout!(EvtchnUnmask, 4, { port: 0 });
assert_layout!(EvtchnReset, 2, { dom: 0 });
assert_layout!(EvtchnInitControl, 24, { control_gfn: 0, offset: 8, vcpu: 12, link_bits: 16 });
assert_layout!(EvtchnExpandArray, 8, { array_gfn: 0 });
assert_layout!(EvtchnSetPriority, 8, { port: 0, priority: 4 });
assert_layout!(EvtchnFifoControlBlock, 72, { ready: 0, head: 8 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_level_positions() {
        assert_eq!(NR_EVENT_CHANNELS, 4096);
        assert_eq!(two_level_position(EvtchnPort(1)), Some((0, 1)));
        assert_eq!(two_level_position(EvtchnPort(64)), Some((1, 0)));
        assert_eq!(two_level_position(EvtchnPort(4095)), Some((63, 63)));
        assert_eq!(two_level_position(EvtchnPort(4096)), None);
        assert_eq!(two_level_position(EvtchnPort(u32::MAX)), None);
    }

    #[test]
    fn status_binding_round_trips() {
        let bindings = [
            EvtchnBinding::Closed,
            EvtchnBinding::Unbound { remote_dom: DomId(0) },
            EvtchnBinding::Interdomain { dom: DomId(3), port: EvtchnPort(17) },
            EvtchnBinding::Pirq(9),
            EvtchnBinding::Virq(VIRQ_TIMER),
            EvtchnBinding::Ipi,
            EvtchnBinding::Unknown(99),
        ];
        for b in bindings {
            let mut st = EvtchnStatus { dom: DomId::SELF, port: EvtchnPort(5), ..Default::default() };
            // Start from a union full of another member's bytes.
            st.u = EvtchnStatusU([0xff; 8]);
            st.set_binding(b);
            assert_eq!(st.binding(), b);
        }
    }

    #[test]
    fn status_union_layout_is_cs() {
        let mut st = EvtchnStatus::default();
        st.set_binding(EvtchnBinding::Interdomain { dom: DomId(0x0102), port: EvtchnPort(0x0a0b0c0d) });
        assert_eq!(st.status, EVTCHNSTAT_INTERDOMAIN);
        let bytes = st.as_bytes();
        assert_eq!(&bytes[16..18], &0x0102u16.to_ne_bytes());
        assert_eq!(&bytes[18..20], &[0, 0]);
        assert_eq!(&bytes[20..24], &0x0a0b0c0du32.to_ne_bytes());
        st.set_binding(EvtchnBinding::Unbound { remote_dom: DomId(7) });
        assert_eq!(&st.as_bytes()[16..24], &[7, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn fifo_constants() {
        assert_eq!(EVTCHN_FIFO_LINK_MASK, 0x1ffff);
        assert_eq!(EVTCHN_FIFO_NR_CHANNELS, 131072);
        assert_eq!(EVTCHN_FIFO_MAX_QUEUES, 16);
        assert_eq!(EVTCHN_FIFO_LINK_MASK & (1 << EVTCHN_FIFO_BUSY), 0);
    }

    #[test]
    fn per_vcpu_virqs() {
        assert!(virq_is_per_vcpu(VIRQ_TIMER) && virq_is_per_vcpu(VIRQ_DEBUG));
        assert!(!virq_is_per_vcpu(VIRQ_CONSOLE) && !virq_is_per_vcpu(VIRQ_DOM_EXC));
    }
}
