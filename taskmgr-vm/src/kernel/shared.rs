//! Shared memory between a domain's processes: `MAP_SHARED` mappings, anonymous or of a
//! file. Each is an object of the domain's: its pages are frames of the domain's RAM that
//! every mapping of the object maps (not copies of them), so a `fork`ed child and its parent
//! see each other's writes, and two processes mapping one file see one set of pages (which is
//! how `sem_open`, and so Python's `multiprocessing`, share a semaphore). A page is counted
//! once per page-table entry that maps it; when the last goes, a file's page is written back
//! and the frame freed. `msync` writes a file's pages back at once. Futexes in shared pages
//! are keyed by the page's frame, so a wake reaches waiters of every process.
//!
//! Reads and writes of the file through descriptors are not coherent with its mapped pages
//! between `msync`s (the host's page cache is not the domain's): a program that mixes both
//! on one file sees its writes through the mapping after `msync` or `munmap`.

use crate::hypervisor::vm::layout::PAGE_SIZE;
use crate::hypervisor::vm::physical::Physical;
use crate::kernel::process::Waiter;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use xeno_taskmgr_kit::lock;

/// Most shared objects one domain holds at once (each is at least one mapping): a bound on
/// the table, well above what programs make (a semaphore or shared buffer each).
pub(crate) const OBJECTS_MAX: usize = 4096;
/// Most files one domain maps shared at once: each holds a host descriptor for its writes
/// back, and host descriptors are the whole task manager's (semaphores and shared buffers
/// take one file each; 256 is far above what programs use).
pub(crate) const FILE_OBJECTS_MAX: usize = 256;

/// A file whose pages are shared: the host file and its identity.
struct Backing {
    file: Arc<std::fs::File>,
    key: (u64, u64),
}

struct Page {
    gpa: u64,
    /// Page-table entries mapping it.
    refs: u32,
}

/// An object lives while any page of it is mapped (mappings are populated when made), or,
/// with none, until the domain ends (a `PROT_NONE` shared mapping never touched).
#[derive(Default)]
struct Object {
    pages: BTreeMap<u64, Page>,
    file: Option<Backing>,
}

#[derive(Default)]
struct Inner {
    objects: HashMap<u32, Object>,
    files: HashMap<(u64, u64), u32>,
    next: u32,
    futexes: BTreeMap<u64, VecDeque<Arc<Waiter>>>,
}

/// The domain's shared objects (see the module documentation).
#[derive(Default)]
pub(crate) struct SharedMemory {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory").finish_non_exhaustive()
    }
}

impl Inner {
    fn insert(&mut self, object: Object) -> Option<u32> {
        if self.objects.len() >= OBJECTS_MAX {
            return None;
        }
        loop {
            self.next = self.next.wrapping_add(1);
            if self.next != 0 && !self.objects.contains_key(&self.next) {
                break;
            }
        }
        self.objects.insert(self.next, object);
        Some(self.next)
    }

    /// Drops an object none of whose pages is mapped any more.
    fn collect(&mut self, id: u32) {
        let unused = self
            .objects
            .get(&id)
            .is_some_and(|object| object.pages.is_empty());
        if unused
            && let Some(object) = self.objects.remove(&id)
            && let Some(file) = object.file
        {
            self.files.remove(&file.key);
        }
    }
}

impl SharedMemory {
    /// A new anonymous object.
    pub(crate) fn anonymous(&self) -> Option<u32> {
        lock(&self.inner).insert(Object::default())
    }

    /// The object of the file `key` (device, inode) names, made on first use.
    pub(crate) fn file(&self, file: &Arc<std::fs::File>, key: (u64, u64)) -> Option<u32> {
        let mut inner = lock(&self.inner);
        if let Some(&id) = inner.files.get(&key)
            && inner.objects.contains_key(&id)
        {
            return Some(id);
        }
        if inner.files.len() >= FILE_OBJECTS_MAX {
            return None;
        }
        let id = inner.insert(Object {
            file: Some(Backing {
                file: Arc::clone(file),
                key,
            }),
            ..Object::default()
        })?;
        inner.files.insert(key, id);
        Some(id)
    }

    /// The frame of page `index` of `id`, counted once more: made (zeroed, or read from the
    /// file) if it has none yet. `None` when the domain's RAM is used up.
    pub(crate) fn page(&self, physical: &Physical, id: u32, index: u64) -> Option<u64> {
        let mut inner = lock(&self.inner);
        let object = inner.objects.get_mut(&id)?;
        if let Some(page) = object.pages.get_mut(&index) {
            page.refs += 1;
            return Some(page.gpa);
        }
        let gpa = physical.alloc()?;
        if let Some(backing) = &object.file {
            let mut data = vec![0u8; PAGE_SIZE as usize];
            let mut filled = 0;
            while filled < data.len() {
                match backing
                    .file
                    .read_at(&mut data[filled..], index * PAGE_SIZE + filled as u64)
                {
                    Ok(0) | Err(_) => break,
                    Ok(read) => filled += read,
                }
            }
            if filled > 0 && !physical.ram.write(gpa, &data) {
                physical.free(&mut vec![gpa]);
                return None;
            }
        }
        object.pages.insert(index, Page { gpa, refs: 1 });
        Some(gpa)
    }

