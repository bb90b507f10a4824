//! What a keel guest sees of the platform, as pure functions of the host and the domain:
//! its CPUID, the handling of the MSRs keel intercepts, the hypercall page, the wall clock, the
//! state a guest may give a vCPU (VCPUOP_initialise), and the PV console keel serves (the ring
//! protocol and the serial input switch).
//!
//! Kept out of the hypervisor binary so that every rule is unit-tested on the host; keel's VM
//! exit handlers call these and apply the result.
#![cfg_attr(not(test), no_std)]

pub mod console;
pub mod cpuid;
pub mod hypercall_page;
pub mod msr;
pub mod vcpu_context;
pub mod wallclock;
