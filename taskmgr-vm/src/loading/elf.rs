//! Reading an x86-64 ELF executable: its header, program headers, loadable segments and the
//! interpreter it asks for. Everything is bounds-checked against the file: the bytes come
//! from a client.
//!
//! Accepted: `ET_EXEC` (linked at a fixed address, such as Debian's busybox at 0x400000) and
//! `ET_DYN` (position independent: a static-PIE or dynamically linked program, or a dynamic
//! loader itself). A `PT_INTERP` names the dynamic loader the program needs, which the loader
//! maps beside it. Refused, with the reason: anything else.

use thiserror::Error;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const PT_GNU_STACK: u32 = 0x6474_e551;
/// Size of a 64-bit program header.
pub(crate) const PHENT_SIZE: u16 = 56;
const EHDR_SIZE: usize = 64;
/// Most program headers accepted: real executables have about a dozen.
const PHNUM_MAX: u16 = 256;
/// Most loadable segments accepted.
const LOADS_MAX: usize = 32;

/// Why an executable cannot run in a domain.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ElfError {
    /// Not an ELF file, or not one for this machine.
    #[error("not an x86-64 ELF executable: {0}")]
    NotElf(&'static str),
    /// A dynamically linked executable whose interpreter is not in the session.
    #[error(
        "it is dynamically linked and its interpreter {0:?} is not in the session (link it statically, or ship the interpreter and its libraries)"
    )]
    Dynamic(String),
    /// An interpreter that is itself dynamically linked, or not position independent.
    #[error("the interpreter {0:?} is not a dynamic loader (ET_DYN without PT_INTERP)")]
    BadInterpreter(String),
    /// A header or segment outside the file, or an impossible layout.
    #[error("malformed ELF: {0}")]
    Malformed(&'static str),
}

/// A segment to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Virtual address (before the load bias), file offset, bytes in the file and in memory.
    pub(crate) vaddr: u64,
    pub(crate) offset: u64,
    pub(crate) file_size: u64,
    pub(crate) mem_size: u64,
    /// `PF_X | PF_W | PF_R` as PROT_EXEC | PROT_WRITE | PROT_READ.
    pub(crate) prot: u32,
}

/// What the loader needs from an executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Executable {
    /// Position independent (loaded at a bias).
    pub(crate) pie: bool,
    pub(crate) entry: u64,
    pub(crate) segments: Vec<Segment>,
    /// Address of the program headers in memory (before bias), for AT_PHDR.
    pub(crate) phdr_vaddr: u64,
    pub(crate) phnum: u16,
    /// Whether PT_GNU_STACK asks for an executable stack.
    pub(crate) exec_stack: bool,
    /// The dynamic loader `PT_INTERP` names, if any.
    pub(crate) interpreter: Option<String>,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn prot_of(flags: u32) -> u32 {
    let mut prot = 0;
    if flags & 4 != 0 {
        prot |= crate::kernel::mm::PROT_READ;
    }
    if flags & 2 != 0 {
        prot |= crate::kernel::mm::PROT_WRITE;
    }
    if flags & 1 != 0 {
        prot |= crate::kernel::mm::PROT_EXEC;
    }
    prot
}

