//! `multicall`: several hypercalls in one trap. Each entry's result is written back; the
//! list is preempted and continued like any long hypercall (a preempted entry is rewritten
//! with its own continuation arguments first, as Xen does). A multicall inside a multicall is
//! -EINVAL. A block or yield asked for by an entry happens once the whole list is done.

use xen_abi::errno::Errno;
use xen_abi::multicall::MulticallEntry;

use super::{Call, Gva, HcResult, Outcome};

/// Bytes per entry.
const ENTRY: u64 = core::mem::size_of::<MulticallEntry>() as u64;

/// `multicall(call_list, nr_calls)`.
pub fn multicall(c: &mut Call<'_>, list: Gva, nr_calls: u32) -> HcResult {
    if c.in_multicall {
        return Err(Errno::EINVAL);
    }
    let mut after = Outcome::Ret(0);
    for i in 0..nr_calls as u64 {
        let at = Gva(list.0.wrapping_add(i * ENTRY));
        if i > 0 && c.preempt_due() {
            return Ok(c.continuation([at.0, (nr_calls as u64) - i, 0, 0, 0]));
        }
        let mut e: MulticallEntry = c.read(at)?;
        let args = [e.args[0], e.args[1], e.args[2], e.args[3], e.args[4]];
        c.in_multicall = true;
        let r = super::invoke(c, e.op, args);
        c.in_multicall = false;
        let (result, stop) = match r {
            Ok(Outcome::Ret(v)) => (v as u64, false),
            Ok(Outcome::Block) | Ok(Outcome::Yield) | Ok(Outcome::BlockUntil(_)) => {
                after = r.unwrap_or(Outcome::Ret(0));
                (0, false)
            }
            Ok(Outcome::Stop) | Ok(Outcome::Offline) => (0, true),
            Ok(Outcome::Continue(a)) => {
                // This entry continues later: store its new arguments, then continue the
                // list from it.
                e.args[..5].copy_from_slice(&a);
                c.write(at, &e)?;
                return Ok(c.continuation([at.0, (nr_calls as u64) - i, 0, 0, 0]));
            }
            Err(errno) => (errno.as_ret() as u64, false),
        };
        e.result = result;
        c.write(Gva(at.0 + core::mem::offset_of!(MulticallEntry, result) as u64), &e.result)?;
        if stop {
            return r;
        }
    }
    Ok(after)
}
