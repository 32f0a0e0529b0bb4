//! Pipes: a bounded byte queue between a read end and a write end, with Linux's rules.
//!
//! - The queue is Linux's: [`PIPE_PAGES`] pages of [`PAGE_BYTES`]. A write first tops up the
//!   last page with its first `len % 4096` bytes if they fit there, then fills whole new
//!   pages; a reader frees a page once it has read all of it. So a pipe holds up to 64 KiB,
//!   and exactly what Linux holds for the same writes (sixteen 1,000-byte writes per four
//!   pages, not 65).
//! - A write of at most [`PIPE_BUF`] bytes is atomic: it fits in the last page or one new
//!   page, or waits until it does, so writers never interleave within it. A larger write
//!   moves what fits and waits for the rest; it returns when all is written.
//! - A read takes what is queued, up to its count, and waits only while nothing is, as long
//!   as a write end is open; once none is, it returns 0 (end of file). A write with no read
//!   end open fails with `EPIPE` and raises `SIGPIPE` (whose default action ends the task).
//! - With `O_NONBLOCK` the waits are `EAGAIN` instead (after a partial write, its count).
//!
//! Ends are counted per open file description: descriptors that share one (`dup`) keep that
//! end open until the last of them is closed ([`PipeEnd`]'s `Drop`).

use crate::kernel::process::Waiter;
use crate::kernel::wait::WaitQueue;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use xeno_taskmgr_kit::lock;

/// Pages a pipe queues before writers wait (Linux's default pipe size, 64 KiB).
pub(crate) const PIPE_PAGES: usize = 16;
/// Bytes of one page of the queue.
pub(crate) const PAGE_BYTES: usize = 4096;
/// Writes up to this many bytes are atomic (POSIX `PIPE_BUF` on Linux).
pub(crate) const PIPE_BUF: usize = 4096;
// Atomicity follows from the queue's shape: a write of up to PIPE_BUF bytes fits in the last
// page or in one new page, whole.
const _: () = assert!(PIPE_BUF <= PAGE_BYTES);

/// One page of the queue: the bytes written at its start, and how many of them were read.
#[derive(Debug)]
struct Page {
    data: Vec<u8>,
    read: usize,
}

/// One pipe: its bytes, its open ends, and who waits on it.
#[derive(Debug, Default)]
pub(crate) struct Pipe {
    state: Mutex<PipeState>,
}

#[derive(Debug, Default)]
struct PipeState {
    pages: VecDeque<Page>,
    readers: usize,
    writers: usize,
    /// Threads waiting for data (or for the last writer to go).
    read_waiters: WaitQueue,
    /// Threads waiting for room (or for the last reader to go).
    write_waiters: WaitQueue,
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// These bytes (possibly none: end of file).
    Data(Vec<u8>),
    /// Nothing yet, and a writer could still write: wait (or `EAGAIN`).
    Empty,
}

/// What a write did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    /// This many bytes went in (all of them, or what fitted of a large write).
    Wrote(usize),
    /// Nothing fits yet: wait (or `EAGAIN`).
    Full,
    /// No read end is open: `EPIPE` and `SIGPIPE`.
    Broken,
}

/// Readiness, for poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PipeReadiness {
    /// Data to read.
    pub(crate) readable: bool,
    /// Room for an atomic write.
    pub(crate) writable: bool,
    /// The other end is closed (for a read end: no writer; for a write end: no reader).
    pub(crate) hung_up: bool,
}

impl Pipe {
    /// A new pipe with both ends open once.
    pub(crate) fn open() -> (PipeEnd, PipeEnd) {
        let pipe = Arc::new(Pipe::default());
        {
            let mut state = lock(&pipe.state);
            state.readers = 1;
            state.writers = 1;
        }
        (
            PipeEnd {
                pipe: Arc::clone(&pipe),
                write: false,
            },
            PipeEnd { pipe, write: true },
        )
    }

    /// Takes up to `count` bytes. When there are none yet, `waiter` (if any) is queued for
    /// them under the same lock, so that no write can slip between the look and the queueing.
    pub(crate) fn read(&self, count: usize, waiter: Option<&Arc<Waiter>>) -> ReadOutcome {
        let mut state = lock(&self.state);
        if state.pages.is_empty() {
            if state.writers == 0 || count == 0 {
                return ReadOutcome::Data(Vec::new());
            }
            if let Some(waiter) = waiter {
                state.read_waiters.register(waiter);
            }
            return ReadOutcome::Empty;
        }
        let mut data = Vec::with_capacity(count.min(PIPE_PAGES * PAGE_BYTES));
        while data.len() < count {
            let Some(page) = state.pages.front_mut() else {
                break;
            };
            let take = (count - data.len()).min(page.data.len() - page.read);
            data.extend_from_slice(&page.data[page.read..page.read + take]);
            page.read += take;
            if page.read == page.data.len() {
                state.pages.pop_front();
            }
        }
        state.write_waiters.wake_all();
        ReadOutcome::Data(data)
    }

