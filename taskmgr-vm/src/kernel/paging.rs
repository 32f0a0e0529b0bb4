//! A task's page tables: x86-64 four-level tables with 4 KiB pages, written by the VMM into
//! frames of the domain's RAM that are never mapped into any guest address space (so the
//! guest cannot change them). The VMM is the only writer and the only walker.
//!
//! Leaf entries carry a software bit, [`OWNED`], on frames this address space allocated and
//! must free; windows and the domain's shared pages are mapped without it. A page made
//! inaccessible by `mprotect(PROT_NONE)` keeps its frame with the present bit clear
//! ("parked"), so its contents survive a later `mprotect` back.

use crate::hypervisor::vm::layout::{PAGE_SIZE, USER_TOP};
use crate::hypervisor::vm::physical::Physical;

/// Present.
pub(crate) const PRESENT: u64 = 1;
/// Writable.
pub(crate) const WRITABLE: u64 = 1 << 1;
/// Accessible from ring 3.
pub(crate) const USER: u64 = 1 << 2;
/// Accessed (set up front, so the MMU never has to).
pub(crate) const ACCESSED: u64 = 1 << 5;
/// Dirty (likewise).
pub(crate) const DIRTY: u64 = 1 << 6;
/// Software bit: this address space owns the frame and frees it on unmap.
pub(crate) const OWNED: u64 = 1 << 9;
/// Software bit: a page of a shared-memory object (`kernel/shared.rs`), counted there once
/// per entry; parked like an owned page when inaccessible.
pub(crate) const SHARED: u64 = 1 << 10;
/// Software bit, on an owned read-only page: since a fork its frame may be held by other
/// address spaces too (counted in [`Physical`]), so it is never written; a change of its
/// protection or a discard gives the page a frame of its own first (`kernel/mm.rs`).
pub(crate) const COPY_ON_WRITE: u64 = 1 << 11;
/// Software bit (ignored by the MMU in a leaf entry), with [`COPY_ON_WRITE`]: the page came
/// from the parent at fork, which still counts it in its task's memory.
pub(crate) const BORROWED: u64 = 1 << 52;
/// No execute (EFER.NXE is on).
pub(crate) const NO_EXECUTE: u64 = 1 << 63;
/// The frame address bits of an entry.
pub(crate) const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Entries per table.
const ENTRIES: u64 = 512;

/// The guest RAM ran out while building tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoMemory;

#[derive(Debug)]
pub(crate) struct PageTables {
    root: u64,
}

fn index(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * level)) & (ENTRIES - 1)
}

impl PageTables {
    /// Empty tables (one zeroed PML4).
    pub(crate) fn new(physical: &Physical) -> Result<PageTables, NoMemory> {
        Ok(PageTables {
            root: physical.alloc().ok_or(NoMemory)?,
        })
    }

    /// No tables at all (a root of 0, as after [`PageTables::release`]): nothing is mapped
    /// and nothing can be.
    pub(crate) const fn none() -> PageTables {
        PageTables { root: 0 }
    }

    /// The PML4's guest-physical address, for CR3.
    pub(crate) fn root(&self) -> u64 {
        self.root
    }

    /// Guest-physical address of the leaf entry for `va`, creating missing tables if `create`.
    fn leaf_slot(
        &self,
        physical: &Physical,
        va: u64,
        create: bool,
    ) -> Result<Option<u64>, NoMemory> {
        let table_flags = if va < USER_TOP {
            PRESENT | WRITABLE | USER
        } else {
            PRESENT | WRITABLE
        };
        if self.root == 0 {
            // Released, or never made: frame 0 is not a table of this address space.
            return if create { Err(NoMemory) } else { Ok(None) };
        }
        let mut table = self.root;
        for level in (1..=3).rev() {
            let slot = table + index(va, level) * 8;
            let entry = physical.ram.read_u64(slot).ok_or(NoMemory)?;
            table = if entry & PRESENT != 0 {
                entry & ADDRESS_MASK
            } else if create {
                let frame = physical.alloc().ok_or(NoMemory)?;
                if !physical.ram.write_u64(slot, frame | table_flags) {
                    return Err(NoMemory);
                }
                frame
            } else {
                return Ok(None);
            };
        }
        Ok(Some(table + index(va, 0) * 8))
    }

    /// The leaf entry for `va` (0 if there is none).
    pub(crate) fn get(&self, physical: &Physical, va: u64) -> u64 {
        match self.leaf_slot(physical, va, false) {
            Ok(Some(slot)) => physical.ram.read_u64(slot).unwrap_or(0),
            _ => 0,
        }
    }

