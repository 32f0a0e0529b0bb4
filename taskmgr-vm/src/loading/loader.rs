//! Loading a task: its executable's segments into a fresh address space, its heap, its stack
//! with argv, envp and the auxiliary vector, and the registers it starts with. A dynamically
//! linked program's interpreter (the dynamic loader its `PT_INTERP` names, read from the
//! session) is mapped too, below the mmap area, and the task starts there with `AT_BASE`
//! and `AT_ENTRY` telling it where it and the program are: the loader then maps the
//! libraries itself, through `openat` and `mmap`, as on Linux.

use crate::hypervisor::cpu::StartState;
use crate::hypervisor::vm::DomainVm;
use crate::hypervisor::vm::layout::{
    ELF_DYN_BASE, PAGE_SIZE, STACK_TOP, USER_MIN, page_ceil, page_floor,
};
use crate::kernel::mm::{Backing, Mm, MmError, PROT_EXEC, PROT_READ, PROT_WRITE};
use crate::loading::elf::{self, ElfError};
use crate::loading::stack::{self, StackInfo};
use std::collections::BTreeMap;
use thiserror::Error;

/// The stack's reserved size (RLIMIT_STACK, Linux's default).
pub(crate) const STACK_BYTES_MAX: u64 = 8 << 20;
/// The top of the stack backed before the task starts: room for the arguments and more; the
/// rest is backed when first touched.
const STACK_EAGER_BYTES: u64 = 512 << 10;
/// Gap between the stack's reservation and the highest mmap area.
const STACK_GAP_BYTES: u64 = 1 << 30;
/// Largest executable image (sum of its segments' memory sizes) accepted.
const IMAGE_BYTES_MAX: u64 = 1 << 30;

const _: () = assert!(STACK_EAGER_BYTES > stack::ARGS_BYTES_MAX as u64 + 64 * 1024);

/// Why a task could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The executable cannot run here.
    #[error(transparent)]
    Elf(#[from] ElfError),
    /// The domain's memory is too small for it.
    #[error("the domain's memory is too small to load the program")]
    NoMemory,
    /// The segments do not fit the address space.
    #[error("the executable's segments do not fit the user address space")]
    Layout,
    /// Arguments and environment too large.
    #[error("arguments and environment take {0} bytes; at most {max} are allowed", max = stack::ARGS_BYTES_MAX)]
    ArgsTooBig(usize),
}

impl From<MmError> for LoadError {
    fn from(error: MmError) -> LoadError {
        match error {
            MmError::NoMemory => LoadError::NoMemory,
            _ => LoadError::Layout,
        }
    }
}

/// Fills `buf` with random bytes from the host.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(got) => filled += got,
            Err(error) if error == rustix::io::Errno::INTR => {}
            Err(error) => {
                // getrandom does not fail on Linux after boot; never hand out predictable bytes.
                panic!("getrandom failed: {error}");
            }
        }
    }
}

/// CPUID.1:EDX, what Linux reports in AT_HWCAP.
fn hwcap() -> u64 {
    let leaf = std::arch::x86_64::__cpuid(1);
    u64::from(leaf.edx)
}

/// A loaded task, ready for a vCPU.
pub(crate) struct Loaded {
    pub(crate) mm: Mm,
    pub(crate) start: StartState,
}

/// Per-page protection of the executable's segments (pages shared by two segments get both).
fn segment_pages(executable: &elf::Executable, bias: u64) -> Result<BTreeMap<u64, u32>, LoadError> {
    let mut pages = BTreeMap::new();
    let mut total = 0u64;
    for segment in &executable.segments {
        let start = segment.vaddr.checked_add(bias).ok_or(LoadError::Layout)?;
        let end = start
            .checked_add(segment.mem_size)
            .ok_or(LoadError::Layout)?;
        total = total.saturating_add(segment.mem_size);
        if total > IMAGE_BYTES_MAX || start < USER_MIN {
            return Err(LoadError::Layout);
        }
        let mut page = page_floor(start);
        let end = page_ceil(end).ok_or(LoadError::Layout)?;
        while page < end {
            *pages.entry(page).or_insert(0) |= segment.prot;
            page += PAGE_SIZE;
        }
    }
    Ok(pages)
}

