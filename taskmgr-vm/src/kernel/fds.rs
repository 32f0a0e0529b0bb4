//! A task's file descriptor table. Descriptors 0, 1 and 2 start as an empty stdin and the
//! task's stdout and stderr; the others are files and directories of the session directory,
//! pipe ends, eventfds and devices.
//! Duplicated descriptors share one open file (and so one offset), as on Linux.

use crate::hypervisor::fastpath::WindowSlot;
use crate::kernel::devices::Device;
use crate::kernel::eventfd::EventFd;
use crate::kernel::pipe::PipeEnd;
use crate::kernel::syscalls::Errno;
use std::sync::{Arc, Mutex};
use xeno_schemas::proto::common::v1::OutputStream;
use xeno_taskmgr_kit::lock;

/// Most descriptors a task may hold (Linux's default soft RLIMIT_NOFILE).
pub(crate) const FDS_MAX: usize = 1024;

/// What a descriptor refers to.
pub(crate) enum Kind {
    /// A character device (the empty stdin is `/dev/null`).
    Device(Device),
    /// One end of a pipe.
    Pipe(PipeEnd),
    /// An eventfd counter.
    Event(EventFd),
    /// A timerfd: its timer adds its expirations to `event`, which reads take.
    Timer {
        event: Arc<EventFd>,
        timer: Arc<crate::kernel::timers::Timer>,
        clock: u64,
    },
    /// The task's stdout or stderr.
    Output(OutputStream),
    /// An epoll instance: its interest list.
    Epoll(Mutex<crate::kernel::syscalls::epoll::Interests>),
    /// A regular file (or anything else that is not a directory) of the session directory.
    File(std::fs::File),
    /// A directory of the session directory: its path relative to the root, and the listing
    /// `getdents64` is reading.
    Dir {
        path: std::path::PathBuf,
        dir: cap_std::fs::Dir,
        listing: Mutex<Option<crate::kernel::syscalls::fs::Listing>>,
    },
}

/// An open file description.
pub(crate) struct OpenFile {
    pub(crate) kind: Kind,
    /// O_ACCMODE, O_APPEND, O_NONBLOCK as opened (or changed by F_SETFL).
    pub(crate) flags: Mutex<u32>,
    /// The file's window for the read fast path, if it has one.
    pub(crate) window: Mutex<Option<WindowSlot>>,
    /// Whether it is a file of the domain's read-only image (its pages can be shared by
    /// every private read-only mapping of them: see `Physical::share_file_page`).
    pub(crate) from_image: bool,
    /// Reads of it the VMM has served (see [`crate::hypervisor::fastpath::note_read`]).
    pub(crate) served_reads: std::sync::atomic::AtomicU32,
}

impl OpenFile {
    pub(crate) fn new(kind: Kind, flags: u32) -> Arc<OpenFile> {
        Arc::new(OpenFile {
            kind,
            flags: Mutex::new(flags),
            window: Mutex::new(None),
            served_reads: std::sync::atomic::AtomicU32::new(0),
            from_image: false,
        })
    }

    pub(crate) fn flags(&self) -> u32 {
        *lock(&self.flags)
    }

    pub(crate) fn readable(&self) -> bool {
        self.flags() & 3 != 1
    }

    pub(crate) fn writable(&self) -> bool {
        matches!(self.flags() & 3, 1 | 2)
    }
}

/// One slot of the table.
#[derive(Clone)]
pub(crate) struct Fd {
    pub(crate) file: Arc<OpenFile>,
    pub(crate) cloexec: bool,
}

pub(crate) struct FdTable {
    slots: Vec<Option<Fd>>,
    /// Counts changes of which descriptor holds what, so that `/proc/<pid>/fd` is published
    /// again only after one.
    generation: u64,
}

