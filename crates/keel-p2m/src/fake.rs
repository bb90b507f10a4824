//! A [`TableMemory`] for tests: tables in a vector, a free list, a count of live tables and an
//! optional limit to provoke out-of-memory. It panics on any misuse by the p2m (reading or
//! freeing a table that is not live, an index out of range), which is what a test wants.

use std::boxed::Box;
use std::vec::Vec;

use keel_mm::Pfn;

use crate::TableMemory;

/// Frame number of the first fake table (not 0, so a zero frame number stands out).
const BASE: u64 = 0x10_0000;

/// Vector-backed table memory.
pub struct FakeMemory {
    /// Table `i` is frame `BASE + i`; `None` while free.
    tables: Vec<Option<Box<[u64; 512]>>>,
    /// Free slots of `tables`, reused last-in first-out.
    free: Vec<usize>,
    /// At most this many live tables (`usize::MAX`: no limit).
    limit: usize,
}

impl FakeMemory {
    /// Unlimited memory.
    pub fn new() -> Self {
        Self { tables: Vec::new(), free: Vec::new(), limit: usize::MAX }
    }

    /// Number of live (allocated, not freed) tables.
    pub fn live(&self) -> usize {
        self.tables.len() - self.free.len()
    }

    /// Allows at most `limit` live tables from now on.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Allows at most `extra` more tables than are live now.
    pub fn allow(&mut self, extra: usize) {
        self.limit = self.live() + extra;
    }

    /// Removes the limit.
    pub fn unlimited(&mut self) {
        self.limit = usize::MAX;
    }

    fn slot(&self, table: Pfn) -> usize {
        table.as_u64().checked_sub(BASE).and_then(|i| usize::try_from(i).ok()).expect("not a fake table frame")
    }

    fn table(&self, table: Pfn) -> &[u64; 512] {
        self.tables[self.slot(table)].as_deref().expect("use of a freed table")
    }
}

impl TableMemory for FakeMemory {
    fn alloc_table(&mut self) -> Option<Pfn> {
        if self.live() >= self.limit {
            return None;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.tables.push(None);
                self.tables.len() - 1
            }
        };
        self.tables[slot] = Some(Box::new([0; 512]));
        Some(Pfn::new(BASE + slot as u64))
    }

    fn free_table(&mut self, table: Pfn) {
        let slot = self.slot(table);
        assert!(self.tables[slot].take().is_some(), "double free of table {table:?}");
        self.free.push(slot);
    }

    fn read(&self, table: Pfn, index: usize) -> u64 {
        self.table(table)[index]
    }

    fn write(&mut self, table: Pfn, index: usize, value: u64) {
        let slot = self.slot(table);
        self.tables[slot].as_deref_mut().expect("write to a freed table")[index] = value;
    }
}
