//! A task that floods its output: memory stays bounded by the task manager's buffers, however
//! much is written, and a reader that did not keep up sees the dropped part as a gap.
//!
//! Alone in its own test binary because it measures the heap with a counting allocator, which
//! tests running beside it in the same process would disturb.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;
use tokio_stream::StreamExt;
use tonic::Request;
use xeno_schemas::proto::common::v1::TaskState;
use xeno_schemas::proto::taskmanager::v1::{self as pb, domain_event::Event};
use xeno_taskmgr_kit::TaskManager;

const WAIT: Duration = Duration::from_secs(30);

/// The system allocator, counting live bytes and their high-water mark.
struct Counting {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl Counting {
    /// Starts a new high-water mark at what is live now, and returns it.
    fn reset_peak(&self) -> usize {
        let live = self.live.load(Ordering::SeqCst);
        self.peak.store(live, Ordering::SeqCst);
        live
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

// SAFETY: every call forwards to the system allocator with the caller's layout unchanged; the
// counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours, passed through.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = self.live.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            self.peak.fetch_max(live, Ordering::SeqCst);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        self.live.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours, passed through.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                let grown = new_size - layout.size();
                let live = self.live.fetch_add(grown, Ordering::SeqCst) + grown;
                self.peak.fetch_max(live, Ordering::SeqCst);
            } else {
                self.live
                    .fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        new
    }
}

#[global_allocator]
static HEAP: Counting = Counting {
    live: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
};

/// Writes `writes` blocks of 64 KiB of 'x' to stdout.
fn flood_module(writes: u32) -> Vec<u8> {
    wat(&format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (local $left i32)
    (memory.fill (i32.const 1024) (i32.const 120) (i32.const 65536))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (local.set $left (i32.const {writes}))
    (loop $again
      (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.tee $left (i32.sub (local.get $left) (i32.const 1)))
      (br_if $again))))"#
    ))
}

#[tokio::test]
async fn an_output_flood_keeps_memory_bounded_and_shows_the_gap() {
    const WRITES: u32 = 3200;
    const TOTAL: u64 = WRITES as u64 * 65536;
    let manager = manager();
    create_domain(&manager, "d", limits(0, 16)).await;
    let mut slow_reader = stream(&manager, "d", HashMap::new()).await;
    let heap_before = HEAP.reset_peak();
    deploy(&manager, "d", "flood", &flood_module(WRITES), "", vec![])
        .await
        .expect("deployed");
    let started = Instant::now();
    let finished = loop {
        let inspected = manager
            .inspect_task(Request::new(pb::InspectTaskRequest {
                domain_id: "d".into(),
                task_id: "flood".into(),
            }))
            .await
            .expect("inspect")
            .into_inner();
        if let Some(exit) = inspected.exit {
            break exit;
        }
        assert!(started.elapsed() < WAIT, "the flood did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let heap_growth = HEAP.peak().saturating_sub(heap_before);
    println!(
        "{TOTAL} bytes of output in {:?}; the heap grew at most {heap_growth} bytes",
        started.elapsed()
    );
    assert_eq!(finished.state(), TaskState::Exited);
    assert_eq!(finished.usage.expect("usage").output_bytes, TOTAL);
    // What may stay: the kept head (1 MiB), the event log (4 MiB), a few chunks in flight,
    // and compiling the tiny module.
    assert!(
        heap_growth < 24 * 1024 * 1024,
        "the heap grew {heap_growth} bytes for {TOTAL} of output"
    );

    // The reader that did not keep up gets the kept head, a gap, then the most recent output.
    let mut next_offset = 0;
    let mut gaps = 0;
    let mut notices = 0;
    loop {
        let event = tokio::time::timeout(WAIT, slow_reader.next())
            .await
            .expect("event")
            .expect("open")
            .expect("ok");
        match event.event {
            Some(Event::Output(chunk)) => {
                assert!(
                    chunk.offset >= next_offset,
                    "no duplicates: {} < {next_offset}",
                    chunk.offset
                );
                assert!(chunk.data.len() <= 64 * 1024);
                if chunk.offset > next_offset {
                    gaps += 1;
                }
                next_offset = chunk.offset + chunk.data.len() as u64;
            }
            Some(Event::Dropped(dropped)) => {
                assert_eq!(
                    dropped.offset, next_offset,
                    "the notice comes where the gap is"
                );
                assert!(dropped.reason.contains("fell behind"), "{dropped:?}");
                notices += 1;
            }
            Some(Event::TaskEnded(_)) => break,
            _ => {}
        }
    }
    assert!(gaps >= 1, "the dropped output shows as a gap");
    assert_eq!(notices, gaps, "each gap is announced, with its reason");
    assert_eq!(next_offset, TOTAL, "the newest output was still buffered");

    // A reader resuming from an offset inside the kept output starts exactly there, and a
    // reader that does not follow ends after what was recorded.
    let mut resumed = manager
        .stream_output(Request::new(pb::StreamOutputRequest {
            domain_id: "d".into(),
            from_offset: HashMap::from([("flood".to_owned(), 500_000)]),
            follow: false,
        }))
        .await
        .expect("stream")
        .into_inner();
    let mut first_offset = None;
    let mut ended = false;
    while let Some(event) = tokio::time::timeout(WAIT, resumed.next())
        .await
        .expect("event")
    {
        match event.expect("ok").event {
            Some(Event::Output(chunk)) => {
                first_offset.get_or_insert(chunk.offset);
            }
            Some(Event::TaskEnded(_)) => ended = true,
            Some(Event::TaskStarted(_)) => panic!("a listed task's start is not repeated"),
            _ => {}
        }
    }
    assert_eq!(first_offset, Some(500_000));
    assert!(ended);
}
