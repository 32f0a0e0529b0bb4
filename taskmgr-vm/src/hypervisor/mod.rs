//! The hypervisor side: the domain's KVM VM and its memory ([`vm`]), the CPU model and the
//! signal that kicks a vCPU out of the guest ([`cpu`]), the loop that runs a vCPU and turns its
//! exits into system calls, faults and ends ([`run`]), and the fast path that answers common
//! calls without leaving the guest's address space ([`fastpath`]).

pub(crate) mod cpu;
pub(crate) mod fastpath;
pub(crate) mod run;
pub(crate) mod vm;
