//! Domain identifiers (`domid_t`) and the reserved values Xen gives special meaning.
//!
//! Ordinary domains are numbered from 0 (dom0) up to 0x7FEF. The range from
//! [`DomId::FIRST_RESERVED`] (0x7FF0) up is never a real domain: those values name the caller
//! ([`DomId::SELF`]), pseudo-domains that own special memory ([`DomId::IO`], [`DomId::XEN`],
//! [`DomId::COW`]), "no domain" ([`DomId::INVALID`]) or the idle domain ([`DomId::IDLE`]).
//! A guest may put any `u16` into a domid field; [`DomId`] keeps that value as is.

use core::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `domid_t`: a domain identifier as it appears in hypercall arguments.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(transparent)]
pub struct DomId(pub u16);

impl DomId {
    /// Domain 0, the initial (control) domain.
    pub const DOM0: Self = Self(0);
    /// `DOMID_FIRST_RESERVED`: the first value that does not name an ordinary domain.
    pub const FIRST_RESERVED: Self = Self(0x7FF0);
    /// `DOMID_SELF`: the calling domain.
    pub const SELF: Self = Self(0x7FF0);
    /// `DOMID_IO`: the owner of I/O memory; lets a privileged domain map any MMIO.
    pub const IO: Self = Self(0x7FF1);
    /// `DOMID_XEN`: the owner of the hypervisor's own pages that guests may map.
    pub const XEN: Self = Self(0x7FF2);
    /// `DOMID_COW`: the owner of shared copy-on-write pages (memory sharing).
    pub const COW: Self = Self(0x7FF3);
    /// `DOMID_INVALID`: no domain (e.g. an unbound event channel's remote end).
    pub const INVALID: Self = Self(0x7FF4);
    /// `DOMID_IDLE`: the idle domain.
    pub const IDLE: Self = Self(0x7FFF);
    /// `DOMID_MASK`: mask of the bits a valid domid may use.
    pub const MASK: u16 = 0x7FFF;

    /// True for values at or above [`DomId::FIRST_RESERVED`], which never name an ordinary
    /// domain.
    pub const fn is_special(self) -> bool {
        self.0 >= Self::FIRST_RESERVED.0
    }

    /// The Xen name of a special value (`"DOMID_SELF"`), or `None` for an ordinary or
    /// undefined one.
    pub const fn special_name(self) -> Option<&'static str> {
        match self {
            Self::SELF => Some("DOMID_SELF"),
            Self::IO => Some("DOMID_IO"),
            Self::XEN => Some("DOMID_XEN"),
            Self::COW => Some("DOMID_COW"),
            Self::INVALID => Some("DOMID_INVALID"),
            Self::IDLE => Some("DOMID_IDLE"),
            _ => None,
        }
    }

    /// Replaces [`DomId::SELF`] by `caller`, as Xen does before looking a domain up.
    pub const fn resolve_self(self, caller: DomId) -> DomId {
        if self.0 == Self::SELF.0 {
            caller
        } else {
            self
        }
    }
}

impl From<u16> for DomId {
    fn from(raw: u16) -> Self {
        Self(raw)
    }
}

impl From<DomId> for u16 {
    fn from(id: DomId) -> Self {
        id.0
    }
}

impl fmt::Debug for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.special_name() {
            Some(name) => f.write_str(name),
            None => write!(f, "DomId({})", self.0),
        }
    }
}

/// Xen's log style: `d0`, `d12`, or the reserved name (`DOMID_SELF`, or `d[0x7ff9]` for an
/// undefined reserved value).
impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.special_name() {
            Some(name) => f.write_str(name),
            None if self.is_special() => write!(f, "d[{:#x}]", self.0),
            None => write!(f, "d{}", self.0),
        }
    }
}

assert_layout!(DomId, 2);

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn special_values_are_xens() {
        assert_eq!(DomId::FIRST_RESERVED.0, 0x7FF0);
        assert_eq!(DomId::SELF.0, 0x7FF0);
        assert_eq!(DomId::IO.0, 0x7FF1);
        assert_eq!(DomId::XEN.0, 0x7FF2);
        assert_eq!(DomId::COW.0, 0x7FF3);
        assert_eq!(DomId::INVALID.0, 0x7FF4);
        assert_eq!(DomId::IDLE.0, 0x7FFF);
        assert_eq!(DomId::MASK, 0x7FFF);
    }

    #[test]
    fn special_is_the_reserved_range() {
        assert!(!DomId(0).is_special());
        assert!(!DomId(0x7FEF).is_special());
        for id in [DomId::SELF, DomId::IO, DomId::XEN, DomId::COW, DomId::INVALID, DomId::IDLE] {
            assert!(id.is_special(), "{id:?}");
            assert!(id.special_name().is_some());
        }
        assert!(DomId(0x7FF9).is_special());
        assert_eq!(DomId(0x7FF9).special_name(), None);
        assert!(DomId(0xFFFF).is_special());
    }

    #[test]
    fn self_resolves_to_the_caller_only() {
        assert_eq!(DomId::SELF.resolve_self(DomId(7)), DomId(7));
        assert_eq!(DomId(3).resolve_self(DomId(7)), DomId(3));
        assert_eq!(DomId::INVALID.resolve_self(DomId(7)), DomId::INVALID);
    }

    #[test]
    fn display_and_debug() {
        assert_eq!(format!("{}", DomId(0)), "d0");
        assert_eq!(format!("{}", DomId(42)), "d42");
        assert_eq!(format!("{}", DomId::SELF), "DOMID_SELF");
        assert_eq!(format!("{}", DomId(0x7FF9)), "d[0x7ff9]");
        assert_eq!(format!("{:?}", DomId(5)), "DomId(5)");
        assert_eq!(format!("{:?}", DomId::INVALID), "DOMID_INVALID");
    }
}
