//! Program loading: reading an ELF executable ([`elf`]), mapping it and its interpreter-free
//! image into a fresh address space ([`loader`]), and building the initial stack with its
//! arguments, environment and auxiliary vector ([`stack`]).

pub(crate) mod elf;
pub(crate) mod loader;
pub(crate) mod stack;