    /// Puts in what fits of `data`, following the atomicity rule. When nothing fits yet,
    /// `waiter` (if any) is queued for room under the same lock.
    pub(crate) fn write(&self, data: &[u8], waiter: Option<&Arc<Waiter>>) -> WriteOutcome {
        let mut state = lock(&self.state);
        if state.readers == 0 {
            return WriteOutcome::Broken;
        }
        let mut written = 0;
        // Linux tops up the last page with the write's first `len % 4096` bytes.
        let merged = data.len() % PAGE_BYTES;
        if merged > 0
            && let Some(last) = state.pages.back_mut()
            && last.data.len() + merged <= PAGE_BYTES
        {
            last.data.extend_from_slice(&data[..merged]);
            written = merged;
        }
        while written < data.len() && state.pages.len() < PIPE_PAGES {
            let take = (data.len() - written).min(PAGE_BYTES);
            state.pages.push_back(Page {
                data: data[written..written + take].to_vec(),
                read: 0,
            });
            written += take;
        }
        if written == 0 && !data.is_empty() {
            if let Some(waiter) = waiter {
                state.write_waiters.register(waiter);
            }
            return WriteOutcome::Full;
        }
        if written > 0 {
            state.read_waiters.wake_all();
        }
        WriteOutcome::Wrote(written)
    }

    /// Bytes waiting to be read (`FIONREAD`).
    pub(crate) fn queued(&self) -> usize {
        lock(&self.state)
            .pages
            .iter()
            .map(|page| page.data.len() - page.read)
            .sum()
    }

    /// Readiness as seen from a read end (`write` false) or a write end.
    pub(crate) fn readiness(&self, write: bool) -> PipeReadiness {
        let state = lock(&self.state);
        PipeReadiness {
            readable: !state.pages.is_empty(),
            // Linux: a free page; any write of up to PIPE_BUF bytes then goes in whole.
            writable: state.pages.len() < PIPE_PAGES,
            hung_up: if write {
                state.readers == 0
            } else {
                state.writers == 0
            },
        }
    }

    /// Queues `waiter` to be woken when this end's readiness may change.
    pub(crate) fn wait(&self, write: bool, waiter: &Arc<Waiter>) {
        let mut state = lock(&self.state);
        if write {
            state.write_waiters.register(waiter);
        } else {
            state.read_waiters.register(waiter);
        }
    }
}

/// One open end of a pipe: what an open file description of it holds. Dropping the last
/// reference to the description closes the end and wakes the other side (a reader then sees
/// end of file, a writer `EPIPE`).
#[derive(Debug)]
pub(crate) struct PipeEnd {
    pub(crate) pipe: Arc<Pipe>,
    /// Whether this is the write end.
    pub(crate) write: bool,
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let mut state = lock(&self.pipe.state);
        if self.write {
            state.writers = state.writers.saturating_sub(1);
            if state.writers == 0 {
                state.read_waiters.wake_all();
            }
        } else {
            state.readers = state.readers.saturating_sub(1);
            if state.readers == 0 {
                state.write_waiters.wake_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written_then_end_of_file_once_the_writer_is_gone() {
        let (reader, writer) = Pipe::open();
        assert_eq!(reader.pipe.read(10, None), ReadOutcome::Empty);
        assert_eq!(writer.pipe.write(b"hello", None), WriteOutcome::Wrote(5));
        assert_eq!(
            reader.pipe.read(3, None),
            ReadOutcome::Data(b"hel".to_vec())
        );
        assert_eq!(
            reader.pipe.read(10, None),
            ReadOutcome::Data(b"lo".to_vec())
        );
        drop(writer);
        assert_eq!(reader.pipe.read(10, None), ReadOutcome::Data(Vec::new()));
        assert!(reader.pipe.readiness(false).hung_up);
    }

    #[test]
    fn the_queue_holds_what_linux_holds() {
        let (reader, writer) = Pipe::open();
        // 1,000-byte writes: four to a page, sixteen pages.
        let mut writes = 0;
        while writer.pipe.write(&[1u8; 1000], None) == WriteOutcome::Wrote(1000) {
            writes += 1;
        }
        assert_eq!((writes, writer.pipe.queued()), (64, 64_000));
        assert!(!writer.pipe.readiness(true).writable);
        // Reading 1,500 bytes frees no page (the first is half read): still full.
        assert_eq!(
            reader.pipe.read(1500, None),
            ReadOutcome::Data(vec![1u8; 1500])
        );
        assert_eq!(writer.pipe.write(&[2u8; 200], None), WriteOutcome::Full);
        // Finishing the first page frees it: an atomic write takes the whole new page.
        assert_eq!(
            reader.pipe.read(2500, None),
            ReadOutcome::Data(vec![1u8; 2500])
        );
        assert_eq!(
            writer.pipe.write(&[2u8; PIPE_BUF], None),
            WriteOutcome::Wrote(PIPE_BUF)
        );
        // A large write moves what fits (nothing now) and waits for the rest.
        assert_eq!(
            writer.pipe.write(&[3u8; PIPE_BUF + 1], None),
            WriteOutcome::Full
        );
        let ReadOutcome::Data(all) = reader.pipe.read(1 << 20, None) else {
            panic!("data expected");
        };
        assert_eq!(all.len(), 60_000 + PIPE_BUF);
        assert_eq!(writer.pipe.queued(), 0);
        // Into an empty pipe, 5,000 bytes take two pages (4,096 + 904), and 3,000 more top
        // up the second.
        assert_eq!(
            writer.pipe.write(&[4u8; 5000], None),
            WriteOutcome::Wrote(5000)
        );
        assert_eq!(
            writer.pipe.write(&[5u8; 3000], None),
            WriteOutcome::Wrote(3000)
        );
        assert_eq!(writer.pipe.queued(), 8000);
    }

    #[test]
    fn a_write_with_no_reader_is_broken() {
        let (reader, writer) = Pipe::open();
        drop(reader);
        assert_eq!(writer.pipe.write(b"x", None), WriteOutcome::Broken);
        assert!(writer.pipe.readiness(true).hung_up);
    }
}
