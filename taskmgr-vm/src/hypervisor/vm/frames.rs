//! The domain's physical frame allocator: a bitmap over guest RAM, shared by the domain's
//! tasks (their page tables and pages), so `MemoryMB` bounds them together.
//!
//! A frame that held a page table is not free again at once: it is *quarantined* until KVM
//! has dropped its shadow of it (see `physical.rs`). KVM's shadow MMU keeps a shadow page
//! for every guest page table it has walked and trusts it while the guest does not write
//! the table; the VMM writes tables from the host, which KVM never sees. A freed table
//! frame reused as another process's table would be walked through the old shadow (another
//! process's translations), and one reused as a page would keep being write-protected
//! (stores into it emulated, and an AVX store cannot be: "emulation failed").
//!
//! Invariant: a free frame reads as zero. RAM starts zeroed, and a freed frame is discarded
//! (MADV_DONTNEED) before it is marked free, so an allocation never needs to clear it and
//! never leaks one task's data to the next.

use super::layout::{PAGE_SHIFT, PAGE_SIZE};
use super::memory::GuestRam;

/// Bits in one word of the bitmap.
const WORD_BITS: u64 = 64;

#[derive(Debug)]
pub(crate) struct Frames {
    /// One bit per frame: set when in use.
    used: Vec<u64>,
    total: u64,
    in_use: u64,
    /// Word to start the next search at.
    hint: usize,
    /// Freed page-table frames, still marked used in `used`, waiting for KVM to forget them.
    quarantine: Vec<u64>,
}

impl Frames {
    pub(crate) fn new(ram_bytes: u64) -> Frames {
        let total = ram_bytes >> PAGE_SHIFT;
        let words = usize::try_from(total.div_ceil(WORD_BITS)).unwrap_or(0);
        let mut used = vec![0u64; words];
        // Bits past the last frame are permanently "used".
        let tail = total % WORD_BITS;
        if tail != 0
            && let Some(last) = used.last_mut()
        {
            *last = !0u64 << tail;
        }
        Frames {
            used,
            total,
            in_use: 0,
            hint: 0,
            quarantine: Vec::new(),
        }
    }

    /// Frames free now or once the quarantine is released.
    pub(crate) fn free_count(&self) -> u64 {
        self.total - self.in_use
    }

    /// Frames in quarantine.
    pub(crate) fn quarantined(&self) -> usize {
        self.quarantine.len()
    }

    /// Frees page-table frames into quarantine (zeroed now).
    pub(crate) fn free_tables(&mut self, gpas: &[u64], ram: &GuestRam) {
        for &gpa in gpas {
            zero(ram, gpa);
        }
        self.in_use -= gpas.len() as u64;
        self.quarantine.extend_from_slice(gpas);
    }

    /// Takes the quarantined frames out, to be released once KVM has forgotten them.
    pub(crate) fn take_quarantine(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.quarantine)
    }

    /// Puts frames taken with [`Frames::take_quarantine`] back, still quarantined.
    pub(crate) fn requarantine(&mut self, gpas: Vec<u64>) {
        self.quarantine.extend(gpas);
    }

    /// Makes frames taken with [`Frames::take_quarantine`] free.
    pub(crate) fn release(&mut self, gpas: &[u64]) {
        for &gpa in gpas {
            let frame = gpa >> PAGE_SHIFT;
            let (index, bit) = ((frame / WORD_BITS) as usize, frame % WORD_BITS);
            self.used[index] &= !(1 << bit);
            self.hint = self.hint.min(index);
        }
    }

    /// A zeroed frame's guest-physical address, or `None` when RAM is full.
    pub(crate) fn alloc(&mut self) -> Option<u64> {
        let words = self.used.len();
        for step in 0..words {
            let index = (self.hint + step) % words;
            let word = self.used[index];
            if word != !0 {
                let bit = u64::from((!word).trailing_zeros());
                self.used[index] |= 1 << bit;
                self.in_use += 1;
                self.hint = index;
                return Some((index as u64 * WORD_BITS + bit) << PAGE_SHIFT);
            }
        }
        None
    }

    /// Frees the frames of an address space no vCPU can reach any more (its page tables are
    /// in quarantine, so no translation KVM holds of these frames can be used): zeroed by a
    /// write, which costs far less here than a discard (each is a host system call and a
    /// KVM invalidation, tens of microseconds nested).
    pub(crate) fn free_unreachable(&mut self, gpas: &mut [u64], ram: &GuestRam) {
        for &gpa in gpas.iter() {
            zero(ram, gpa);
        }
        self.mark_free(gpas);
    }

    /// Frees frames (guest-physical addresses of frames this allocator gave out), discarding
    /// their contents first. Sorts `gpas` to discard contiguous runs with one call each.
    pub(crate) fn free(&mut self, gpas: &mut [u64], ram: &GuestRam) {
        gpas.sort_unstable();
        let mut run: Option<(u64, u64)> = None;
        for &gpa in gpas.iter() {
            run = match run {
                Some((start, end)) if end == gpa => Some((start, end + PAGE_SIZE)),
                Some((start, end)) => {
                    ram.discard(start, end - start);
                    Some((gpa, gpa + PAGE_SIZE))
                }
                None => Some((gpa, gpa + PAGE_SIZE)),
            };
        }
        if let Some((start, end)) = run {
            ram.discard(start, end - start);
        }
        self.mark_free(gpas);
    }

    fn mark_free(&mut self, gpas: &[u64]) {
        for &gpa in gpas.iter() {
            let frame = gpa >> PAGE_SHIFT;
            assert!(frame < self.total, "freed frame {gpa:#x} outside RAM");
            let (index, bit) = ((frame / WORD_BITS) as usize, frame % WORD_BITS);
            assert!(
                self.used[index] & (1 << bit) != 0,
                "frame {gpa:#x} freed twice"
            );
            self.used[index] &= !(1 << bit);
            self.in_use -= 1;
            self.hint = self.hint.min(index);
        }
    }
}

/// Zeroes one frame with a write (the invariant: a free frame reads as zero).
fn zero(ram: &GuestRam, gpa: u64) {
    const ZEROS: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];
    if !ram.write(gpa, &ZEROS) {
        ram.discard(gpa, PAGE_SIZE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_every_frame_once_then_refuses() {
        let ram = GuestRam::new(70 * PAGE_SIZE).expect("ram");
        let mut frames = Frames::new(ram.bytes());
        let mut got: Vec<u64> = (0..70).map(|_| frames.alloc().expect("frame")).collect();
        assert!(frames.alloc().is_none());
        let mut sorted = got.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 70);
        assert!(ram.write(got[3], b"secret"));
        frames.free(&mut got[..10], &ram);
        assert_eq!(frames.free_count(), 10);
        let again = frames.alloc().expect("frame");
        let mut back = [0u8; 6];
        assert!(ram.read(again, &mut back));
        assert_eq!(back, [0; 6], "a reused frame reads as zero");
    }

    #[test]
    fn a_freed_page_table_frame_waits_in_quarantine() {
        let ram = GuestRam::new(8 * PAGE_SIZE).expect("ram");
        let mut frames = Frames::new(ram.bytes());
        let table = frames.alloc().expect("table");
        frames.free_tables(&[table], &ram);
        assert_eq!(frames.free_count(), 8);
        let pages: Vec<u64> = std::iter::from_fn(|| frames.alloc()).collect();
        assert_eq!(pages.len(), 7);
        assert!(!pages.contains(&table), "not reused while quarantined");
        let held = frames.take_quarantine();
        frames.release(&held);
        assert_eq!(frames.alloc(), Some(table));
    }
}
