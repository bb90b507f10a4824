//! Xen event channels, as a host-testable state machine: one [`Evtchn`] per domain holds its
//! port table and ABI state and delivers events into guest-shared memory.
//!
//! The reference behaviour is Xen 4.17 (`xen/common/event_channel.c`, `event_2l.c`,
//! `event_fifo.c`): the same port allocation (lowest free port, buckets of 64, port 0
//! reserved), the same states and transitions, the same error for every failure, and the
//! same bit-level protocols in guest memory, for both ABIs:
//!
//! * 2-level ([`two_level`]): pending and mask bitmaps in the shared-info page, a selector
//!   word and an upcall flag per vCPU;
//! * FIFO ([`fifo`]): event words in guest pages, a control block per vCPU, queues per vCPU
//!   and priority, appended to concurrently with the guest consuming them.
//!
//! What the crate does not own:
//!
//! * locking: keel keeps each domain's [`Evtchn`] behind its own mutex and calls in with
//!   `&mut`; two-domain operations take the other domain as a [`Peer`] and report
//!   [`Error::NeedPeer`] when they need one they were not given;
//! * guest memory: reached only through the [`SharedWords`] and [`GuestPage`] traits, with
//!   atomics, since the guest changes it concurrently;
//! * interrupts and scheduling: operations return a [`Notify`] saying which vCPU needs an
//!   upcall and which port became pending (for `SCHEDOP_poll` wake-ups), or which port the
//!   guest signalled when its other end is the hypervisor itself
//!   ([`PortState::Hypervisor`], the backends keel serves, such as the PV console);
//! * hypercall decoding, `DOMID_SELF`, privilege (XSM) checks, domain lookup (`-ESRCH`) and
//!   guest frame mapping: keel's, before it calls in.
//!
//! Nothing that comes from the guest (ports, vCPUs, priorities, offsets, or the contents of
//! shared words) can make the crate index out of bounds, panic or loop without bound.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

#[cfg(test)]
extern crate std;

mod evtchn;
pub mod fifo;
mod memory;
mod notify;
mod port;
pub mod two_level;

#[cfg(test)]
mod testkit;

#[cfg(test)]
mod model_tests;

#[cfg(test)]
mod concurrency_tests;

pub use evtchn::{Abi, Error, Evtchn, Peer, PORTS_PER_BUCKET};
pub use memory::{GuestPage, SharedWords, TWO_LEVEL_WORDS, WORDS_PER_PAGE};
pub use notify::Notify;
pub use port::{PortInfo, PortState, PortStatus, HYPERVISOR_REMOTE_DOM};
