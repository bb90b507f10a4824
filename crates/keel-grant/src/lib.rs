//! Grant tables (skeleton; being written).
#![no_std]
