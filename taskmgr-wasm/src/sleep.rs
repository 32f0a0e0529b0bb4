//! `poll_oneoff` for core modules, so that a sleeping task stays under its limits.
//!
//! Wasmtime's WASI, configured to run blocking operations on the task's own thread (which
//! keeps their CPU time the task's: see `guest.rs`), serves a `poll_oneoff` on one relative
//! clock with `std::thread::sleep`: the task's thread, a worker every task shares, then sleeps
//! for as long as the guest asked, deaf to stop requests and to the task's wall-clock limit
//! (a 100 s sleep under a 1 s limit ran 100 s). This definition shadows it: that one case
//! becomes an asynchronous sleep, which the task's stop and deadline race against like any
//! other wait; every other `poll_oneoff` goes to WASI's own.

use crate::host::ModuleHost;
use std::time::Duration;
use wasmtime::{Caller, Extern};

/// `__WASI_ERRNO_FAULT`: a subscription or event outside the guest's memory.
const ERRNO_FAULT: i32 = 21;
/// Bytes of a p1 `subscription` and `event`.
const SUBSCRIPTION_BYTES: usize = 48;
const EVENT_BYTES: usize = 32;
/// `eventtype::clock`, and the `subclockflags::subscription_clock_abstime` bit.
const EVENTTYPE_CLOCK: u8 = 0;
const CLOCK_ABSTIME: u16 = 1;

/// What a single-subscription poll asks for, when it is a relative sleep.
fn relative_sleep(subscription: &[u8; SUBSCRIPTION_BYTES]) -> Option<(u64, Duration)> {
    let userdata = u64::from_le_bytes(subscription[0..8].try_into().ok()?);
    let tag = subscription[8];
    let timeout_ns = u64::from_le_bytes(subscription[24..32].try_into().ok()?);
    let flags = u16::from_le_bytes(subscription[40..42].try_into().ok()?);
    (tag == EVENTTYPE_CLOCK && flags & CLOCK_ABSTIME == 0)
        .then(|| (userdata, Duration::from_nanos(timeout_ns)))
}

/// The shadowing `wasi_snapshot_preview1.poll_oneoff(in, out, nsubscriptions, nevents)`.
pub(crate) async fn poll_oneoff(
    caller: &mut Caller<'_, ModuleHost>,
    subscriptions: i32,
    events: i32,
    count: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    let Some(memory) = caller.get_export("memory").and_then(Extern::into_memory) else {
        return Ok(ERRNO_FAULT);
    };
    if count == 1 {
        let mut subscription = [0u8; SUBSCRIPTION_BYTES];
        let at = usize::try_from(subscriptions).unwrap_or(usize::MAX);
        if memory.read(&mut *caller, at, &mut subscription).is_err() {
            return Ok(ERRNO_FAULT);
        }
        if let Some((userdata, duration)) = relative_sleep(&subscription) {
            tokio::time::sleep(duration).await;
            let mut event = [0u8; EVENT_BYTES];
            event[0..8].copy_from_slice(&userdata.to_le_bytes());
            event[10] = EVENTTYPE_CLOCK;
            let written = memory
                .write(
                    &mut *caller,
                    usize::try_from(events).unwrap_or(usize::MAX),
                    &event,
                )
                .and_then(|()| {
                    memory.write(
                        &mut *caller,
                        usize::try_from(nevents).unwrap_or(usize::MAX),
                        &1u32.to_le_bytes(),
                    )
                });
            return Ok(if written.is_ok() { 0 } else { ERRNO_FAULT });
        }
    }
    let (bytes, host) = memory.data_and_store_mut(&mut *caller);
    let mut guest = wiggle::GuestMemory::Unshared(bytes);
    wasmtime_wasi::p1::wasi_snapshot_preview1::poll_oneoff(
        &mut host.wasi,
        &mut guest,
        subscriptions,
        events,
        count,
        nevents,
    )
    .await
}
