//! xenstore's wire protocol and shared ring (`public/io/xs_wire.h`, `public/io/xenbus.h`).
//!
//! A guest talks to xenstored through an [`XenstoreDomainInterface`] page (found with
//! `HVM_PARAM_STORE_PFN` and `HVM_PARAM_STORE_EVTCHN`). Requests go into `req`, replies and
//! watch events come back in `rsp`; both are byte rings of [`XENSTORE_RING_SIZE`] with
//! free-running `u32` indices ([`mask_xenstore_idx`]). Each message is an [`XsdSockmsg`]
//! header followed by `len` payload bytes (at most [`XENSTORE_PAYLOAD_MAX`]), and a message
//! may be larger than the ring, so both sides stream it in pieces.

use core::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::errno::Errno;

/// Size of each ring.
pub const XENSTORE_RING_SIZE: usize = 1024;
/// Largest payload of one message.
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// Longest absolute path.
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// Longest relative path.
pub const XENSTORE_REL_PATH_MAX: usize = 2048;

/// `MASK_XENSTORE_IDX`: position in a ring of free-running index `idx`.
pub const fn mask_xenstore_idx(idx: u32) -> usize {
    idx as usize & (XENSTORE_RING_SIZE - 1)
}

/// `server_features`: the server supports reconnection (`connection`).
pub const XENSTORE_SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `server_features`: the server reports errors in `error`.
pub const XENSTORE_SERVER_FEATURE_ERROR: u32 = 2;
/// `server_features`: watches take a depth (newer than Xen 4.17).
pub const XENSTORE_SERVER_FEATURE_WATCHDEPTH: u32 = 4;
/// `server_features`: permissions may name any domain (newer than Xen 4.17).
pub const XENSTORE_SERVER_FEATURE_DOMID_ANY: u32 = 8;

/// `connection`: steady state. (A zeroed page is connected.)
pub const XENSTORE_CONNECTED: u32 = 0;
/// `connection`: the guest asked for a reconnect; the server resets the ring.
pub const XENSTORE_RECONNECT: u32 = 1;

/// `error`: none.
pub const XENSTORE_ERROR_NONE: u32 = 0;
/// `error`: communication problem.
pub const XENSTORE_ERROR_COMM: u32 = 1;
/// `error`: invalid ring index.
pub const XENSTORE_ERROR_RINGIDX: u32 = 2;
/// `error`: protocol violation (e.g. payload too long).
pub const XENSTORE_ERROR_PROTO: u32 = 3;

/// `struct xenstore_domain_interface`: the xenstore ring page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenstoreDomainInterface {
    /// Requests to xenstored.
    pub req: [u8; XENSTORE_RING_SIZE],
    /// Replies and watch events.
    pub rsp: [u8; XENSTORE_RING_SIZE],
    /// Server's consumer index into `req`.
    pub req_cons: u32,
    /// Guest's producer index into `req`.
    pub req_prod: u32,
    /// Guest's consumer index into `rsp`.
    pub rsp_cons: u32,
    /// Server's producer index into `rsp`.
    pub rsp_prod: u32,
    /// `XENSTORE_SERVER_FEATURE_*` the server offers.
    pub server_features: u32,
    /// `XENSTORE_CONNECTED` or `XENSTORE_RECONNECT`.
    pub connection: u32,
    /// `XENSTORE_ERROR_*`.
    pub error: u32,
    /// The server's event-channel port. Added after Xen 4.17 in bytes 4.17 leaves unused;
    /// a 4.17 guest never reads it.
    pub evtchn_port: u32,
}

zeroed_default!(XenstoreDomainInterface);

/// `struct xsd_sockmsg`: the header of every xenstore message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XsdSockmsg {
    /// C `type`: `XS_*`.
    pub type_: u32,
    /// Request id, echoed in the reply (0 in watch events).
    pub req_id: u32,
    /// Transaction id (0: none).
    pub tx_id: u32,
    /// Payload length in bytes.
    pub len: u32,
}