impl FdTable {
    /// stdin (empty), stdout, stderr.
    pub(crate) fn standard() -> FdTable {
        let slot = |kind, flags| {
            Some(Fd {
                file: OpenFile::new(kind, flags),
                cloexec: false,
            })
        };
        FdTable {
            slots: vec![
                slot(Kind::Device(Device::Null), 0),
                slot(Kind::Output(OutputStream::Stdout), 1),
                slot(Kind::Output(OutputStream::Stderr), 1),
            ],
            generation: 0,
        }
    }

    /// The child's table after `fork`: the same open files (shared offsets and flags), the
    /// same close-on-exec marks.
    pub(crate) fn fork_copy(&self) -> FdTable {
        FdTable {
            slots: self.slots.clone(),
            generation: 0,
        }
    }

    /// Closes every close-on-exec descriptor (`execve`), returning them with their numbers.
    pub(crate) fn take_cloexec(&mut self) -> Vec<(u64, Fd)> {
        self.generation += 1;
        let mut closed = Vec::new();
        for (number, slot) in self.slots.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|fd| fd.cloexec)
                && let Some(fd) = slot.take()
            {
                closed.push((number as u64, fd));
            }
        }
        closed
    }

    /// The open files of every descriptor, with their numbers.
    pub(crate) fn all(&self) -> Vec<(u64, Arc<OpenFile>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(number, slot)| {
                slot.as_ref()
                    .map(|fd| (number as u64, Arc::clone(&fd.file)))
            })
            .collect()
    }

    pub(crate) fn get(&self, fd: u64) -> Result<&Fd, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|fd| self.slots.get(fd))
            .and_then(Option::as_ref)
            .ok_or(Errno::EBADF)
    }

    pub(crate) fn get_mut(&mut self, fd: u64) -> Result<&mut Fd, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|fd| self.slots.get_mut(fd))
            .and_then(Option::as_mut)
            .ok_or(Errno::EBADF)
    }

    pub(crate) fn file(&self, fd: u64) -> Result<Arc<OpenFile>, Errno> {
        Ok(Arc::clone(&self.get(fd)?.file))
    }

    /// Installs `fd` at the lowest free number at or above `from`.
    pub(crate) fn insert_from(&mut self, from: usize, fd: Fd) -> Result<u64, Errno> {
        if from >= FDS_MAX {
            return Err(Errno::EINVAL);
        }
        let free = (from..self.slots.len()).find(|index| self.slots[*index].is_none());
        let index = match free {
            Some(index) => index,
            None if self.slots.len().max(from) < FDS_MAX => {
                let index = self.slots.len().max(from);
                self.slots.resize(index + 1, None);
                index
            }
            None => return Err(Errno::EMFILE),
        };
        self.generation += 1;
        self.slots[index] = Some(fd);
        Ok(index as u64)
    }

    pub(crate) fn insert(&mut self, fd: Fd) -> Result<u64, Errno> {
        self.insert_from(0, fd)
    }

    /// Puts `fd` at number `at`, returning what was there.
    pub(crate) fn put(&mut self, at: u64, fd: Fd) -> Result<Option<Fd>, Errno> {
        let index = usize::try_from(at).map_err(|_| Errno::EBADF)?;
        if index >= FDS_MAX {
            return Err(Errno::EBADF);
        }
        if index >= self.slots.len() {
            self.slots.resize(index + 1, None);
        }
        self.generation += 1;
        Ok(self.slots[index].replace(fd))
    }

    pub(crate) fn remove(&mut self, fd: u64) -> Result<Fd, Errno> {
        self.generation += 1;
        usize::try_from(fd)
            .ok()
            .and_then(|fd| self.slots.get_mut(fd))
            .and_then(Option::take)
            .ok_or(Errno::EBADF)
    }

    /// Which change of the table this is (see `generation`).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Every open descriptor (for closing them all when the task ends).
    pub(crate) fn drain(&mut self) -> Vec<Fd> {
        self.generation += 1;
        self.slots.drain(..).flatten().collect()
    }
}
