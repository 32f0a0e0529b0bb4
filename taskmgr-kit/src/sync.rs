//! Locking that survives a panic elsewhere: a poisoned lock still guards consistent data here
//! (every critical section leaves its state valid before anything that can panic), and taking
//! the whole host down because one task's bookkeeping panicked would be worse.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, poisoned or not.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
