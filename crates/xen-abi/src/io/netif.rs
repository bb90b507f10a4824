//! The PV network device protocol (`public/io/netif.h`): a transmit ring ([`NetifTxSring`])
//! and a receive ring ([`NetifRxSring`]).
//!
//! On transmit, a packet is one or more [`NetifTxRequest`] slots (flag `NETTXF_more_data`
//! chains them; the first slot's `size` is the whole packet) optionally followed by
//! [`NetifExtraInfo`] slots (flag `NETTXF_extra_info`). On receive, the frontend posts granted
//! pages with [`NetifRxRequest`] and the backend copies packets into them.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::grant_table::GrantRef;
use crate::io::ring::const_ring_size;

/// Slots a backend must accept for one packet (`XEN_NETIF_NR_SLOTS_MIN`).
pub const XEN_NETIF_NR_SLOTS_MIN: usize = 18;
/// Largest packet on the transmit ring.
pub const XEN_NETIF_MAX_TX_SIZE: u32 = 0xFFFF;

/// TX flag: the checksum is blank and must be computed.
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
/// TX flag: the data was validated.
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
/// TX flag: the packet continues in the next slot.
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// TX flag: the next slot is a [`NetifExtraInfo`].
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;

/// RX flag: the data was validated.
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// RX flag: the checksum is blank.
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// RX flag: the packet continues in the next slot.
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// RX flag: the next slot is a [`NetifExtraInfo`].
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// RX flag: a GSO prefix slot.
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;

/// Response status: done.
pub const NETIF_RSP_OKAY: i16 = 0;
/// Response status: failed.
pub const NETIF_RSP_ERROR: i16 = -1;
/// Response status: dropped.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// Response status of an extra-info slot.
pub const NETIF_RSP_NULL: i16 = 1;

/// Extra-info type: invalid.
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// Extra-info type: segmentation offload ([`NetifExtraGso`]).
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// Extra-info type: add a multicast address.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// Extra-info type: remove a multicast address.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// Extra-info type: receive-side hash.
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// Extra-info flag: another extra-info slot follows.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1 << 0;
/// GSO type: none.
pub const XEN_NETIF_GSO_TYPE_NONE: u8 = 0;
/// GSO type: TCP over IPv4.
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
/// GSO type: TCP over IPv6.
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;

/// `struct netif_tx_request`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NetifTxRequest {
    /// Grant of the page holding the data.
    pub gref: GrantRef,
    /// Offset of the data in the page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// Bytes in this slot (first slot: the whole packet).
    pub size: u16,
}

/// `struct netif_tx_response`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NetifTxResponse {
    /// The request's id.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

/// `struct netif_rx_request`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NetifRxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// Padding (C `pad`).
    pub pad: u16,
    /// Grant of a writable page for the backend to fill.
    pub gref: GrantRef,
}

/// `struct netif_rx_response`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NetifRxResponse {
    /// The request's id.
    pub id: u16,
    /// Offset of the data in the page.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// Bytes received (>= 0) or `NETIF_RSP_*` (< 0).
    pub status: i16,
}

raw_union!(
    /// C union `u` of `struct netif_extra_info`: `gso`, `mcast { addr[6] }`,
    /// `hash { type, algorithm, value[4] }` or `pad[3]` (u16).
    pub struct NetifExtraInfoU, 6, 2
);

/// Member `gso` of [`NetifExtraInfoU`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NetifExtraGso {
    /// Maximum segment size.
    pub size: u16,
    /// C `type`: `XEN_NETIF_GSO_TYPE_*`.
    pub type_: u8,
    /// Padding (C `pad`).
    pub pad: u8,
    /// GSO features.
    pub features: u16,
}

/// `struct netif_extra_info`: an extra slot on either ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NetifExtraInfo {
    /// C `type`: `XEN_NETIF_EXTRA_TYPE_*`.
    pub type_: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// Type-specific data.
    pub u: NetifExtraInfoU,
}

impl NetifExtraInfo {
    /// `u.gso`.
    pub fn gso(&self) -> NetifExtraGso {
        self.u.read()
    }

    /// `u.mcast.addr`.
    pub fn mcast_addr(&self) -> [u8; 6] {
        self.u.0
    }
}

