//! The PV console keel serves for the domains it builds: the backend half of Xen's console
//! ring protocol (`public/io/console.h`, the `xencons_interface` page that Linux's `hvc_xen`
//! drives), the cutting of a guest's output into prefixed lines ([`LineBuffer`]), and the
//! serial input switch (Ctrl-A three times, [`InputSwitch`]) that picks which domain the
//! keyboard belongs to.
//!
//! On Xen, xenconsoled in dom0 is the backend. keel has no dom0 toolstack yet, so it is the
//! backend itself: it drains what the guest wrote to `out` onto its serial console and puts
//! typed bytes into `in`. The page belongs to the guest and the guest writes it concurrently,
//! from other CPUs: every index is untrusted, and nothing here can index out of the page,
//! panic or loop without bound, whatever the page holds.
//!
//! # Protocol and memory ordering
//!
//! Each direction is a byte ring with free-running `u32` indices; the byte of index `i` is at
//! `i & (size - 1)`. The producer fills bytes, then publishes its index; the consumer reads
//! the index, then the bytes, then publishes its own index, and each side then notifies the
//! other over the event channel. The barriers (Xen's `rmb`/`wmb`/`mb`) map to:
//!
//! * consuming `out` ([`read_output`]): `out_prod` is loaded with `Acquire` (Xen's `rmb`
//!   after reading the indices: the bytes are read after the index that covers them, pairing
//!   with the guest's `wmb` before it stores `out_prod`); `out_cons` is stored with `Release`
//!   (Xen's `mb` before the store: every byte is read before the guest may reuse its slot);
//! * producing `in` ([`write_input`]): `in_cons` is loaded with `Acquire` (pairing with the
//!   guest's `mb` before it stores `in_cons`: its reads of the slots are done before keel
//!   reuses them); `in_prod` is stored with `Release` (Xen's `wmb`: the bytes are visible
//!   before the index that publishes them).
//!
//! The caller notifies the guest after either call (Xen's backend notifies after consuming,
//! so that a frontend waiting for room writes more).
//!
//! # Broken indices
//!
//! A well-behaved peer never lets `prod - cons` (wrapping) exceed the ring size. If it does,
//! the guest corrupted the indices: keel resynchronises, so the console works again instead
//! of staying wedged. For `out`, keel consumes at most one ring's worth (the newest bytes:
//! `out_cons` moves to `out_prod - 2048`); for `in`, the ring is declared empty (`in_prod`
//! moves to `in_cons`), so keel never writes over bytes it cannot tell are consumed. Both are
//! reported to the caller.

use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, Ordering};

use xen_abi::console_io::{mask_in, mask_out, XenconsInterface, XENCONS_IN_SIZE, XENCONS_OUT_SIZE};

/// Byte offset of `in[]` in the page.
pub const IN_OFFSET: usize = offset_of!(XenconsInterface, in_);
/// Byte offset of `out[]` in the page.
pub const OUT_OFFSET: usize = offset_of!(XenconsInterface, out);
/// Byte offset of `in_cons`.
pub const IN_CONS: usize = offset_of!(XenconsInterface, in_cons);
/// Byte offset of `in_prod`.
pub const IN_PROD: usize = offset_of!(XenconsInterface, in_prod);
/// Byte offset of `out_cons`.
pub const OUT_CONS: usize = offset_of!(XenconsInterface, out_cons);
/// Byte offset of `out_prod`.
pub const OUT_PROD: usize = offset_of!(XenconsInterface, out_prod);
/// Bytes of the page the protocol uses.
pub const INTERFACE_SIZE: usize = core::mem::size_of::<XenconsInterface>();

/// The console page as keel reaches it. The guest writes it concurrently, so the index words
/// are atomics and the rings are copied in and out (volatile copies in keel).
///
/// The functions of this module only ask for: `index` at [`IN_CONS`], [`IN_PROD`],
/// [`OUT_CONS`] or [`OUT_PROD`]; `read` within `out[]`, `write` within `in[]` (so `offset +
/// len <= INTERFACE_SIZE` always holds).
pub trait ConsolePage {
    /// The 32-bit index word at byte `offset`.
    fn index(&self, offset: usize) -> &AtomicU32;
    /// Copies `buf.len()` bytes out of the page, from byte `offset`.
    fn read(&self, offset: usize, buf: &mut [u8]);
    /// Copies `bytes` into the page, at byte `offset`.
    fn write(&self, offset: usize, bytes: &[u8]);
}