    /// Sets the leaf entry for `va`, creating tables as needed.
    pub(crate) fn set(&self, physical: &Physical, va: u64, entry: u64) -> Result<(), NoMemory> {
        let slot = self.leaf_slot(physical, va, true)?.ok_or(NoMemory)?;
        if physical.ram.write_u64(slot, entry) {
            Ok(())
        } else {
            Err(NoMemory)
        }
    }

    /// Clears the leaf entry for `va` and returns what it was (0 if none).
    pub(crate) fn clear(&self, physical: &Physical, va: u64) -> u64 {
        match self.leaf_slot(physical, va, false) {
            Ok(Some(slot)) => {
                let old = physical.ram.read_u64(slot).unwrap_or(0);
                if old != 0 {
                    physical.ram.write_u64(slot, 0);
                }
                old
            }
            _ => 0,
        }
    }

    /// The guest-physical address `va` reaches from ring 3, if the page is present, user
    /// accessible and (for `write`) writable.
    pub(crate) fn translate_user(&self, physical: &Physical, va: u64, write: bool) -> Option<u64> {
        if va >= USER_TOP {
            return None;
        }
        let entry = self.get(physical, va);
        let needed = PRESENT | USER | if write { WRITABLE } else { 0 };
        (entry & needed == needed).then_some((entry & ADDRESS_MASK) | (va & (PAGE_SIZE - 1)))
    }

    /// Calls `visit(va, entry)` for every non-zero leaf entry in `[start, end)`, in address
    /// order, skipping absent tables (so a sparse reservation costs its tables, not its
    /// pages).
    pub(crate) fn for_each_leaf(
        &self,
        physical: &Physical,
        start: u64,
        end: u64,
        visit: &mut dyn FnMut(u64, u64) -> Result<(), NoMemory>,
    ) -> Result<(), NoMemory> {
        if self.root == 0 {
            return Ok(());
        }
        walk(physical, self.root, 3, 0, start, end, visit)
    }

    /// Frees every table and every owned frame; the tables are empty afterwards (a root of 0
    /// means released). They must not be in use by a vCPU.
    pub(crate) fn release(&mut self, physical: &Physical) {
        if self.root == 0 {
            return;
        }
        let (mut tables, mut pages) = (Vec::new(), Vec::new());
        collect(physical, self.root, 3, &mut tables, &mut pages);
        tables.push(self.root);
        // The tables go into quarantine, so nothing reaches these pages through them.
        physical.free_unreachable(&mut pages);
        physical.free_tables(&mut tables);
        self.root = 0;
    }
}

fn walk(
    physical: &Physical,
    table: u64,
    level: u32,
    base: u64,
    start: u64,
    end: u64,
    visit: &mut dyn FnMut(u64, u64) -> Result<(), NoMemory>,
) -> Result<(), NoMemory> {
    let span = 1u64 << (12 + 9 * level);
    for (slot, entry) in entries(physical, table).into_iter().enumerate() {
        let va = base + slot as u64 * span;
        if va >= end || va.checked_add(span).is_none_or(|top| top <= start) {
            continue;
        }
        if level == 0 {
            if entry != 0 {
                visit(va, entry)?;
            }
        } else if entry & PRESENT != 0 {
            walk(
                physical,
                entry & ADDRESS_MASK,
                level - 1,
                va,
                start,
                end,
                visit,
            )?;
        }
    }
    Ok(())
}

/// The 512 entries of the table at `table`, read at once (one bounds-checked copy rather
/// than 512); all zero if it cannot be read.
fn entries(physical: &Physical, table: u64) -> [u64; ENTRIES as usize] {
    let mut bytes = [0u8; PAGE_SIZE as usize];
    let mut out = [0u64; ENTRIES as usize];
    if physical.ram.read(table, &mut bytes) {
        for (slot, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
            *slot = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        }
    }
    out
}

/// Gathers the frames under `table` (a table at `level`, 3 = PML4): its sub-tables, and the
/// owned frames of its leaves.
fn collect(
    physical: &Physical,
    table: u64,
    level: u32,
    tables: &mut Vec<u64>,
    pages: &mut Vec<u64>,
) {
    for entry in entries(physical, table) {
        if level == 0 {
            if entry & OWNED != 0 {
                pages.push(entry & ADDRESS_MASK);
            }
        } else if entry & PRESENT != 0 {
            let child = entry & ADDRESS_MASK;
            collect(physical, child, level - 1, tables, pages);
            tables.push(child);
        }
    }
}
