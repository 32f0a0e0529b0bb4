//! The start-up self-test: how does `syscall` from ring 3 reach the VMM on this host?
//!
//! A probe domain runs three instructions in ring 3: `mov eax, 39; syscall; ud2`. Under KVM
//! with hardware virtualization, `syscall` enters ring 0 at MSR_LSTAR as on real hardware;
//! under KVM without it (the PVM module these machines have), it jumps to MSR_LSTAR and stays
//! in ring 3. Either way the trampoline's first store ends KVM_RUN with an MMIO exit, and the
//! code segment's privilege level at that exit tells which path this host takes. The test
//! then checks the whole round trip on that path: a value put in RAX by the VMM must be there
//! when the `ud2` after the `syscall` raises #UD through the IDT to its stub's HLT exit.

use super::DomainVm;
use super::layout::{PAGE_SIZE, SYSCALL_EXIT_GPA};
use super::system::{SyscallPath, vector_of_hlt};
use crate::hypervisor::cpu::{Exit, StartState};
use crate::kernel::mm::{Backing, Mm, PROT_EXEC, PROT_READ};
use kvm_bindings::CpuId;
use kvm_ioctls::Kvm;

/// RAM of the probe domain.
const PROBE_RAM_BYTES: u64 = 4 << 20;
/// Where the probe's code goes.
const PROBE_CODE_VA: u64 = 0x40_0000;
/// `mov eax, 39; syscall; ud2`.
const PROBE_CODE: [u8; 9] = [0xb8, 0x27, 0, 0, 0, 0x0f, 0x05, 0x0f, 0x0b];
/// What the VMM returns to the probe's syscall.
const PROBE_RESULT: u64 = 0x5eed;
/// Exits the probe may take before it is declared stuck.
const PROBE_EXITS_MAX: usize = 16;

/// Finds the system call path of this host and checks it end to end.
pub(crate) fn run(kvm: &Kvm, cpuid: &CpuId) -> Result<SyscallPath, String> {
    let first = probe(kvm, cpuid, SyscallPath::Ring3Trampoline)?;
    match first {
        Probe::Works => Ok(SyscallPath::Ring3Trampoline),
        Probe::EnteredRing0 => match probe(kvm, cpuid, SyscallPath::Ring0Entry)? {
            Probe::Works | Probe::EnteredRing0 => Ok(SyscallPath::Ring0Entry),
        },
    }
}

enum Probe {
    /// The round trip worked on the path tried.
    Works,
    /// `syscall` entered ring 0: the other path is needed.
    EnteredRing0,
}

fn probe(kvm: &Kvm, cpuid: &CpuId, path: SyscallPath) -> Result<Probe, String> {
    let vm = DomainVm::new(kvm, PROBE_RAM_BYTES, cpuid.clone(), path, 0, None)
        .map_err(|e| e.to_string())?;
    let physical = &vm.physical;
    let mut mm = Mm::new(physical, &vm.shared, 0x1000_0000).map_err(|e| format!("{e:?}"))?;
    let result = run_probe(&vm, &mut mm, path);
    mm.destroy(physical);
    result
}

fn run_probe(vm: &DomainVm, mm: &mut Mm, path: SyscallPath) -> Result<Probe, String> {
    let physical = &vm.physical;
    mm.map_fixed(
        physical,
        PROBE_CODE_VA,
        PROBE_CODE_VA + PAGE_SIZE,
        PROT_READ | PROT_EXEC,
        false,
        Backing::Anonymous,
    )
    .map_err(|e| format!("{e:?}"))?;
    let gpa = mm
        .translate_owned(physical, PROBE_CODE_VA)
        .ok_or("probe page not backed")?;
    if !physical.ram.write(gpa, &PROBE_CODE) {
        return Err("cannot write the probe".to_owned());
    }
    let mut vcpu = vm.take_vcpu().map_err(|e| e.to_string())?;
    vcpu.start(StartState::first(mm.cr3(), PROBE_CODE_VA, 0))
        .map_err(|e| e.to_string())?;
    let mut syscalled = false;
    for _ in 0..PROBE_EXITS_MAX {
        match vcpu.run() {
            Exit::MmioWrite { gpa } if gpa & !(PAGE_SIZE - 1) == SYSCALL_EXIT_GPA && !syscalled => {
                syscalled = true;
                let sregs = vcpu.sregs().map_err(|e| e.to_string())?;
                let ring = sregs.cs.selector & 3;
                if ring == 0 && path == SyscallPath::Ring3Trampoline {
                    return Ok(Probe::EnteredRing0);
                }
                if vcpu.regs().rax != 39 {
                    return Err(format!(
                        "the syscall exit saw rax {:#x}, not 39",
                        vcpu.regs().rax
                    ));
                }
                vcpu.regs_mut().rax = PROBE_RESULT;
            }
            Exit::Hlt => {
                let regs = vcpu.regs();
                return match vector_of_hlt(regs.rip) {
                    Some(6) if syscalled && regs.rax == PROBE_RESULT => Ok(Probe::Works),
                    Some(6) if syscalled => Err(format!(
                        "the syscall's result did not reach the guest (rax {:#x})",
                        regs.rax
                    )),
                    other => Err(format!(
                        "unexpected exception {other:?} at rip {:#x} (syscall seen: {syscalled})",
                        regs.rip
                    )),
                };
            }
            Exit::Interrupted => {}
            other => {
                return Err(format!(
                    "unexpected exit {other:?} (syscall seen: {syscalled})"
                ));
            }
        }
    }
    Err("the probe did not finish".to_owned())
}