/// Debug/control commands (also `XS_DEBUG`).
pub const XS_CONTROL: u32 = 0;
/// `XS_DEBUG`, the old name of [`XS_CONTROL`].
pub const XS_DEBUG: u32 = XS_CONTROL;
/// List a node's children.
pub const XS_DIRECTORY: u32 = 1;
/// Read a node.
pub const XS_READ: u32 = 2;
/// Read a node's permissions.
pub const XS_GET_PERMS: u32 = 3;
/// Watch a subtree.
pub const XS_WATCH: u32 = 4;
/// Remove a watch.
pub const XS_UNWATCH: u32 = 5;
/// Start a transaction.
pub const XS_TRANSACTION_START: u32 = 6;
/// Commit or abort a transaction.
pub const XS_TRANSACTION_END: u32 = 7;
/// Introduce a domain to xenstored (dom0).
pub const XS_INTRODUCE: u32 = 8;
/// Forget a domain (dom0).
pub const XS_RELEASE: u32 = 9;
/// Read a domain's home path.
pub const XS_GET_DOMAIN_PATH: u32 = 10;
/// Write a node.
pub const XS_WRITE: u32 = 11;
/// Create a node.
pub const XS_MKDIR: u32 = 12;
/// Remove a subtree.
pub const XS_RM: u32 = 13;
/// Set a node's permissions.
pub const XS_SET_PERMS: u32 = 14;
/// Server to guest: a watch fired.
pub const XS_WATCH_EVENT: u32 = 15;
/// Server to guest: the request failed (payload: error name, see [`XSD_ERRORS`]).
pub const XS_ERROR: u32 = 16;
/// Ask whether a domain is introduced.
pub const XS_IS_DOMAIN_INTRODUCED: u32 = 17;
/// Resume a domain.
pub const XS_RESUME: u32 = 18;
/// Let a domain act for another (device-model stub domains).
pub const XS_SET_TARGET: u32 = 19;
/// Remove all of the connection's watches. (20, once `XS_RESTRICT`, is unused.)
pub const XS_RESET_WATCHES: u32 = 21;
/// List part of a large directory.
pub const XS_DIRECTORY_PART: u32 = 22;
/// Read server features (newer than Xen 4.17).
pub const XS_GET_FEATURE: u32 = 23;
/// Set server features (newer than Xen 4.17).
pub const XS_SET_FEATURE: u32 = 24;
/// Read quotas (newer than Xen 4.17).
pub const XS_GET_QUOTA: u32 = 25;
/// Set quotas (newer than Xen 4.17).
pub const XS_SET_QUOTA: u32 = 26;
/// Guaranteed never to be a valid type.
pub const XS_INVALID: u32 = 0xffff;

/// The message types Xen 4.17's xenstored knows: `XS_CONTROL` to `XS_DIRECTORY_PART`, except
/// the retired 20.
pub const fn xs_type_is_known_in_4_17(type_: u32) -> bool {
    type_ <= XS_DIRECTORY_PART && type_ != 20
}

/// Watch event payload: index of the path.
pub const XS_WATCH_PATH: usize = 0;
/// Watch event payload: index of the token.
pub const XS_WATCH_TOKEN: usize = 1;

/// The errors xenstore reports by name in an [`XS_ERROR`] reply, in `xsd_errors[]` order.
pub const XSD_ERRORS: [Errno; 16] = [
    Errno::EINVAL,
    Errno::EACCES,
    Errno::EEXIST,
    Errno::EISDIR,
    Errno::ENOENT,
    Errno::ENOMEM,
    Errno::ENOSPC,
    Errno::EIO,
    Errno::ENOTEMPTY,
    Errno::ENOSYS,
    Errno::EROFS,
    Errno::EBUSY,
    Errno::EAGAIN,
    Errno::EISCONN,
    Errno::E2BIG,
    Errno::EPERM,
];

