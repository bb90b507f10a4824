//! Event channels (skeleton; being written).
#![no_std]
