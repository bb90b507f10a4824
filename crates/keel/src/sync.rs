//! Locks that are safe against interrupts on the same CPU.
//!
//! A plain spin lock deadlocks if an interrupt handler on the CPU that holds it tries to take
//! it. Every lock keel shares with interrupt context is therefore an `IrqMutex`: taking it
//! disables interrupts on this CPU until it is released.

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::x86::cpu::InterruptGuard;

/// A spin lock that keeps interrupts disabled on this CPU while held.
pub struct IrqMutex<T> {
    inner: spin::Mutex<T>,
}

impl<T> IrqMutex<T> {
    /// A new, unlocked mutex.
    pub const fn new(value: T) -> Self {
        IrqMutex { inner: spin::Mutex::new(value) }
    }

    /// Take the lock (interrupts off until the guard is dropped).
    pub fn lock(&self) -> IrqMutexGuard<'_, T> {
        let irq = InterruptGuard::new();
        let guard = self.inner.lock();
        IrqMutexGuard { guard, _irq: irq }
    }
}

/// Held `IrqMutex`. Field order matters: the lock is released before interrupts come back.
pub struct IrqMutexGuard<'a, T> {
    guard: spin::MutexGuard<'a, T>,
    _irq: InterruptGuard,
}

impl<T> Deref for IrqMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for IrqMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// A `lock_api` raw mutex with the same interrupt discipline, for crates that take one
/// (the heap allocator).
pub struct IrqRawMutex {
    locked: AtomicBool,
    /// Whether interrupts were enabled when the holder took the lock (only the holder writes).
    irq_were_enabled: AtomicBool,
}

// SAFETY: the lock is exclusive (compare-exchange on `locked`, Acquire on lock, Release on
// unlock), which is what `RawMutex` requires.
unsafe impl lock_api::RawMutex for IrqRawMutex {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = IrqRawMutex { locked: AtomicBool::new(false), irq_were_enabled: AtomicBool::new(false) };
    type GuardMarker = lock_api::GuardNoSend;

    fn lock(&self) {
        let were = x86_64::instructions::interrupts::are_enabled();
        x86_64::instructions::interrupts::disable();
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        self.irq_were_enabled.store(were, Ordering::Relaxed);
    }

    fn try_lock(&self) -> bool {
        let were = x86_64::instructions::interrupts::are_enabled();
        x86_64::instructions::interrupts::disable();
        if self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            self.irq_were_enabled.store(were, Ordering::Relaxed);
            true
        } else {
            if were {
                x86_64::instructions::interrupts::enable();
            }
            false
        }
    }

    unsafe fn unlock(&self) {
        let were = self.irq_were_enabled.load(Ordering::Relaxed);
        self.locked.store(false, Ordering::Release);
        if were {
            x86_64::instructions::interrupts::enable();
        }
    }
}