/// `enum xenbus_state`: the state machine frontends and backends advertise in their `state`
/// nodes (as decimal ASCII).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum XenbusState {
    /// 0.
    Unknown = 0,
    /// 1: the device is being set up.
    Initialising = 1,
    /// 2: waiting for information from the other end (backend: features published).
    InitWait = 2,
    /// 3: set up, waiting for the other end to connect.
    Initialised = 3,
    /// 4: connected.
    Connected = 4,
    /// 5: closing.
    Closing = 5,
    /// 6: closed.
    Closed = 6,
    /// 7: reconfiguring.
    Reconfiguring = 7,
    /// 8: reconfigured.
    Reconfigured = 8,
}

/// A `state` value outside 0 to 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownXenbusState(pub u32);

impl TryFrom<u32> for XenbusState {
    type Error = UnknownXenbusState;

    fn try_from(raw: u32) -> Result<Self, Self::Error> {
        Ok(match raw {
            0 => Self::Unknown,
            1 => Self::Initialising,
            2 => Self::InitWait,
            3 => Self::Initialised,
            4 => Self::Connected,
            5 => Self::Closing,
            6 => Self::Closed,
            7 => Self::Reconfiguring,
            8 => Self::Reconfigured,
            _ => return Err(UnknownXenbusState(raw)),
        })
    }
}

/// The decimal number, as written to a `state` node.
impl fmt::Display for XenbusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", *self as u32)
    }
}

assert_layout!(XsdSockmsg, 16, { type_: 0, req_id: 4, tx_id: 8, len: 12 });
assert_layout!(XenstoreDomainInterface, 2080, {
    req: 0, rsp: 1024, req_cons: 2048, req_prod: 2052, rsp_cons: 2056, rsp_prod: 2060,
    server_features: 2064, connection: 2068, error: 2072, evtchn_port: 2076,
});
const _: () = assert!(XENSTORE_RING_SIZE.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn types_are_xens() {
        assert_eq!(XS_WRITE, 11);
        assert_eq!(XS_WATCH_EVENT, 15);
        assert_eq!(XS_ERROR, 16);
        assert_eq!(XS_RESET_WATCHES, 21);
        assert_eq!(XS_SET_QUOTA, 26);
        assert!(xs_type_is_known_in_4_17(XS_DIRECTORY_PART));
        assert!(!xs_type_is_known_in_4_17(20));
        assert!(!xs_type_is_known_in_4_17(XS_GET_FEATURE));
        assert!(!xs_type_is_known_in_4_17(XS_INVALID));
    }

    #[test]
    fn ring_index_masks() {
        assert_eq!(mask_xenstore_idx(1023), 1023);
        assert_eq!(mask_xenstore_idx(1024), 0);
        assert_eq!(mask_xenstore_idx(u32::MAX), 1023);
    }

    #[test]
    fn xenbus_states() {
        for raw in 0..=8 {
            let s = XenbusState::try_from(raw).unwrap();
            assert_eq!(s as u32, raw);
            assert_eq!(s.to_string(), raw.to_string());
        }
        assert_eq!(XenbusState::try_from(9), Err(UnknownXenbusState(9)));
    }

    #[test]
    fn error_names_are_errno_names() {
        let names: std::vec::Vec<&str> = XSD_ERRORS.iter().map(|e| e.name()).collect();
        assert_eq!(names[0], "EINVAL");
        assert_eq!(names[15], "EPERM");
        assert!(XSD_ERRORS.iter().all(|e| Errno::from_name(e.name()) == Some(*e)));
    }

    #[test]
    fn message_header_from_bytes() {
        let bytes = [11, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0];
        let msg = XsdSockmsg::read_from_bytes(&bytes).unwrap();
        assert_eq!(msg, XsdSockmsg { type_: XS_WRITE, req_id: 7, tx_id: 0, len: 5 });
    }
}