/// What [`read_output`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputRead {
    /// Bytes copied into the caller's buffer (and consumed from the ring).
    pub len: usize,
    /// The indices were broken (`out_prod` more than a ring ahead of `out_cons`): this many
    /// bytes were skipped to resynchronise.
    pub skipped: Option<u32>,
    /// Bytes still in the ring after this call (more than `buf` could take).
    pub remaining: u32,
}

/// Takes what the guest wrote to `out[]`: copies up to `buf.len()` bytes from `out_cons`
/// onwards into `buf` and advances `out_cons` past them. With broken indices, first moves
/// `out_cons` to one ring behind `out_prod` (see the module doc).
pub fn read_output(page: &impl ConsolePage, buf: &mut [u8]) -> OutputRead {
    let mut cons = page.index(OUT_CONS).load(Ordering::Relaxed);
    let prod = page.index(OUT_PROD).load(Ordering::Acquire);
    let mut skipped = None;
    if prod.wrapping_sub(cons) > XENCONS_OUT_SIZE as u32 {
        let resync = prod.wrapping_sub(XENCONS_OUT_SIZE as u32);
        skipped = Some(resync.wrapping_sub(cons));
        cons = resync;
    }
    let avail = prod.wrapping_sub(cons) as usize;
    let len = avail.min(buf.len());
    let mut done = 0;
    while done < len {
        let pos = mask_out(cons.wrapping_add(done as u32));
        let chunk = (len - done).min(XENCONS_OUT_SIZE - pos);
        page.read(OUT_OFFSET + pos, &mut buf[done..done + chunk]);
        done += chunk;
    }
    if len > 0 || skipped.is_some() {
        page.index(OUT_CONS).store(cons.wrapping_add(len as u32), Ordering::Release);
    }
    OutputRead { len, skipped, remaining: (avail - len) as u32 }
}

/// What [`write_input`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputWritten {
    /// Bytes put into `in[]` (a prefix of what was offered; the rest did not fit).
    pub len: usize,
    /// The indices were broken (`in_prod` more than a ring ahead of `in_cons`) and the ring
    /// was declared empty first.
    pub resynced: bool,
}

/// Puts as much of `bytes` into `in[]` as there is room for, never over bytes the guest has
/// not consumed yet, and advances `in_prod` past them. With broken indices, first moves
/// `in_prod` back to `in_cons` (see the module doc).
pub fn write_input(page: &impl ConsolePage, bytes: &[u8]) -> InputWritten {
    let cons = page.index(IN_CONS).load(Ordering::Acquire);
    let mut prod = page.index(IN_PROD).load(Ordering::Relaxed);
    let mut resynced = false;
    if prod.wrapping_sub(cons) > XENCONS_IN_SIZE as u32 {
        prod = cons;
        resynced = true;
    }
    let room = XENCONS_IN_SIZE - prod.wrapping_sub(cons) as usize;
    let len = room.min(bytes.len());
    let mut done = 0;
    while done < len {
        let pos = mask_in(prod.wrapping_add(done as u32));
        let chunk = (len - done).min(XENCONS_IN_SIZE - pos);
        page.write(IN_OFFSET + pos, &bytes[done..done + chunk]);
        done += chunk;
    }
    if len > 0 || resynced {
        page.index(IN_PROD).store(prod.wrapping_add(len as u32), Ordering::Release);
    }
    InputWritten { len, resynced }
}

/// Whether the guest has written output keel has not consumed yet (the periodic poll asks
/// before doing anything else).
pub fn has_output(page: &impl ConsolePage) -> bool {
    let cons = page.index(OUT_CONS).load(Ordering::Relaxed);
    page.index(OUT_PROD).load(Ordering::Acquire) != cons
}

/// Longest line kept of a guest's console output; the rest of a longer line is dropped (as
/// keel's `console_io` line buffer does).
pub const MAX_LINE: usize = 1024;

