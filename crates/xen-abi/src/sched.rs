//! `sched_op` (hypercall 29): yield, block, poll and shut down (`public/sched.h`).
//!
//! Called as `sched_op(cmd, arg)`, where `arg` points to the sub-op's structure (or is unused).

use core::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::domid::DomId;
use crate::event_channel::EvtchnPort;
use crate::guest_handle::GuestHandle;

/// Give up the CPU; stay runnable.
pub const SCHEDOP_YIELD: u32 = 0;
/// Block until an event is pending for this vCPU (the guest unmasks events first).
pub const SCHEDOP_BLOCK: u32 = 1;
/// Shut the calling domain down; `arg` is a [`SchedShutdown`].
pub const SCHEDOP_SHUTDOWN: u32 = 2;
/// Block until one of a set of ports is pending or a timeout passes; `arg` is a [`SchedPoll`].
pub const SCHEDOP_POLL: u32 = 3;
/// Shut another domain down (privileged); `arg` is a [`SchedRemoteShutdown`].
pub const SCHEDOP_REMOTE_SHUTDOWN: u32 = 4;
/// Record the shutdown reason without shutting down (used before suspend); `arg` is a
/// [`SchedShutdown`].
pub const SCHEDOP_SHUTDOWN_CODE: u32 = 5;
/// Create, feed or destroy a watchdog; `arg` is a [`SchedWatchdog`].
pub const SCHEDOP_WATCHDOG: u32 = 6;
/// Temporarily pin the vCPU to a physical CPU (hardware domain); `arg` is a
/// [`SchedPinOverride`].
pub const SCHEDOP_PIN_OVERRIDE: u32 = 7;

/// The domain exited normally: clean up and destroy it.
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// Clean up, destroy, then restart the domain.
pub const SHUTDOWN_REBOOT: u32 = 1;
/// Clean up, save suspend state, destroy.
pub const SHUTDOWN_SUSPEND: u32 = 2;
/// The domain crashed.
pub const SHUTDOWN_CRASH: u32 = 3;
/// A watchdog expired: restart.
pub const SHUTDOWN_WATCHDOG: u32 = 4;
/// Reset the domain's state (kexec into a new kernel) and keep its memory.
pub const SHUTDOWN_SOFT_RESET: u32 = 5;
/// `SHUTDOWN_MAX`: the largest valid reason.
pub const SHUTDOWN_MAX: u32 = 5;

/// A shutdown reason (`SHUTDOWN_*`), decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ShutdownReason {
    /// [`SHUTDOWN_POWEROFF`].
    Poweroff = SHUTDOWN_POWEROFF,
    /// [`SHUTDOWN_REBOOT`].
    Reboot = SHUTDOWN_REBOOT,
    /// [`SHUTDOWN_SUSPEND`].
    Suspend = SHUTDOWN_SUSPEND,
    /// [`SHUTDOWN_CRASH`].
    Crash = SHUTDOWN_CRASH,
    /// [`SHUTDOWN_WATCHDOG`].
    Watchdog = SHUTDOWN_WATCHDOG,
    /// [`SHUTDOWN_SOFT_RESET`].
    SoftReset = SHUTDOWN_SOFT_RESET,
}

/// A shutdown reason above [`SHUTDOWN_MAX`] (Xen answers it with `-EINVAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownShutdownReason(pub u32);

impl TryFrom<u32> for ShutdownReason {
    type Error = UnknownShutdownReason;

    fn try_from(raw: u32) -> Result<Self, Self::Error> {
        Ok(match raw {
            SHUTDOWN_POWEROFF => Self::Poweroff,
            SHUTDOWN_REBOOT => Self::Reboot,
            SHUTDOWN_SUSPEND => Self::Suspend,
            SHUTDOWN_CRASH => Self::Crash,
            SHUTDOWN_WATCHDOG => Self::Watchdog,
            SHUTDOWN_SOFT_RESET => Self::SoftReset,
            _ => return Err(UnknownShutdownReason(raw)),
        })
    }
}

impl From<ShutdownReason> for u32 {
    fn from(r: ShutdownReason) -> u32 {
        r as u32
    }
}

