//! The character devices a domain has under `/dev`, as Linux answers them.

use crate::kernel::syscalls::Errno;

/// A device a descriptor can refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Device {
    /// `/dev/null` (and the empty stdin): reads end of file, writes are discarded.
    Null,
    /// `/dev/zero`: reads zeros, writes are discarded.
    Zero,
    /// `/dev/full`: reads zeros, writes fail with `ENOSPC`.
    Full,
    /// `/dev/random` and `/dev/urandom`: reads random bytes, writes are discarded (as
    /// Linux does for an unprivileged writer, which may not credit entropy).
    Random,
}

/// The descriptor a path names as another name for it: `/dev/stdin`, `/dev/stdout`,
/// `/dev/stderr`, `/dev/fd/N` and `/proc/self/fd/N`.
pub(crate) fn descriptor_alias(path: &[u8]) -> Option<u64> {
    match path {
        b"/dev/stdin" => return Some(0),
        b"/dev/stdout" => return Some(1),
        b"/dev/stderr" => return Some(2),
        _ => {}
    }
    let number = path
        .strip_prefix(b"/dev/fd/")
        .or_else(|| path.strip_prefix(b"/proc/self/fd/"))?;
    if number.is_empty() || number.len() > 4 || !number.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(number).ok()?.parse().ok()
}

/// `/dev/tty`: the domain's tasks have no controlling terminal.
pub(crate) const TTY: &[u8] = b"/dev/tty";

impl Device {
    /// The device at `path`, if it names one.
    pub(crate) fn at(path: &[u8]) -> Option<Device> {
        Some(match path {
            b"/dev/null" => Device::Null,
            b"/dev/zero" => Device::Zero,
            b"/dev/full" => Device::Full,
            b"/dev/random" | b"/dev/urandom" => Device::Random,
            _ => return None,
        })
    }

    /// Its path under `/dev` (`/proc/<pid>/fd/N` names it so).
    pub(crate) fn path(self) -> &'static [u8] {
        match self {
            Device::Null => b"/dev/null",
            Device::Zero => b"/dev/zero",
            Device::Full => b"/dev/full",
            Device::Random => b"/dev/urandom",
        }
    }

    /// Its (major, minor) device number, as Linux numbers it.
    pub(crate) fn number(self) -> (u32, u32) {
        match self {
            Device::Null => (1, 3),
            Device::Zero => (1, 5),
            Device::Full => (1, 7),
            Device::Random => (1, 9),
        }
    }

    /// A read of `count` bytes.
    pub(crate) fn read(self, count: usize) -> Result<Vec<u8>, Errno> {
        match self {
            Device::Null => Ok(Vec::new()),
            Device::Zero | Device::Full => Ok(vec![0; count]),
            Device::Random => {
                let mut bytes = vec![0; count];
                crate::loading::loader::random_bytes(&mut bytes);
                Ok(bytes)
            }
        }
    }

    /// A write of `count` bytes: how many it takes.
    pub(crate) fn write(self, count: usize) -> Result<usize, Errno> {
        match self {
            Device::Full => Err(Errno::ENOSPC),
            Device::Null | Device::Zero | Device::Random => Ok(count),
        }
    }
}