/// Parses `file`.
pub(crate) fn parse(file: &[u8]) -> Result<Executable, ElfError> {
    if file.len() < EHDR_SIZE || &file[..4] != ELF_MAGIC {
        return Err(ElfError::NotElf("no ELF header"));
    }
    if file[4] != ELFCLASS64 || file[5] != ELFDATA2LSB {
        return Err(ElfError::NotElf("not 64-bit little-endian"));
    }
    let short = ElfError::Malformed("truncated header");
    let kind = u16_at(file, 16).ok_or(short.clone())?;
    if u16_at(file, 18) != Some(EM_X86_64) {
        return Err(ElfError::NotElf("not for x86-64"));
    }
    if kind != ET_EXEC && kind != ET_DYN {
        return Err(ElfError::NotElf("not an executable (ET_EXEC or ET_DYN)"));
    }
    let entry = u64_at(file, 24).ok_or(short.clone())?;
    let phoff = u64_at(file, 32).ok_or(short.clone())?;
    let phentsize = u16_at(file, 54).ok_or(short.clone())?;
    let phnum = u16_at(file, 56).ok_or(short)?;
    if phentsize != PHENT_SIZE || phnum == 0 || phnum > PHNUM_MAX {
        return Err(ElfError::Malformed("bad program header table size"));
    }
    let table_end = phoff
        .checked_add(u64::from(phnum) * u64::from(PHENT_SIZE))
        .filter(|end| *end <= file.len() as u64)
        .ok_or(ElfError::Malformed("program headers outside the file"))?;
    let mut executable = Executable {
        pie: kind == ET_DYN,
        entry,
        segments: Vec::new(),
        phdr_vaddr: 0,
        phnum,
        exec_stack: false,
        interpreter: None,
    };
    let mut phdr_vaddr = None;
    let mut at = usize::try_from(phoff).map_err(|_| ElfError::Malformed("offset"))?;
    let end = usize::try_from(table_end).map_err(|_| ElfError::Malformed("offset"))?;
    while at < end {
        let header = &file[at..at + usize::from(PHENT_SIZE)];
        let bad = || ElfError::Malformed("program header");
        let kind = u32_at(header, 0).ok_or_else(bad)?;
        let flags = u32_at(header, 4).ok_or_else(bad)?;
        let offset = u64_at(header, 8).ok_or_else(bad)?;
        let vaddr = u64_at(header, 16).ok_or_else(bad)?;
        let file_size = u64_at(header, 32).ok_or_else(bad)?;
        let mem_size = u64_at(header, 40).ok_or_else(bad)?;
        match kind {
            PT_INTERP => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let len = usize::try_from(file_size).unwrap_or(0).min(256);
                let name = file
                    .get(start..start.saturating_add(len))
                    .map(|bytes| {
                        String::from_utf8_lossy(bytes)
                            .trim_end_matches('\0')
                            .to_owned()
                    })
                    .unwrap_or_default();
                if name.is_empty() {
                    return Err(ElfError::Malformed("empty PT_INTERP"));
                }
                executable.interpreter = Some(name);
            }
            PT_PHDR => phdr_vaddr = Some(vaddr),
            PT_GNU_STACK => executable.exec_stack = flags & 1 != 0,
            PT_LOAD => {
                if executable.segments.len() >= LOADS_MAX {
                    return Err(ElfError::Malformed("too many loadable segments"));
                }
                let in_file = offset
                    .checked_add(file_size)
                    .is_some_and(|end| end <= file.len() as u64);
                let fits = vaddr.checked_add(mem_size).is_some_and(|end| end < 1 << 47);
                if !in_file || !fits || file_size > mem_size {
                    return Err(ElfError::Malformed(
                        "loadable segment outside the file or the address space",
                    ));
                }
                if vaddr % 4096 != offset % 4096 {
                    return Err(ElfError::Malformed(
                        "segment address and offset disagree modulo the page size",
                    ));
                }
                executable.segments.push(Segment {
                    vaddr,
                    offset,
                    file_size,
                    mem_size,
                    prot: prot_of(flags),
                });
            }
            _ => {}
        }
        at += usize::from(PHENT_SIZE);
    }
    if executable.segments.is_empty() {
        return Err(ElfError::Malformed("no loadable segment"));
    }
    // Without PT_PHDR, the headers are wherever the segment holding their file offset maps it.
    executable.phdr_vaddr = match phdr_vaddr {
        Some(vaddr) => vaddr,
        None => executable
            .segments
            .iter()
            .find(|segment| {
                phoff >= segment.offset && table_end <= segment.offset + segment.file_size
            })
            .map_or(0, |segment| segment.vaddr + (phoff - segment.offset)),
    };
    Ok(executable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_host_busybox_or_skips() {
        let Ok(bytes) = std::fs::read("/usr/bin/busybox") else {
            xeno_tests::prerequisite::missing("/usr/bin/busybox missing (install busybox-static)");
            return;
        };
        let executable = parse(&bytes).expect("busybox parses");
        assert!(!executable.pie);
        assert!(
            executable
                .segments
                .iter()
                .any(|s| s.prot & crate::kernel::mm::PROT_EXEC != 0)
        );
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        assert!(parse(b"").is_err());
        assert!(parse(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]).is_err());
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(ELF_MAGIC);
        header[4] = 2;
        header[5] = 1;
        header[16] = 2;
        header[18] = 62;
        header[32] = 64; // phoff
        header[54] = 56;
        header[56] = 3; // three headers, none in the file
        assert_eq!(
            parse(&header),
            Err(ElfError::Malformed("program headers outside the file"))
        );
    }
}