/// A domain's console output, cut into lines for keel's serial console, where each line gets
/// the domain's prefix (`(d1) `). The same policy as keel's `console_io` output: `\n` ends a
/// line, `\r` is dropped, printable ASCII and tabs are kept, every other byte shows as `.`,
/// and a line is cut at [`MAX_LINE`] bytes.
#[derive(Clone, Debug)]
pub struct LineBuffer {
    buf: [u8; MAX_LINE],
    len: usize,
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuffer {
    /// An empty line.
    pub const fn new() -> Self {
        Self { buf: [0; MAX_LINE], len: 0 }
    }

    /// Adds `bytes`; `emit` gets every line they complete, without its newline.
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&str)) {
        for &b in bytes {
            let kept = match b {
                b'\n' => {
                    emit(self.text());
                    self.len = 0;
                    continue;
                }
                b'\r' => continue,
                0x20..=0x7e | b'\t' => b,
                _ => b'.',
            };
            if self.len < MAX_LINE {
                self.buf[self.len] = kept;
                self.len += 1;
            }
        }
    }

    /// The partial line (for a flush when the domain goes away), which is then forgotten;
    /// `None` when there is none.
    pub fn take_partial(&mut self) -> Option<&str> {
        let len = core::mem::take(&mut self.len);
        (len > 0).then(|| core::str::from_utf8(&self.buf[..len]).unwrap_or(""))
    }

    fn text(&self) -> &str {
        // Only printable ASCII is ever stored.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// The byte that, typed three times in a row, switches serial input (Ctrl-A, as Xen's
/// default `conswitch=a`).
pub const SWITCH_CODE: u8 = 0x01;

/// Where serial input goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum InputTarget {
    /// keel itself (it has no use for input yet, and drops it).
    Hypervisor,
    /// A domain: dom0 reads it with `CONSOLEIO_read`, a domU finds it in its console ring.
    Domain(u16),
}

impl InputTarget {
    /// The domain input goes to, if it is one.
    pub fn domain(self) -> Option<u16> {
        match self {
            InputTarget::Hypervisor => None,
            InputTarget::Domain(id) => Some(id),
        }
    }

    /// The target after this one in the order Xen's switch cycles through (keel, then every
    /// live domain by id, then keel again), given the live domains' ids in increasing order.
    /// A target that died in the meantime is passed over the same way.
    pub fn next(self, live: impl IntoIterator<Item = u16>) -> InputTarget {
        let mut live = live.into_iter();
        match self {
            InputTarget::Hypervisor => live.next().map_or(InputTarget::Hypervisor, InputTarget::Domain),
            InputTarget::Domain(cur) => live.find(|&id| id > cur).map_or(InputTarget::Hypervisor, InputTarget::Domain),
        }
    }
}

/// Xen's serial input switch (`serial_rx`): Ctrl-A three times in a row switches input to
/// the next target and is swallowed; one or two Ctrl-A followed by another byte are passed on
/// before that byte, so a single Ctrl-A still reaches the guest (after the next keystroke).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputSwitch {
    held: u8,
}

impl InputSwitch {
    /// A switch with nothing held.
    pub const fn new() -> Self {
        Self { held: 0 }
    }

    /// Takes one received byte. Bytes for the current target are handed to `deliver`, in
    /// order; returns true when this byte completed the switch sequence (the caller moves
    /// input to the next target).
    pub fn feed(&mut self, byte: u8, mut deliver: impl FnMut(u8)) -> bool {
        if byte == SWITCH_CODE {
            self.held += 1;
            if self.held == 3 {
                self.held = 0;
                return true;
            }
            return false;
        }
        for _ in 0..core::mem::take(&mut self.held) {
            deliver(SWITCH_CODE);
        }
        deliver(byte);
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU8;
    use std::sync::Arc;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    /// A console page on the heap; every access is bounds-checked against what the module
    /// promises ([`ConsolePage`]'s contract), so a stray access fails the test.
    struct Page {
        bytes: Vec<AtomicU8>,
        idx: [AtomicU32; 4],
    }

    impl Page {
        fn new() -> Self {
            Self { bytes: (0..4096).map(|_| AtomicU8::new(0)).collect(), idx: Default::default() }
        }

        fn with_indices(in_cons: u32, in_prod: u32, out_cons: u32, out_prod: u32) -> Self {
            let p = Self::new();
            for (i, v) in [in_cons, in_prod, out_cons, out_prod].into_iter().enumerate() {
                p.idx[i].store(v, Ordering::SeqCst);
            }
            p
        }

        fn get(&self, offset: usize) -> u32 {
            self.index(offset).load(Ordering::SeqCst)
        }

        fn set(&self, offset: usize, v: u32) {
            self.index(offset).store(v, Ordering::SeqCst)
        }
    }

    impl ConsolePage for Page {
        fn index(&self, offset: usize) -> &AtomicU32 {
            match offset {
                IN_CONS => &self.idx[0],
                IN_PROD => &self.idx[1],
                OUT_CONS => &self.idx[2],
                OUT_PROD => &self.idx[3],
                _ => panic!("index word at {offset}"),
            }
        }

        fn read(&self, offset: usize, buf: &mut [u8]) {
            assert!(offset >= OUT_OFFSET && offset + buf.len() <= OUT_OFFSET + XENCONS_OUT_SIZE, "read {offset}");
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.bytes[offset + i].load(Ordering::SeqCst);
            }
        }

        fn write(&self, offset: usize, bytes: &[u8]) {
            // `in[]` starts the page (IN_OFFSET is 0).
            assert!(offset + bytes.len() <= IN_OFFSET + XENCONS_IN_SIZE, "write {offset}");
            for (i, &b) in bytes.iter().enumerate() {
                self.bytes[offset + i].store(b, Ordering::SeqCst);
            }
        }
    }

