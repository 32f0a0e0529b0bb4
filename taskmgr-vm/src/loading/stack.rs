//! The initial stack of a task, exactly as Linux builds it for a static executable: `argc`,
//! the `argv` and `envp` pointer arrays, the auxiliary vector, and above them the strings and
//! the 16 random bytes `AT_RANDOM` points at.

/// Most bytes of argument and environment strings (with their terminators) a task may have:
/// they are copied onto the stack, which is backed eagerly only this far.
pub(crate) const ARGS_BYTES_MAX: usize = 256 * 1024;

const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_BASE: u64 = 7;
const AT_FLAGS: u64 = 8;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_PLATFORM: u64 = 15;
const AT_HWCAP: u64 = 16;
const AT_CLKTCK: u64 = 17;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;
const AT_HWCAP2: u64 = 26;
const AT_EXECFN: u64 = 31;

/// Clock ticks per second reported to the task (`sysconf(_SC_CLK_TCK)`), as Linux.
pub(crate) const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// What goes on the stack besides the strings.
#[derive(Debug, Clone)]
pub(crate) struct StackInfo {
    pub(crate) phdr: u64,
    pub(crate) phnum: u64,
    pub(crate) entry: u64,
    /// Where the program's interpreter is loaded (AT_BASE); 0 without one.
    pub(crate) base: u64,
    /// CPUID.1:EDX, as Linux reports it in AT_HWCAP.
    pub(crate) hwcap: u64,
    pub(crate) random: [u8; 16],
    pub(crate) uid: u64,
    pub(crate) gid: u64,
}

/// The stack's bytes, to be placed so that they end at `top`, and the initial RSP.
#[derive(Debug)]
pub(crate) struct InitialStack {
    pub(crate) bytes: Vec<u8>,
    pub(crate) rsp: u64,
}

/// Too many argument or environment bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooBig(pub(crate) usize);

/// Builds the stack for `argv` and `envp` (each string without its terminator) under `top`.
pub(crate) fn build(
    top: u64,
    argv: &[Vec<u8>],
    envp: &[Vec<u8>],
    execfn: &[u8],
    info: &StackInfo,
) -> Result<InitialStack, TooBig> {
    let strings: usize =
        argv.iter().chain(envp).map(|s| s.len() + 1).sum::<usize>() + execfn.len() + 1;
    if strings > ARGS_BYTES_MAX {
        return Err(TooBig(strings));
    }
    // Random bytes and strings, low to high, ending 8 bytes below `top` (8 zero bytes stay on
    // top, as on Linux).
    let mut area: Vec<u8> = Vec::with_capacity(strings + 32);
    let offsets = |data: &[u8], nul: bool, area: &mut Vec<u8>| -> usize {
        let at = area.len();
        area.extend_from_slice(data);
        if nul {
            area.push(0);
        }
        at
    };
    let random_off = offsets(&info.random, false, &mut area);
    let platform_off = offsets(b"x86_64", true, &mut area);
    let arg_off: Vec<usize> = argv.iter().map(|s| offsets(s, true, &mut area)).collect();
    let env_off: Vec<usize> = envp.iter().map(|s| offsets(s, true, &mut area)).collect();
    let execfn_off = offsets(execfn, true, &mut area);
    let strings_bottom = (top - 8 - area.len() as u64) & !7;
    let at = |offset: usize| strings_bottom + offset as u64;
    let (random_at, platform_at, execfn_at) = (at(random_off), at(platform_off), at(execfn_off));
    let arg_at: Vec<u64> = arg_off.into_iter().map(at).collect();
    let env_at: Vec<u64> = env_off.into_iter().map(at).collect();

    let auxv: [(u64, u64); 19] = [
        (AT_PHDR, info.phdr),
        (AT_PHENT, u64::from(crate::loading::elf::PHENT_SIZE)),
        (AT_PHNUM, info.phnum),
        (AT_PAGESZ, 4096),
        (AT_BASE, info.base),
        (AT_FLAGS, 0),
        (AT_ENTRY, info.entry),
        (AT_UID, info.uid),
        (AT_EUID, info.uid),
        (AT_GID, info.gid),
        (AT_EGID, info.gid),
        (AT_SECURE, 0),
        (AT_RANDOM, random_at),
        (AT_HWCAP, info.hwcap),
        // No FSGSBASE advertised: the domain does not set CR4.FSGSBASE.
        (AT_HWCAP2, 0),
        (AT_CLKTCK, CLOCK_TICKS_PER_SECOND),
        (AT_PLATFORM, platform_at),
        (AT_EXECFN, execfn_at),
        (AT_NULL, 0),
    ];
    let words = 1 + argv.len() + 1 + envp.len() + 1 + auxv.len() * 2;
    // RSP 16-byte aligned at argc; any gap is between the auxv and the strings.
    let rsp = (strings_bottom - words as u64 * 8) & !15;
    let mut table: Vec<u64> = Vec::with_capacity(words);
    table.push(argv.len() as u64);
    table.extend(&arg_at);
    table.push(0);
    table.extend(&env_at);
    table.push(0);
    for (key, value) in auxv {
        table.push(key);
        table.push(value);
    }
    let total = usize::try_from(top - rsp).map_err(|_| TooBig(strings))?;
    let mut bytes = vec![0u8; total];
    for (index, word) in table.iter().enumerate() {
        bytes[index * 8..index * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    let area_start = usize::try_from(strings_bottom - rsp).map_err(|_| TooBig(strings))?;
    bytes[area_start..area_start + area.len()].copy_from_slice(&area);
    Ok(InitialStack { bytes, rsp })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argc_argv_envp_and_auxv_are_where_linux_puts_them() {
        let info = StackInfo {
            phdr: 0x400040,
            phnum: 9,
            entry: 0x401000,
            base: 0x7fff_1000_0000,
            hwcap: 0x178bfbff,
            random: [7; 16],
            uid: 0,
            gid: 0,
        };
        let top = 0x7fff_0000_0000;
        let stack = build(
            top,
            &[b"echo".to_vec(), b"hi".to_vec()],
            &[b"A=1".to_vec()],
            b"/bin/echo",
            &info,
        )
        .expect("fits");
        assert_eq!(stack.rsp % 16, 0);
        let word = |i: usize| u64::from_le_bytes(stack.bytes[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(word(0), 2);
        let string = |address: u64| {
            let at = (address - stack.rsp) as usize;
            let end = stack.bytes[at..].iter().position(|b| *b == 0).unwrap();
            String::from_utf8(stack.bytes[at..at + end].to_vec()).unwrap()
        };
        assert_eq!(string(word(1)), "echo");
        assert_eq!(string(word(2)), "hi");
        assert_eq!(word(3), 0);
        assert_eq!(string(word(4)), "A=1");
        assert_eq!(word(5), 0);
        assert_eq!((word(6), word(7)), (AT_PHDR, 0x400040));
        // AT_BASE, the fifth entry, tells a dynamic loader where it was put.
        assert_eq!((word(14), word(15)), (AT_BASE, 0x7fff_1000_0000));
        assert_eq!(stack.rsp + stack.bytes.len() as u64, top);
    }
}
