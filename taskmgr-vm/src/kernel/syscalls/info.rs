//! Identity and limits: `uname` (the domain's kernel version), resource limits, usage,
//! `sysinfo`, `prctl`, `arch_prctl` (the FS base for TLS), CPU affinity, `getrandom`.

use super::{Errno, SysResult};
use crate::hypervisor::cpu::Vcpu;
use crate::kernel::process::Process;
use xeno_taskmgr_kit::metering::thread_cpu_ns;

/// Most random bytes one getrandom returns (a larger request gets a short count, as Linux
/// does past 32 MiB).
const RANDOM_BYTES_MAX: u64 = 1 << 20;
const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;
const ARCH_SET_GS: u64 = 0x1001;
const ARCH_GET_GS: u64 = 0x1004;
const PR_SET_NAME: u64 = 15;
const PR_GET_NAME: u64 = 16;
/// RLIMIT_STACK, the only limit that differs from "unlimited" besides files.
const RLIMIT_STACK: u64 = 3;
const RLIMIT_NOFILE: u64 = 7;
const RLIMIT_AS: u64 = 9;

fn field(text: &str) -> [u8; 65] {
    let mut out = [0u8; 65];
    let bytes = text.as_bytes();
    let len = bytes.len().min(64);
    out[..len].copy_from_slice(&bytes[..len]);
    out
}

pub(crate) fn uname(process: &mut Process, buf: u64) -> SysResult {
    let mut out = Vec::with_capacity(65 * 6);
    for text in [
        "Linux",
        "xenoserve",
        process.release.as_str(),
        "#1 SMP Xenoserve paravirtual domain",
        "x86_64",
        "(none)",
    ] {
        out.extend_from_slice(&field(text));
    }
    process.write_user(buf, &out)?;
    Ok(0)
}

fn limit_of(process: &Process, resource: u64) -> Result<(u64, u64), Errno> {
    const INFINITY: u64 = u64::MAX;
    match resource {
        RLIMIT_STACK => Ok((
            crate::loading::loader::STACK_BYTES_MAX,
            crate::loading::loader::STACK_BYTES_MAX,
        )),
        RLIMIT_NOFILE => Ok((
            crate::kernel::fds::FDS_MAX as u64,
            crate::kernel::fds::FDS_MAX as u64,
        )),
        RLIMIT_AS => {
            let ram = process.vm.physical.ram.bytes();
            Ok((ram, ram))
        }
        0..=15 => Ok((INFINITY, INFINITY)),
        _ => Err(Errno::EINVAL),
    }
}

pub(crate) fn getrlimit(process: &mut Process, resource: u64, buf: u64) -> SysResult {
    let (soft, hard) = limit_of(process, resource)?;
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&soft.to_le_bytes());
    out[8..].copy_from_slice(&hard.to_le_bytes());
    process.write_user(buf, &out)?;
    Ok(0)
}

pub(crate) fn prlimit(
    process: &mut Process,
    pid: u64,
    resource: u64,
    new: u64,
    old: u64,
) -> SysResult {
    if pid != 0 && pid != process.pid as u64 {
        return Err(Errno::ESRCH);
    }
    if old != 0 {
        getrlimit(process, resource, old)?;
    } else {
        limit_of(process, resource)?;
    }
    if new != 0 {
        // Limits can be lowered in name only: the domain's own limits are what hold.
        process.read_user(new, 16)?;
    }
    Ok(0)
}

pub(crate) fn getrusage(process: &mut Process, who: u64, buf: u64) -> SysResult {
    let (cpu_ns, max_rss_kb) = match who as u32 as i32 {
        0 => (
            super::time::process_cpu_ns(process),
            process.mm.bytes_owned() / 1024,
        ), // RUSAGE_SELF
        1 => (thread_cpu_ns(), process.mm.bytes_owned() / 1024), // RUSAGE_THREAD
        -1 => (process.shared.cpu.children(), 0),                // RUSAGE_CHILDREN
        _ => return Err(Errno::EINVAL),
    };
    process.write_user(buf, &rusage_bytes(cpu_ns, max_rss_kb))?;
    Ok(0)
}