/// The word xl uses: `poweroff`, `reboot`, `suspend`, `crash`, `watchdog`, `soft_reset`.
impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Poweroff => "poweroff",
            Self::Reboot => "reboot",
            Self::Suspend => "suspend",
            Self::Crash => "crash",
            Self::Watchdog => "watchdog",
            Self::SoftReset => "soft_reset",
        })
    }
}

/// `struct sched_shutdown`: argument of `SCHEDOP_shutdown` and `SCHEDOP_shutdown_code`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedShutdown {
    /// `SHUTDOWN_*` (see [`ShutdownReason`]).
    pub reason: u32,
}

/// `struct sched_poll`: argument of `SCHEDOP_poll`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedPoll {
    /// Guest-virtual address of `nr_ports` ports to wait on.
    pub ports: GuestHandle<EvtchnPort>,
    /// Number of ports.
    pub nr_ports: u32,
    /// Padding.
    pub _pad0: u32,
    /// Absolute system time (ns) to give up at; 0 means no timeout.
    pub timeout: u64,
}

/// `struct sched_remote_shutdown`: argument of `SCHEDOP_remote_shutdown`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedRemoteShutdown {
    /// The domain to shut down.
    pub domain_id: DomId,
    /// Padding.
    pub _pad0: u16,
    /// `SHUTDOWN_*`.
    pub reason: u32,
}

/// `struct sched_watchdog`: argument of `SCHEDOP_watchdog`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedWatchdog {
    /// 0 to create a watchdog (its id is returned), otherwise the watchdog to act on.
    pub id: u32,
    /// Seconds until expiry; 0 destroys the watchdog.
    pub timeout: u32,
}

/// `struct sched_pin_override`: argument of `SCHEDOP_pin_override`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedPinOverride {
    /// Physical CPU to pin to; negative removes the override.
    pub pcpu: i32,
}

assert_layout!(SchedShutdown, 4, { reason: 0 });
assert_layout!(SchedPoll, 24, { ports: 0, nr_ports: 8, timeout: 16 });
assert_layout!(SchedRemoteShutdown, 8, { domain_id: 0, reason: 4 });
assert_layout!(SchedWatchdog, 8, { id: 0, timeout: 4 });
assert_layout!(SchedPinOverride, 4, { pcpu: 0 });

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn shutdown_reasons_are_xens() {
        let expected = [
            (ShutdownReason::Poweroff, 0),
            (ShutdownReason::Reboot, 1),
            (ShutdownReason::Suspend, 2),
            (ShutdownReason::Crash, 3),
            (ShutdownReason::Watchdog, 4),
            (ShutdownReason::SoftReset, 5),
        ];
        for (reason, raw) in expected {
            assert_eq!(u32::from(reason), raw);
            assert_eq!(ShutdownReason::try_from(raw), Ok(reason));
        }
        assert_eq!(SHUTDOWN_MAX, 5);
        assert_eq!(ShutdownReason::try_from(6), Err(UnknownShutdownReason(6)));
        assert_eq!(ShutdownReason::try_from(u32::MAX), Err(UnknownShutdownReason(u32::MAX)));
        assert_eq!(ShutdownReason::SoftReset.to_string(), "soft_reset");
    }

    #[test]
    fn sub_ops_are_xens() {
        assert_eq!(
            [SCHEDOP_YIELD, SCHEDOP_BLOCK, SCHEDOP_SHUTDOWN, SCHEDOP_POLL, SCHEDOP_REMOTE_SHUTDOWN],
            [0, 1, 2, 3, 4]
        );
        assert_eq!([SCHEDOP_SHUTDOWN_CODE, SCHEDOP_WATCHDOG, SCHEDOP_PIN_OVERRIDE], [5, 6, 7]);
    }

    #[test]
    fn poll_reads_from_guest_bytes() {
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&0xffff_8000_0000_1000u64.to_le_bytes());
        bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
        bytes[16..].copy_from_slice(&1_000_000u64.to_le_bytes());
        let poll = SchedPoll::read_from_bytes(&bytes).unwrap();
        assert_eq!(poll.ports.addr(), 0xffff_8000_0000_1000);
        assert_eq!(poll.nr_ports, 3);
        assert_eq!(poll.timeout, 1_000_000);
    }
}