/// A program's dynamic loader: its bytes and where it goes.
struct Interpreter<'a> {
    executable: elf::Executable,
    image: &'a [u8],
    bias: u64,
}

/// Where a position-independent image of `executable` is placed so that its lowest page is
/// at `base`.
fn bias_for(executable: &elf::Executable, base: u64) -> u64 {
    let lowest = executable
        .segments
        .iter()
        .map(|segment| segment.vaddr)
        .min()
        .unwrap_or(0);
    base - page_floor(lowest)
}

/// Bytes from the lowest to the end of the highest page of `executable`'s segments.
fn span(executable: &elf::Executable) -> Option<u64> {
    let low = executable.segments.iter().map(|s| s.vaddr).min()?;
    let high = executable
        .segments
        .iter()
        .map(|s| s.vaddr.checked_add(s.mem_size))
        .try_fold(0u64, |top, end| end.map(|end| top.max(end)))?;
    page_ceil(high).map(|high| high - page_floor(low))
}

/// Loads `image` with `argv` and `envp` into a new address space of `vm`. A dynamically
/// linked `image`'s interpreter is asked of `interpreter` by the path it names (`None`: it is
/// not there).
pub(crate) fn load(
    vm: &DomainVm,
    image: &[u8],
    argv: &[Vec<u8>],
    envp: &[Vec<u8>],
    execfn: &[u8],
    interpreter: &dyn Fn(&str) -> Option<bytes::Bytes>,
) -> Result<Loaded, LoadError> {
    let executable = elf::parse(image)?;
    let bias = if executable.pie {
        bias_for(&executable, ELF_DYN_BASE)
    } else {
        0
    };
    let mut mmap_top = STACK_TOP - STACK_BYTES_MAX - STACK_GAP_BYTES;
    let interp_image;
    let interp = match &executable.interpreter {
        None => None,
        Some(name) => {
            interp_image = interpreter(name).ok_or_else(|| ElfError::Dynamic(name.clone()))?;
            let loader = elf::parse(&interp_image)?;
            if !loader.pie || loader.interpreter.is_some() {
                return Err(ElfError::BadInterpreter(name.clone()).into());
            }
            // Just below the mmap area, which then starts below it (as Linux maps ld.so).
            let size = span(&loader).ok_or(LoadError::Layout)?;
            let base = page_floor(
                mmap_top
                    .checked_sub(size + PAGE_SIZE)
                    .ok_or(LoadError::Layout)?,
            );
            mmap_top = base;
            let bias = bias_for(&loader, base);
            Some(Interpreter {
                executable: loader,
                image: &interp_image,
                bias,
            })
        }
    };
    let pages = segment_pages(&executable, bias)?;
    if pages
        .keys()
        .next_back()
        .is_some_and(|last| *last >= mmap_top)
    {
        return Err(LoadError::Layout);
    }
    let physical = &vm.physical;
    let mut mm = Mm::new(physical, &vm.shared, mmap_top)?;
    let built = (|| {
        map_segments(vm, &mut mm, &executable, bias, &pages, image)?;
        if let Some(interp) = &interp {
            let pages = segment_pages(&interp.executable, interp.bias)?;
            map_segments(
                vm,
                &mut mm,
                &interp.executable,
                interp.bias,
                &pages,
                interp.image,
            )?;
        }
        build(
            vm,
            &mut mm,
            &executable,
            bias,
            &pages,
            interp.as_ref(),
            argv,
            envp,
            execfn,
        )
    })();
    match built {
        Ok(start) => Ok(Loaded { mm, start }),
        Err(error) => {
            mm.destroy(physical);
            Err(error)
        }
    }
}