/// A `struct rusage` with `cpu_ns` as user time (the VMM's share is not told apart) and
/// `max_rss_kb`; every other field 0.
pub(crate) fn rusage_bytes(cpu_ns: u64, max_rss_kb: u64) -> [u8; 144] {
    let cpu_us = cpu_ns / 1000;
    let mut out = [0u8; 144];
    out[..8].copy_from_slice(&(cpu_us / 1_000_000).to_le_bytes());
    out[8..16].copy_from_slice(&(cpu_us % 1_000_000).to_le_bytes());
    out[32..40].copy_from_slice(&max_rss_kb.to_le_bytes());
    out
}

pub(crate) fn sysinfo(process: &mut Process, buf: u64) -> SysResult {
    let uptime = process.boot.elapsed().as_secs() + 1;
    let ram = process.vm.physical.ram.bytes();
    let free = process.vm.physical.free_frames() * crate::hypervisor::vm::layout::PAGE_SIZE;
    let mut out = [0u8; 112];
    out[..8].copy_from_slice(&uptime.to_le_bytes());
    out[32..40].copy_from_slice(&ram.to_le_bytes()); // totalram
    out[40..48].copy_from_slice(&free.to_le_bytes()); // freeram
    out[80..82].copy_from_slice(&1u16.to_le_bytes()); // procs
    out[104..108].copy_from_slice(&1u32.to_le_bytes()); // mem_unit
    process.write_user(buf, &out)?;
    Ok(0)
}

pub(crate) fn prctl(process: &mut Process, option: u64, arg: u64) -> SysResult {
    match option {
        PR_GET_NAME => {
            let name = crate::kernel::procfs::comm(process);
            process.write_user(arg, &field(&name)[..16])?;
            Ok(0)
        }
        PR_SET_NAME => {
            let mut name = process.read_cstr(arg, 16).or_else(|error| {
                // A name of 16 bytes or more without its NUL is cut at 15, as Linux does.
                if error == Errno::ENAMETOOLONG {
                    process.read_user(arg, 15)
                } else {
                    Err(error)
                }
            })?;
            name.truncate(15);
            process.comm = Some(name);
            process.publish();
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

pub(crate) fn arch_prctl(
    process: &mut Process,
    vcpu: &mut Vcpu,
    code: u64,
    addr: u64,
) -> SysResult {
    match code {
        ARCH_SET_FS => {
            if addr >= crate::hypervisor::vm::layout::USER_TOP {
                return Err(Errno::EPERM);
            }
            vcpu.set_fs_base(addr).map_err(|_| Errno::EIO)?;
            Ok(0)
        }
        ARCH_GET_FS => {
            // Read back, never cached: ring 3 can change it with wrfsbase.
            let base = vcpu.sregs().map_err(|_| Errno::EIO)?.fs.base;
            process.write_u64(addr, base)?;
            Ok(0)
        }
        ARCH_SET_GS | ARCH_GET_GS => Err(Errno::EINVAL),
        _ => Err(Errno::EINVAL),
    }
}

pub(crate) fn sched_getaffinity(process: &mut Process, size: u64, mask: u64) -> SysResult {
    if size < 8 {
        return Err(Errno::EINVAL);
    }
    // One CPU: the task's vCPU.
    process.write_u64(mask, 1)?;
    Ok(8)
}

pub(crate) fn getrandom(process: &mut Process, buf: u64, len: u64, _flags: u64) -> SysResult {
    let len = len.min(RANDOM_BYTES_MAX);
    let mut data = vec![0u8; usize::try_from(len).unwrap_or(0)];
    crate::loading::loader::random_bytes(&mut data);
    process.write_user(buf, &data)?;
    Ok(len)
}

/// `setreuid`, `setresuid` and their group forms: each id must be 0 (the domain's only user)
/// or -1 (unchanged).
pub(super) fn set_ids(ids: &[u64]) -> SysResult {
    if ids
        .iter()
        .all(|id| *id as u32 == 0 || *id as u32 == u32::MAX)
    {
        Ok(0)
    } else {
        Err(Errno::EPERM)
    }
}

/// `getresuid` and `getresgid`: real, effective and saved ids, all 0.
pub(super) fn get_ids(process: &mut Process, pointers: &[u64]) -> SysResult {
    for pointer in pointers {
        process.write_user(*pointer, &0u32.to_le_bytes())?;
    }
    Ok(0)
}
