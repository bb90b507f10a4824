//! Split-driver I/O protocols (`public/io/*.h`): the shared-ring layout every PV device uses,
//! and the block and network device messages that travel on it.
//!
//! The PV console and xenstore rings are byte rings with their own layouts; they live in
//! [`crate::console_io`] and [`crate::xenstore`].

#[macro_use]
pub mod ring;

pub mod blkif;
pub mod netif;
