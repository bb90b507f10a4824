//! Xen's public guest interface, as Rust types.
//!
//! These are keel's own definitions of the facts Xen's public headers publish (numbers,
//! structure layouts), checked at compile time against the sizes and offsets the headers
//! give on x86-64. The crate is `no_std` and shared by keel, its test guests and (later) the
//! dom0 tools. It grows with the ABI issues; so far it has what booting needs.
#![no_std]

pub mod elfnote;
pub mod start_info;