    /// Page `index` of `id` counted once more (a forked child maps it too).
    pub(crate) fn retain(&self, id: u32, index: u64) {
        if let Some(page) = lock(&self.inner)
            .objects
            .get_mut(&id)
            .and_then(|object| object.pages.get_mut(&index))
        {
            page.refs += 1;
        }
    }

    /// Page `index` of `id` counted once fewer: at none, a file's page is written back and
    /// the frame freed. Whether the page is still held (by another mapping, which keeps
    /// the frame: the caller's old translations of it outlive the release until KVM is made
    /// to forget them).
    pub(crate) fn release(&self, physical: &Physical, id: u32, index: u64) -> bool {
        let mut inner = lock(&self.inner);
        let Some(object) = inner.objects.get_mut(&id) else {
            return false;
        };
        let Some(page) = object.pages.get_mut(&index) else {
            return false;
        };
        page.refs = page.refs.saturating_sub(1);
        if page.refs > 0 {
            return true;
        }
        let gpa = page.gpa;
        object.pages.remove(&index);
        if let Some(backing) = &object.file {
            write_back(physical, backing, index, gpa);
        }
        physical.free(&mut vec![gpa]);
        inner.collect(id);
        false
    }

    /// `msync`: writes pages `first..=last` of `id` back to its file (nothing for anonymous
    /// memory).
    pub(crate) fn sync(&self, physical: &Physical, id: u32, first: u64, last: u64) {
        let inner = lock(&self.inner);
        let Some(object) = inner.objects.get(&id) else {
            return;
        };
        let Some(backing) = &object.file else {
            return;
        };
        for (index, page) in object.pages.range(first..=last) {
            write_back(physical, backing, *index, page.gpa);
        }
    }

    /// The waiter queue of the shared futex at guest-physical `gpa`, to change under the lock.
    pub(crate) fn with_futex<T>(
        &self,
        gpa: u64,
        change: impl FnOnce(&mut VecDeque<Arc<Waiter>>) -> T,
    ) -> T {
        let mut inner = lock(&self.inner);
        let queue = inner.futexes.entry(gpa).or_default();
        let result = change(queue);
        if queue.is_empty() {
            inner.futexes.remove(&gpa);
        }
        result
    }
}

/// Writes one page back, no further than the file's end (a mapping never grows its file).
fn write_back(physical: &Physical, backing: &Backing, index: u64, gpa: u64) {
    let Ok(metadata) = backing.file.metadata() else {
        return;
    };
    let offset = index * PAGE_SIZE;
    if offset >= metadata.len() {
        return;
    }
    let len = (metadata.len() - offset).min(PAGE_SIZE) as usize;
    let mut data = vec![0u8; len];
    if physical.ram.read(gpa, &mut data) {
        let _ = backing.file.write_at(&data, offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::vm::memory::GuestRam;
    use std::time::Instant;

    fn physical(pages: u64) -> Physical {
        Physical::new(
            GuestRam::new(pages * PAGE_SIZE).expect("ram"),
            Instant::now(),
        )
    }

    #[test]
    fn a_page_is_one_frame_for_every_mapping_and_freed_with_the_last() {
        let physical = physical(64);
        let shared = &physical.shared;
        let free = physical.free_frames();
        let id = shared.anonymous().expect("object");
        let first = shared.page(&physical, id, 3).expect("page");
        let again = shared.page(&physical, id, 3).expect("same page");
        assert_eq!(first, again);
        shared.retain(id, 3);
        assert_eq!(physical.free_frames(), free - 1);
        for _ in 0..2 {
            let _ = shared.release(&physical, id, 3);
            assert_eq!(physical.free_frames(), free - 1, "still mapped");
        }
        let _ = shared.release(&physical, id, 3);
        assert_eq!(physical.free_frames(), free);
        // The object went with its last page: its id no longer gives pages.
        assert!(shared.page(&physical, id, 0).is_none());
    }

    #[test]
    fn a_files_pages_are_read_from_it_and_written_back_no_further_than_its_end() {
        let physical = physical(64);
        let shared = &physical.shared;
        let mut file = tempfile::tempfile().expect("file");
        std::io::Write::write_all(&mut file, b"hello").expect("write");
        let file = Arc::new(file);
        let id = shared.file(&file, (1, 2)).expect("object");
        assert_eq!(shared.file(&file, (1, 2)), Some(id), "one object per file");
        let gpa = shared.page(&physical, id, 0).expect("page");
        let mut head = [0u8; 6];
        assert!(physical.ram.read(gpa, &mut head));
        assert_eq!(&head, b"hello\0");
        assert!(physical.ram.write(gpa, b"HELLO, and more"));
        shared.sync(&physical, id, 0, 0);
        let mut back = [0u8; 16];
        let read = file.read_at(&mut back, 0).expect("read");
        assert_eq!(&back[..read], b"HELLO", "the file does not grow");
        let _ = shared.release(&physical, id, 0);
        for key in 0..FILE_OBJECTS_MAX as u64 {
            shared.file(&file, (9, key)).expect("within the bound");
        }
        assert!(shared.file(&file, (10, 0)).is_none(), "bounded");
    }
}