/// Maps and fills the segments of `executable` (its pages given by [`segment_pages`]).
fn map_segments(
    vm: &DomainVm,
    mm: &mut Mm,
    executable: &elf::Executable,
    bias: u64,
    pages: &BTreeMap<u64, u32>,
    image: &[u8],
) -> Result<(), LoadError> {
    let physical = &vm.physical;
    // Runs of pages with the same protection become one area each.
    let mut run: Option<(u64, u64, u32)> = None;
    let mut runs = Vec::new();
    for (&page, &prot) in pages {
        run = match run {
            Some((start, end, p)) if end == page && p == prot => Some((start, end + PAGE_SIZE, p)),
            Some(done) => {
                runs.push(done);
                Some((page, page + PAGE_SIZE, prot))
            }
            None => Some((page, page + PAGE_SIZE, prot)),
        };
    }
    runs.extend(run);
    for (start, end, prot) in runs {
        // Every segment page is backed, even one with no access, so that the copy below
        // lands in it.
        let backed = if prot == 0 { PROT_READ } else { prot };
        mm.map_fixed(physical, start, end, backed, false, Backing::Anonymous)?;
        if prot == 0 {
            mm.protect(physical, start, end, 0)?;
        }
    }
    for segment in &executable.segments {
        let from = usize::try_from(segment.offset).map_err(|_| LoadError::Layout)?;
        let len = usize::try_from(segment.file_size).map_err(|_| LoadError::Layout)?;
        let bytes = image.get(from..from + len).ok_or(LoadError::Layout)?;
        copy_in(vm, mm, segment.vaddr + bias, bytes)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn build(
    vm: &DomainVm,
    mm: &mut Mm,
    executable: &elf::Executable,
    bias: u64,
    pages: &BTreeMap<u64, u32>,
    interp: Option<&Interpreter<'_>>,
    argv: &[Vec<u8>],
    envp: &[Vec<u8>],
    execfn: &[u8],
) -> Result<StartState, LoadError> {
    let physical = &vm.physical;
    let heap = pages
        .keys()
        .next_back()
        .map_or(USER_MIN, |last| last + PAGE_SIZE);
    mm.set_brk_base(heap);
    // The stack: reserved in full, backed at the top.
    let stack_prot = PROT_READ | PROT_WRITE | if executable.exec_stack { PROT_EXEC } else { 0 };
    mm.map_fixed(
        physical,
        STACK_TOP - STACK_BYTES_MAX,
        STACK_TOP,
        stack_prot,
        true,
        Backing::Anonymous,
    )?;
    let mut page = STACK_TOP - STACK_EAGER_BYTES;
    while page < STACK_TOP {
        if !mm.fault_in(physical, page, true) {
            return Err(LoadError::NoMemory);
        }
        page += PAGE_SIZE;
    }
    let mut random = [0u8; 16];
    random_bytes(&mut random);
    let info = StackInfo {
        phdr: executable.phdr_vaddr + bias,
        phnum: u64::from(executable.phnum),
        entry: executable.entry + bias,
        base: interp.map_or(0, |interp| interp.bias),
        hwcap: hwcap(),
        random,
        uid: 0,
        gid: 0,
    };
    let stack = stack::build(STACK_TOP, argv, envp, execfn, &info)
        .map_err(|too_big| LoadError::ArgsTooBig(too_big.0))?;
    copy_in(vm, mm, stack.rsp, &stack.bytes)?;
    // A dynamically linked program starts in its loader, which finds it through AT_ENTRY.
    let first = match interp {
        Some(interp) => interp.executable.entry + interp.bias,
        None => executable.entry + bias,
    };
    Ok(StartState::first(mm.cr3(), first, stack.rsp))
}

/// Writes `bytes` at `va` into pages the address space owns, whatever their protection.
fn copy_in(vm: &DomainVm, mm: &Mm, va: u64, bytes: &[u8]) -> Result<(), LoadError> {
    mm.fill(&vm.physical, va, bytes)
        .map_err(|_| LoadError::Layout)
}