    /// The guest side, as Linux's `hvc_xen` does it (`__write_console`, `__read_console`).
    struct Frontend;

    impl Frontend {
        /// Writes what fits of `data` to `out[]`; returns how much (None: broken indices).
        fn write(page: &Page, data: &[u8]) -> Option<usize> {
            let cons = page.get(OUT_CONS);
            let mut prod = page.get(OUT_PROD);
            if prod.wrapping_sub(cons) > XENCONS_OUT_SIZE as u32 {
                return None;
            }
            let mut sent = 0;
            while sent < data.len() && prod.wrapping_sub(cons) < XENCONS_OUT_SIZE as u32 {
                page.bytes[OUT_OFFSET + mask_out(prod)].store(data[sent], Ordering::SeqCst);
                prod = prod.wrapping_add(1);
                sent += 1;
            }
            page.set(OUT_PROD, prod);
            Some(sent)
        }

        /// Reads up to `max` bytes of `in[]`.
        fn read(page: &Page, max: usize) -> Vec<u8> {
            let mut cons = page.get(IN_CONS);
            let prod = page.get(IN_PROD);
            assert!(prod.wrapping_sub(cons) <= XENCONS_IN_SIZE as u32, "Linux would BUG: indices broken");
            let mut out = Vec::new();
            while cons != prod && out.len() < max {
                out.push(page.bytes[IN_OFFSET + mask_in(cons)].load(Ordering::SeqCst));
                cons = cons.wrapping_add(1);
            }
            page.set(IN_CONS, cons);
            out
        }
    }

