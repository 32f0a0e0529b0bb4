//! The wall clock as the documents count time: Unix milliseconds.

/// Unix milliseconds now (0 before 1970, which a host clock set that far back would give).
pub fn now_unix_ms() -> u64 {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}
