//! # xeno-taskmgr-vm: paravirtual Linux domains on KVM
//!
//! The task manager for `EnvType` `Linux`: the paper's XenoServer boots a fresh, isolated,
//! resource-guaranteed domain per session (sections II-A.3, V-A). This crate will be our own
//! virtual machine monitor on KVM (kvm-ioctls, vm-memory) whose paravirtual domains run
//! unmodified static Linux binaries, their kernel interface provided by the VMM.
