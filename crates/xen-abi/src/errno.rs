//! Xen's error numbers (`public/errno.h`).
//!
//! A hypercall returns `-errno` in RAX on failure. Xen's values are the Linux/x86 ones, so a
//! Linux guest passes them straight through to its callers. xenstore error replies carry the
//! *name* (`"ENOENT"`), which [`Errno::name`] and [`Errno::from_name`] provide.

use core::fmt;

macro_rules! errnos {
    ($($name:ident = $value:literal, $desc:literal;)*) => {
        /// A Xen error number. The discriminant is the positive value; hypercalls return its
        /// negation ([`Errno::as_ret`]).
        #[allow(clippy::upper_case_acronyms)] // The C names, so they can be grepped for.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(i32)]
        pub enum Errno {
            $(#[doc = $desc] $name = $value,)*
        }

        impl Errno {
            /// Every error number, in increasing order.
            pub const ALL: &'static [Errno] = &[$(Errno::$name,)*];

            /// The C name, e.g. `"EINVAL"`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Errno::$name => stringify!($name),)*
                }
            }

            /// A short description, e.g. `"Invalid argument"`.
            pub const fn description(self) -> &'static str {
                match self {
                    $(Errno::$name => $desc,)*
                }
            }

            /// The error with positive value `value`, if Xen defines one.
            pub const fn from_value(value: i32) -> Option<Errno> {
                match value {
                    $($value => Some(Errno::$name),)*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    EPERM = 1, "Operation not permitted";
    ENOENT = 2, "No such file or directory";
    ESRCH = 3, "No such process";
    EINTR = 4, "Interrupted system call";
    EIO = 5, "I/O error";
    ENXIO = 6, "No such device or address";
    E2BIG = 7, "Arg list too long";
    ENOEXEC = 8, "Exec format error";
    EBADF = 9, "Bad file number";
    ECHILD = 10, "No child processes";
    EAGAIN = 11, "Try again";
    ENOMEM = 12, "Out of memory";
    EACCES = 13, "Permission denied";
    EFAULT = 14, "Bad address";
    EBUSY = 16, "Device or resource busy";
    EEXIST = 17, "File exists";
    EXDEV = 18, "Cross-device link";
    ENODEV = 19, "No such device";
    ENOTDIR = 20, "Not a directory";
    EISDIR = 21, "Is a directory";
    EINVAL = 22, "Invalid argument";
    ENFILE = 23, "File table overflow";
    EMFILE = 24, "Too many open files";
    ENOSPC = 28, "No space left on device";
    EROFS = 30, "Read-only file system";
    EMLINK = 31, "Too many links";
    EDOM = 33, "Math argument out of domain of func";
    ERANGE = 34, "Math result not representable";
    EDEADLK = 35, "Resource deadlock would occur";
    ENAMETOOLONG = 36, "File name too long";
    ENOLCK = 37, "No record locks available";
    ENOSYS = 38, "Function not implemented";
    ENOTEMPTY = 39, "Directory not empty";
    ENODATA = 61, "No data available";
    ETIME = 62, "Timer expired";
    EBADMSG = 74, "Not a data message";
    EOVERFLOW = 75, "Value too large for defined data type";
    EILSEQ = 84, "Illegal byte sequence";
    ERESTART = 85, "Interrupted system call should be restarted";
    ENOTSOCK = 88, "Socket operation on non-socket";
    EMSGSIZE = 90, "Message too large";
    EOPNOTSUPP = 95, "Operation not supported on transport endpoint";
    EADDRINUSE = 98, "Address already in use";
    EADDRNOTAVAIL = 99, "Cannot assign requested address";
    ENOBUFS = 105, "No buffer space available";
    EISCONN = 106, "Transport endpoint is already connected";
    ENOTCONN = 107, "Transport endpoint is not connected";
    ETIMEDOUT = 110, "Connection timed out";
    ECONNREFUSED = 111, "Connection refused";
}

impl Errno {
    /// `EWOULDBLOCK`, an alias of [`Errno::EAGAIN`].
    pub const EWOULDBLOCK: Errno = Errno::EAGAIN;
    /// `EDEADLOCK`, an alias of [`Errno::EDEADLK`].
    pub const EDEADLOCK: Errno = Errno::EDEADLK;

    /// The positive error number.
    pub const fn value(self) -> i32 {
        self as i32
    }

    /// The hypercall return value for this error: `-errno`, as RAX carries it.
    pub const fn as_ret(self) -> i64 {
        -(self as i64)
    }

    /// The error a hypercall return value reports: `Some` for `-errno` of a known error,
    /// `None` for success (>= 0) or an unknown negative value.
    pub const fn from_ret(ret: i64) -> Option<Errno> {
        if ret >= 0 || ret < -(i32::MAX as i64) {
            return None;
        }
        Self::from_value(-ret as i32)
    }

    /// The error whose C name is `name` (as xenstore sends it in an error reply).
    pub fn from_name(name: &str) -> Option<Errno> {
        match name {
            "EWOULDBLOCK" => Some(Errno::EWOULDBLOCK),
            "EDEADLOCK" => Some(Errno::EDEADLOCK),
            _ => Self::ALL.iter().copied().find(|e| e.name() == name),
        }
    }
}

/// An unknown positive error number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownErrno(pub i32);

impl TryFrom<i32> for Errno {
    type Error = UnknownErrno;

    fn try_from(value: i32) -> Result<Self, Self::Error> {
        Self::from_value(value).ok_or(UnknownErrno(value))
    }
}

impl From<Errno> for i64 {
    /// The hypercall return value (`-errno`).
    fn from(e: Errno) -> i64 {
        e.as_ret()
    }
}

/// The C name (`EINVAL`); use [`Errno::description`] for the words.
impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn values_are_xens() {
        let expected: &[(Errno, i32)] = &[
            (Errno::EPERM, 1),
            (Errno::ENOENT, 2),
            (Errno::ESRCH, 3),
            (Errno::EINTR, 4),
            (Errno::EIO, 5),
            (Errno::ENXIO, 6),
            (Errno::E2BIG, 7),
            (Errno::ENOEXEC, 8),
            (Errno::EBADF, 9),
            (Errno::ECHILD, 10),
            (Errno::EAGAIN, 11),
            (Errno::EWOULDBLOCK, 11),
            (Errno::ENOMEM, 12),
            (Errno::EACCES, 13),
            (Errno::EFAULT, 14),
            (Errno::EBUSY, 16),
            (Errno::EEXIST, 17),
            (Errno::EXDEV, 18),
            (Errno::ENODEV, 19),
            (Errno::ENOTDIR, 20),
            (Errno::EISDIR, 21),
            (Errno::EINVAL, 22),
            (Errno::ENFILE, 23),
            (Errno::EMFILE, 24),
            (Errno::ENOSPC, 28),
            (Errno::EROFS, 30),
            (Errno::EMLINK, 31),
            (Errno::EDOM, 33),
            (Errno::ERANGE, 34),
            (Errno::EDEADLK, 35),
            (Errno::EDEADLOCK, 35),
            (Errno::ENAMETOOLONG, 36),
            (Errno::ENOLCK, 37),
            (Errno::ENOSYS, 38),
            (Errno::ENOTEMPTY, 39),
            (Errno::ENODATA, 61),
            (Errno::ETIME, 62),
            (Errno::EBADMSG, 74),
            (Errno::EOVERFLOW, 75),
            (Errno::EILSEQ, 84),
            (Errno::ERESTART, 85),
            (Errno::ENOTSOCK, 88),
            (Errno::EMSGSIZE, 90),
            (Errno::EOPNOTSUPP, 95),
            (Errno::EADDRINUSE, 98),
            (Errno::EADDRNOTAVAIL, 99),
            (Errno::ENOBUFS, 105),
            (Errno::EISCONN, 106),
            (Errno::ENOTCONN, 107),
            (Errno::ETIMEDOUT, 110),
            (Errno::ECONNREFUSED, 111),
        ];
        for &(e, v) in expected {
            assert_eq!(e.value(), v, "{e}");
            assert_eq!(e as i32, v, "{e}");
        }
        // Every variant is in the table above (the two aliases are not variants).
        assert_eq!(Errno::ALL.len(), expected.len() - 2);
    }

    #[test]
    fn all_is_sorted_and_round_trips() {
        assert!(Errno::ALL.windows(2).all(|w| w[0].value() < w[1].value()));
        for &e in Errno::ALL {
            assert_eq!(Errno::from_value(e.value()), Some(e));
            assert_eq!(Errno::try_from(e.value()), Ok(e));
            assert_eq!(Errno::from_ret(e.as_ret()), Some(e));
            assert_eq!(Errno::from_name(e.name()), Some(e));
        }
    }

    #[test]
    fn ret_is_negative() {
        assert_eq!(Errno::EPERM.as_ret(), -1);
        assert_eq!(Errno::ENOSYS.as_ret(), -38);
        assert_eq!(i64::from(Errno::EOPNOTSUPP), -95);
        assert_eq!(Errno::ECONNREFUSED.as_ret(), -111);
    }

    #[test]
    fn unknown_values_are_rejected() {
        for v in [0, 15, 25, 40, 96, 112, -1, i32::MIN, i32::MAX] {
            assert_eq!(Errno::from_value(v), None, "{v}");
            assert_eq!(Errno::try_from(v), Err(UnknownErrno(v)));
        }
        for ret in [0, 1, 38, -15, i64::MIN, i64::from(i32::MIN), -(1 << 40)] {
            assert_eq!(Errno::from_ret(ret), None, "{ret}");
        }
        assert_eq!(Errno::from_name("EWHATEVER"), None);
        assert_eq!(Errno::from_name("einval"), None);
    }

    #[test]
    fn aliases_by_name() {
        assert_eq!(Errno::from_name("EWOULDBLOCK"), Some(Errno::EAGAIN));
        assert_eq!(Errno::from_name("EDEADLOCK"), Some(Errno::EDEADLK));
    }

    #[test]
    fn display_is_the_c_name() {
        assert_eq!(Errno::EINVAL.to_string(), "EINVAL");
        assert_eq!(Errno::E2BIG.to_string(), "E2BIG");
        assert_eq!(Errno::ENOSYS.description(), "Function not implemented");
    }
}
