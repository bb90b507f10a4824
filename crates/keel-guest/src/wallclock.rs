//! The wall clock guests see: the time of day of the host's CMOS real-time clock at boot,
//! turned into seconds since the Unix epoch (what shared_info's `wc_sec` counts from).
//!
//! keel reads the RTC registers once; this module only interprets them, so that the BCD and
//! 12-hour encodings, the century and the calendar arithmetic are tested on the host.

/// The RTC's time registers as read (seconds 0x00, minutes 0x02, hours 0x04, day 0x07, month
/// 0x08, year 0x09, century 0x32 if the FADT names it), plus status register B (0x0B).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct RtcRegisters {
    /// Register 0x00.
    pub seconds: u8,
    /// Register 0x02.
    pub minutes: u8,
    /// Register 0x04 (bit 7 = PM in 12-hour mode).
    pub hours: u8,
    /// Register 0x07.
    pub day: u8,
    /// Register 0x08.
    pub month: u8,
    /// Register 0x09 (two digits).
    pub year: u8,
    /// The century register, if the platform has one.
    pub century: Option<u8>,
    /// Status register B: bit 2 = binary (else BCD), bit 1 = 24-hour mode.
    pub status_b: u8,
}

fn bcd(v: u8) -> Option<u8> {
    let (hi, lo) = (v >> 4, v & 0xf);
    (hi <= 9 && lo <= 9).then_some(hi * 10 + lo)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl RtcRegisters {
    /// Seconds since the Unix epoch, or `None` if the registers hold no valid date (a broken
    /// or absent RTC: keel then reports time zero rather than inventing one).
    pub fn unix_seconds(&self) -> Option<u64> {
        let binary = self.status_b & 0x04 != 0;
        let h24 = self.status_b & 0x02 != 0;
        let conv = |v: u8| if binary { Some(v) } else { bcd(v) };
        let sec = conv(self.seconds)?;
        let min = conv(self.minutes)?;
        let pm = !h24 && self.hours & 0x80 != 0;
        let mut hour = conv(self.hours & 0x7f)?;
        if !h24 {
            if !(1..=12).contains(&hour) {
                return None;
            }
            hour = (hour % 12) + if pm { 12 } else { 0 };
        }
        let day = conv(self.day)?;
        let month = conv(self.month)?;
        let yy = conv(self.year)?;
        let century = match self.century {
            Some(c) => conv(c)?,
            // No century register: the RTC's two digits are taken as 20xx (as Linux does for
            // years below 70 — keel boots after 2000).
            None => 20,
        };
        let year = century as i64 * 100 + yy as i64;
        if sec > 59 || min > 59 || hour > 23 || !(1..=31).contains(&day) || !(1..=12).contains(&month) || yy > 99 {
            return None;
        }
        let days = days_from_civil(year, month as u32, day as u32);
        let s = days.checked_mul(86_400)? + hour as i64 * 3600 + min as i64 * 60 + sec as i64;
        u64::try_from(s).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 25), 20_782);
    }

    #[test]
    fn bcd_24_hour() {
        // 2026-11-25 02:39:29 in BCD, 24-hour mode, century register 0x20.
        let r = RtcRegisters {
            seconds: 0x29,
            minutes: 0x39,
            hours: 0x02,
            day: 0x25,
            month: 0x11,
            year: 0x26,
            century: Some(0x20),
            status_b: 0x02,
        };
        assert_eq!(r.unix_seconds(), Some(20_782 * 86_400 + 2 * 3600 + 39 * 60 + 29));
    }

    #[test]
    fn binary_12_hour_pm() {
        let r = RtcRegisters {
            seconds: 0,
            minutes: 0,
            hours: 0x80 | 12,
            day: 1,
            month: 1,
            year: 70 - 70,
            century: Some(20),
            status_b: 0x04,
        };
        // 12 PM is noon.
        assert_eq!(r.unix_seconds(), Some(days_from_civil(2000, 1, 1) as u64 * 86_400 + 12 * 3600));
        let midnight = RtcRegisters { hours: 12, ..r };
        assert_eq!(midnight.unix_seconds(), Some(days_from_civil(2000, 1, 1) as u64 * 86_400));
    }

    #[test]
    fn garbage_is_rejected() {
        let r = RtcRegisters { seconds: 0xff, ..Default::default() };
        assert_eq!(r.unix_seconds(), None);
        let r = RtcRegisters { month: 0x13, day: 1, status_b: 0x06, ..Default::default() };
        assert_eq!(r.unix_seconds(), None);
        let zero_day = RtcRegisters { month: 1, day: 0, status_b: 0x06, ..Default::default() };
        assert_eq!(zero_day.unix_seconds(), None);
    }
}
