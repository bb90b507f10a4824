//! Architecture support. keel runs on x86-64 only for now; everything that touches the
//! hardware lives below this module (together with the vendor virtualization layer).
pub mod x86;
