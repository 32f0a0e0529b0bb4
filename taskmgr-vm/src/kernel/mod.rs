//! The guest kernel: what a Linux kernel would be to the task, written as the VMM. A task is a
//! [`process::Process`] (its address space in [`mm`] over the page tables of [`paging`], its
//! file descriptors in [`fds`] over the session directory in [`files`]), run by vCPU threads
//! ([`threads`]) that answer its system calls ([`syscalls`]), deliver its signals
//! ([`sigframe`]), resolve its page faults ([`fault`]) and stream its output ([`output`]); a
//! task is stopped through its [`control`] and paced by its domain's CPU gate ([`rate`]);
//! a process's CPU time and the timers counted in it are its [`cputimers`].
//! Besides files, a descriptor can be a [`pipe`], an [`eventfd`] or one of the [`devices`];
//! a call that must wait for one blocks through [`wait`].

pub(crate) mod control;
pub(crate) mod cputimers;
pub(crate) mod devices;
pub(crate) mod eventfd;
pub(crate) mod exec;
pub(crate) mod fault;
pub(crate) mod fds;
pub(crate) mod files;
pub(crate) mod fork;
pub(crate) mod mm;
pub(crate) mod output;
pub(crate) mod overlay;
pub(crate) mod paging;
pub(crate) mod pipe;
pub(crate) mod process;
pub(crate) mod procfs;
pub(crate) mod rate;
pub(crate) mod shared;
pub(crate) mod sigframe;
pub(crate) mod syscalls;
pub(crate) mod threads;
pub(crate) mod timers;
pub(crate) mod tree;
pub(crate) mod wait;