    fn drain(page: &Page, chunk: usize) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let r = read_output(page, &mut buf);
            assert_eq!(r.skipped, None);
            all.extend_from_slice(&buf[..r.len]);
            if r.len == 0 {
                return all;
            }
        }
    }

    #[test]
    fn layout_matches_xen() {
        assert_eq!((IN_OFFSET, OUT_OFFSET), (0, 1024));
        assert_eq!((IN_CONS, IN_PROD, OUT_CONS, OUT_PROD), (3072, 3076, 3080, 3084));
        const { assert!(INTERFACE_SIZE <= 4096) };
    }

    #[test]
    fn output_is_drained_in_order_across_the_wrap() {
        let page = Page::with_indices(0, 0, 2040, 2040);
        assert!(!has_output(&page));
        assert_eq!(Frontend::write(&page, b"hello, world\n"), Some(13));
        assert!(has_output(&page));
        let mut buf = [0u8; 5];
        let r = read_output(&page, &mut buf);
        assert_eq!(r, OutputRead { len: 5, skipped: None, remaining: 8 });
        assert_eq!(&buf, b"hello");
        assert_eq!(drain(&page, 3), b", world\n");
        assert_eq!(page.get(OUT_CONS), 2053);
        assert!(!has_output(&page));
    }

    #[test]
    fn a_full_ring_takes_two_reads_with_a_small_buffer() {
        let page = Page::with_indices(0, 0, u32::MAX - 100, u32::MAX - 100);
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        assert_eq!(Frontend::write(&page, &data), Some(2048), "the ring holds 2048 bytes");
        let got = drain(&page, 1000);
        assert_eq!(got, &data[..2048]);
        assert_eq!(Frontend::write(&page, &data[2048..]), Some(952));
        assert_eq!(drain(&page, 4096), &data[2048..]);
    }

    #[test]
    fn broken_output_indices_resynchronise() {
        // prod a million bytes ahead: keel takes the newest ring's worth and catches up.
        let page = Page::with_indices(0, 0, 10, 1_000_010);
        let mut buf = [0u8; 4096];
        let r = read_output(&page, &mut buf);
        assert_eq!(r, OutputRead { len: 2048, skipped: Some(1_000_010 - 2048 - 10), remaining: 0 });
        assert_eq!(page.get(OUT_CONS), 1_000_010);
        assert_eq!(read_output(&page, &mut buf).len, 0);
        // cons ahead of prod (prod - cons wraps): same rule.
        let page = Page::with_indices(0, 0, 500, 100);
        let r = read_output(&page, &mut buf[..16]);
        assert_eq!((r.len, r.remaining), (16, 2032));
        assert!(r.skipped.is_some());
        assert_eq!(page.get(OUT_CONS), 100u32.wrapping_sub(2048).wrapping_add(16));
        assert_eq!(drain(&page, 100).len(), 2032);
        // The guest can write again.
        assert_eq!(Frontend::write(&page, b"ok"), Some(2));
        assert_eq!(drain(&page, 100), b"ok");
        // Just over a ring ahead; and an empty buffer still resynchronises.
        let page = Page::with_indices(0, 0, 0, 2049);
        let r = read_output(&page, &mut []);
        assert_eq!(r, OutputRead { len: 0, skipped: Some(1), remaining: 2048 });
        assert_eq!(page.get(OUT_CONS), 1);
        assert_eq!(drain(&page, 4096).len(), 2048);
    }

    #[test]
    fn input_never_overwrites_unconsumed_bytes() {
        let page = Page::with_indices(1000, 1000, 0, 0);
        let data: Vec<u8> = (0..1500u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(write_input(&page, &data), InputWritten { len: 1024, resynced: false });
        assert_eq!(write_input(&page, &data[1024..]), InputWritten { len: 0, resynced: false }, "full");
        assert_eq!(Frontend::read(&page, 100), &data[..100]);
        assert_eq!(write_input(&page, &data[1024..]), InputWritten { len: 100, resynced: false });
        let mut got = Frontend::read(&page, usize::MAX);
        got.extend(Frontend::read(&page, usize::MAX));
        assert_eq!(got, [&data[100..1024], &data[1024..1124]].concat());
        assert_eq!(write_input(&page, b""), InputWritten { len: 0, resynced: false });
        assert_eq!(page.get(IN_PROD), 1000 + 1124);
    }

    #[test]
    fn broken_input_indices_resynchronise() {
        // The guest's in_cons ran past in_prod.
        let page = Page::with_indices(5000, 10, 0, 0);
        assert_eq!(write_input(&page, b"ls\n"), InputWritten { len: 3, resynced: true });
        assert_eq!(page.get(IN_PROD), 5003);
        assert_eq!(Frontend::read(&page, 10), b"ls\n");
        // Far behind: the same.
        let page = Page::with_indices(0, 4000, 0, 0);
        assert_eq!(write_input(&page, &[]), InputWritten { len: 0, resynced: true });
        assert_eq!(page.get(IN_PROD), 0);
    }

    #[test]
    fn lines_are_cut_cleaned_and_bounded() {
        let mut lb = LineBuffer::new();
        let mut lines: Vec<std::string::String> = Vec::new();
        lb.push(b"hel", |l| lines.push(l.into()));
        assert!(lines.is_empty());
        lb.push(b"lo\r\n\tx\x1b[0m\xff\n\n", |l| lines.push(l.into()));
        assert_eq!(lines, ["hello", "\tx.[0m.", ""]);
        let long = [b'a'; 3000];
        lines.clear();
        lb.push(&long, |l| lines.push(l.into()));
        lb.push(b"\nend", |l| lines.push(l.into()));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lb.take_partial(), Some("end"));
        assert_eq!(lb.take_partial(), None);
    }

    #[test]
    fn input_switch_takes_three_ctrl_a() {
        let mut sw = InputSwitch::new();
        let mut out = Vec::new();
        let mut feed = |sw: &mut InputSwitch, bytes: &[u8]| -> usize {
            bytes.iter().filter(|&&b| sw.feed(b, |x| out.push(x))).count()
        };
        assert_eq!(feed(&mut sw, b"ab"), 0);
        assert_eq!(feed(&mut sw, &[1, 1, 1]), 1);
        assert_eq!(feed(&mut sw, &[1, 1, b'x', 1, b'y']), 0, "held Ctrl-A are passed on");
        assert_eq!(feed(&mut sw, &[1; 7]), 2, "six switch twice, one is held");
        assert_eq!(feed(&mut sw, b"z"), 0);
        assert_eq!(out, [b'a', b'b', 1, 1, b'x', 1, b'y', 1, b'z']);
    }

    #[test]
    fn input_targets_cycle_through_live_domains() {
        use InputTarget::*;
        let live = [0u16, 1, 4];
        assert_eq!(Hypervisor.next(live), Domain(0));
        assert_eq!(Domain(0).next(live), Domain(1));
        assert_eq!(Domain(1).next(live), Domain(4));
        assert_eq!(Domain(4).next(live), Hypervisor);
        assert_eq!(Domain(2).next(live), Domain(4), "a target that died is passed over");
        assert_eq!(Hypervisor.next([]), Hypervisor);
        assert_eq!(Domain(3).next([]), Hypervisor);
        assert_eq!((Hypervisor.domain(), Domain(7).domain()), (None, Some(7)));
    }

    /// One step of a well-behaved guest and keel, in any order.
    #[derive(Clone, Debug)]
    enum Step {
        GuestWrite(Vec<u8>),
        KeelDrain(usize),
        KeelInput(Vec<u8>),
        GuestRead(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Step::GuestWrite),
            (0..3000usize).prop_map(Step::KeelDrain),
            proptest::collection::vec(any::<u8>(), 0..1500).prop_map(Step::KeelInput),
            (0..1500usize).prop_map(Step::GuestRead),
        ]
    }

    proptest! {
        /// With a well-behaved guest, whatever the starting indices: every byte the guest
        /// wrote comes out once, in order; every byte keel accepted reaches the guest once,
        /// in order; nothing is resynchronised and no access leaves the rings.
        #[test]
        fn well_behaved_peers_lose_and_duplicate_nothing(
            start_in in any::<u32>(),
            start_out in any::<u32>(),
            steps in proptest::collection::vec(step(), 1..60),
        ) {
            let page = Page::with_indices(start_in, start_in, start_out, start_out);
            let (mut written, mut drained, mut offered_in, mut received) = (vec![], vec![], vec![], vec![]);
            for s in &steps {
                match s {
                    Step::GuestWrite(data) => {
                        let n = Frontend::write(&page, data).expect("keel broke the out indices");
                        written.extend_from_slice(&data[..n]);
                    }
                    Step::KeelDrain(size) => {
                        let mut buf = vec![0u8; *size];
                        let before = page.get(OUT_PROD).wrapping_sub(page.get(OUT_CONS));
                        let r = read_output(&page, &mut buf);
                        prop_assert_eq!(r.skipped, None);
                        prop_assert_eq!(r.len, (before as usize).min(*size));
                        prop_assert_eq!(r.remaining as usize, before as usize - r.len);
                        drained.extend_from_slice(&buf[..r.len]);
                    }
                    Step::KeelInput(data) => {
                        let room = 1024 - page.get(IN_PROD).wrapping_sub(page.get(IN_CONS)) as usize;
                        let w = write_input(&page, data);
                        prop_assert!(!w.resynced);
                        prop_assert_eq!(w.len, room.min(data.len()));
                        offered_in.extend_from_slice(&data[..w.len]);
                    }
                    Step::GuestRead(max) => received.extend(Frontend::read(&page, *max)),
                }
                prop_assert!(page.get(OUT_PROD).wrapping_sub(page.get(OUT_CONS)) <= 2048);
                prop_assert!(page.get(IN_PROD).wrapping_sub(page.get(IN_CONS)) <= 1024);
            }
            let mut buf = vec![0u8; 4096];
            let r = read_output(&page, &mut buf);
            drained.extend_from_slice(&buf[..r.len]);
            received.extend(Frontend::read(&page, usize::MAX));
            prop_assert_eq!(drained, written);
            prop_assert_eq!(received, offered_in);
        }

        /// A hostile guest rewrites the indices at will: keel never leaves the rings (the
        /// page panics if it does), never takes more than a ring or the buffer, and always
        /// leaves indices a well-behaved guest can use.
        #[test]
        fn hostile_indices_stay_in_bounds(
            idx in proptest::collection::vec((any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()), 1..30),
            bufsize in 0..5000usize,
            input in proptest::collection::vec(any::<u8>(), 0..2000),
        ) {
            for &(a, b, c, d) in &idx {
                let page = Page::with_indices(a, b, c, d);
                let mut buf = vec![0u8; bufsize];
                let r = read_output(&page, &mut buf);
                prop_assert!(r.len <= bufsize.min(2048));
                prop_assert!(r.len + r.remaining as usize <= 2048);
                prop_assert!(page.get(OUT_PROD).wrapping_sub(page.get(OUT_CONS)) <= 2048);
                prop_assert_eq!(page.get(OUT_PROD), d, "keel never moves the guest's index");
                let w = write_input(&page, &input);
                prop_assert!(w.len <= input.len().min(1024));
                prop_assert!(page.get(IN_PROD).wrapping_sub(page.get(IN_CONS)) <= 1024);
                prop_assert_eq!(page.get(IN_CONS), a, "keel never moves the guest's index");
                prop_assert_eq!(Frontend::read(&page, usize::MAX).len(), page.get(IN_PROD).wrapping_sub(a) as usize);
            }
        }

        /// The switch passes every byte on except complete triples of Ctrl-A, in order.
        #[test]
        fn input_switch_passes_everything_but_triples(bytes in proptest::collection::vec(prop_oneof![Just(1u8), any::<u8>()], 0..200)) {
            let mut sw = InputSwitch::new();
            let mut out = Vec::new();
            let mut switches = 0;
            for &b in &bytes {
                if sw.feed(b, |x| out.push(x)) {
                    switches += 1;
                }
            }
            // Model: runs of Ctrl-A lose 3 per switch; a trailing run keeps its rest held.
            let mut want = Vec::new();
            let (mut run, mut want_switches) = (0, 0);
            for &b in &bytes {
                if b == SWITCH_CODE {
                    run += 1;
                    if run == 3 {
                        run = 0;
                        want_switches += 1;
                    }
                } else {
                    want.extend(std::iter::repeat_n(SWITCH_CODE, run));
                    run = 0;
                    want.push(b);
                }
            }
            prop_assert_eq!(out, want);
            prop_assert_eq!(switches, want_switches);
        }
    }

    /// A guest CPU and keel at once, on real threads: a stream of 200 000 bytes crosses the
    /// ring each way with neither side ever seeing broken indices.
    #[test]
    fn concurrent_peers_over_real_threads() {
        const N: usize = 200_000;
        let page = Arc::new(Page::with_indices(u32::MAX - 500, u32::MAX - 500, u32::MAX - 700, u32::MAX - 700));
        let data: Vec<u8> = (0..N).map(|i| (i * 31 + i / 256) as u8).collect();
        let guest = {
            let (page, data) = (page.clone(), data.clone());
            std::thread::spawn(move || {
                let (mut sent, mut received) = (0, Vec::new());
                while sent < N || received.len() < N {
                    if sent < N {
                        sent += Frontend::write(&page, &data[sent..(sent + 700).min(N)]).expect("broken out");
                    }
                    received.extend(Frontend::read(&page, 300));
                    std::thread::yield_now();
                }
                received
            })
        };
        let (mut drained, mut offered) = (Vec::new(), 0);
        let mut buf = [0u8; 512];
        let mut rounds = 0u64;
        while drained.len() < N || offered < N {
            rounds += 1;
            assert!(rounds < 50_000_000 && !(guest.is_finished() && drained.len() < N), "the guest stopped early");
            let r = read_output(&*page, &mut buf);
            assert_eq!(r.skipped, None);
            drained.extend_from_slice(&buf[..r.len]);
            if offered < N {
                let w = write_input(&*page, &data[offered..(offered + 400).min(N)]);
                assert!(!w.resynced);
                offered += w.len;
            }
            std::thread::yield_now();
        }
        assert_eq!(drained, data);
        assert_eq!(guest.join().unwrap(), data);
    }
}