raw_union!(
    /// One slot of the transmit ring: a [`NetifTxRequest`] or a [`NetifTxResponse`]
    /// (extra-info slots reuse the request space).
    pub struct NetifTxSringEntry, 12, 4
);

impl NetifTxSringEntry {
    /// The slot read as a request.
    pub fn request(&self) -> NetifTxRequest {
        self.read()
    }

    /// The slot read as an extra-info slot.
    pub fn extra(&self) -> NetifExtraInfo {
        self.read()
    }

    /// The slot read as a response.
    pub fn response(&self) -> NetifTxResponse {
        self.read()
    }
}

raw_union!(
    /// One slot of the receive ring: a [`NetifRxRequest`] or a [`NetifRxResponse`]
    /// (extra-info slots reuse the response space).
    pub struct NetifRxSringEntry, 8, 4
);

impl NetifRxSringEntry {
    /// The slot read as a request.
    pub fn request(&self) -> NetifRxRequest {
        self.read()
    }

    /// The slot read as a response.
    pub fn response(&self) -> NetifRxResponse {
        self.read()
    }

    /// The slot read as an extra-info slot.
    pub fn extra(&self) -> NetifExtraInfo {
        self.read()
    }
}

/// Entries of a one-page transmit ring (256).
pub const NET_TX_RING_SIZE: usize = const_ring_size(crate::XEN_PAGE_SIZE, core::mem::size_of::<NetifTxSringEntry>());
/// Entries of a one-page receive ring (256).
pub const NET_RX_RING_SIZE: usize = const_ring_size(crate::XEN_PAGE_SIZE, core::mem::size_of::<NetifRxSringEntry>());

define_sring!(
    /// `struct netif_tx_sring` of one page.
    pub struct NetifTxSring, NetifTxSringEntry, NET_TX_RING_SIZE
);

define_sring!(
    /// `struct netif_rx_sring` of one page.
    pub struct NetifRxSring, NetifRxSringEntry, NET_RX_RING_SIZE
);

assert_layout!(NetifTxRequest, 12, { gref: 0, offset: 4, flags: 6, id: 8, size: 10 });
assert_layout!(NetifTxResponse, 4, { id: 0, status: 2 });
assert_layout!(NetifRxRequest, 8, { id: 0, pad: 2, gref: 4 });
assert_layout!(NetifRxResponse, 8, { id: 0, offset: 2, flags: 4, status: 6 });
assert_layout!(NetifExtraGso, 6, { size: 0, type_: 2, pad: 3, features: 4 });
assert_layout!(NetifExtraInfoU, 6);
assert_layout!(NetifExtraInfo, 8, { type_: 0, flags: 1, u: 2 });
assert_layout!(NetifTxSringEntry, 12);
assert_layout!(NetifRxSringEntry, 8);
assert_layout!(NetifTxSring, 64 + 256 * 12, { ring: 64 });
assert_layout!(NetifRxSring, 64 + 256 * 8, { ring: 64 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_rings_hold_256() {
        assert_eq!(NET_TX_RING_SIZE, 256);
        assert_eq!(NET_RX_RING_SIZE, 256);
        assert_eq!(NetifTxSring::slot(256 + 5), 5);
    }

    #[test]
    fn gso_extra_info_layout() {
        let mut extra = NetifExtraInfo { type_: XEN_NETIF_EXTRA_TYPE_GSO, flags: 0, ..Default::default() };
        extra.u.write(&NetifExtraGso { size: 1448, type_: XEN_NETIF_GSO_TYPE_TCPV4, pad: 0, features: 0 });
        assert_eq!(extra.as_bytes(), &[1, 0, 0xa8, 0x05, 1, 0, 0, 0]);
        let mut slot = NetifTxSringEntry::default();
        slot.write(&extra);
        assert_eq!(slot.extra().gso().size, 1448);
        assert_eq!(slot.extra().mcast_addr(), [0xa8, 0x05, 1, 0, 0, 0]);
    }

    #[test]
    fn rx_slots() {
        let mut slot = NetifRxSringEntry::default();
        slot.write(&NetifRxRequest { id: 3, pad: 0, gref: GrantRef(44) });
        assert_eq!(slot.request().gref, GrantRef(44));
        slot.write(&NetifRxResponse { id: 3, offset: 0, flags: NETRXF_DATA_VALIDATED, status: 60 });
        assert_eq!(slot.response().status, 60);
    }
}
