//! The embedded store's persistence: an append-only log of accepted advertisements, each record
//! `[length u32][crc32 u32][received_ms u64][document]` (little-endian; the length and checksum
//! cover the last two fields). A restart replays it, the newest version of each server winning,
//! and a torn tail (a crash mid-write) is cut off at the last whole record.
//!
//! The XIS holds soft state that servers refresh every 30 seconds, so the log is written by one
//! task behind a bounded queue and synced to disk at most [`SYNC_INTERVAL`] apart, not once per
//! advertisement: a crash loses at most that much, which the next refresh restores. When the log
//! has grown to [`COMPACT_FACTOR`] times the live data it is rewritten with the live records
//! only (write, sync, rename).

use super::StoreError;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest time between two syncs of the log to disk.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// The log is compacted when it is this many times the size of the live records.
pub const COMPACT_FACTOR: u64 = 3;
/// ... and at least this large: compacting a small log gains nothing.
pub const COMPACT_MIN_BYTES: u64 = 64 * 1024 * 1024;
/// Largest record accepted when reading back: a document of the largest size the XIS accepts
/// plus the header. Anything larger is a torn or foreign file.
pub const RECORD_BYTES_MAX: usize = xeno_clients::xis::ADVERTISEMENT_BYTES_MAX + 8;

const HEADER_BYTES: usize = 8;

/// The log file in a data directory.
pub fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("xis.log")
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Log {
        path: path.to_owned(),
        source,
    }
}

/// Encodes one record.
pub fn encode(received_ms: u64, xml: &str, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(8 + xml.len());
    body.extend_from_slice(&received_ms.to_le_bytes());
    body.extend_from_slice(xml.as_bytes());
    let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// Reads every whole record of the log at `path` (none if it does not exist), and cuts off a
/// torn tail so that appends continue after the last good record.
pub fn read_all(path: &Path) -> Result<Vec<(u64, String)>, StoreError> {
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut bytes).map_err(io_error(path))?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(path)(error)),
    }
    let mut records = Vec::new();
    let mut offset = 0usize;
    while let Some(header) = bytes.get(offset..offset + HEADER_BYTES) {
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if !(8..=RECORD_BYTES_MAX).contains(&length) {
            break;
        }
        let Some(body) = bytes.get(offset + HEADER_BYTES..offset + HEADER_BYTES + length) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        let mut received = [0u8; 8];
        received.copy_from_slice(&body[..8]);
        let Ok(xml) = std::str::from_utf8(&body[8..]) else {
            break;
        };
        records.push((u64::from_le_bytes(received), xml.to_owned()));
        offset += HEADER_BYTES + length;
    }
    if offset < bytes.len() {
        tracing::warn!(
            path = %path.display(),
            kept_bytes = offset,
            dropped_bytes = bytes.len() - offset,
            "cutting a torn tail off the XIS log"
        );
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_error(path))?;
        file.set_len(offset as u64).map_err(io_error(path))?;
        file.sync_all().map_err(io_error(path))?;
    }
    Ok(records)
}

/// The appending end of the log.
pub struct LogWriter {
    path: PathBuf,
    file: BufWriter<std::fs::File>,
    bytes: u64,
    last_sync: Instant,
}

impl LogWriter {
    /// Opens the log for appending.
    pub fn open(path: &Path) -> Result<LogWriter, StoreError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_error(path))?;
        let bytes = file.metadata().map_err(io_error(path))?.len();
        Ok(LogWriter {
            path: path.to_owned(),
            file: BufWriter::with_capacity(1 << 20, file),
            bytes,
            last_sync: Instant::now(),
        })
    }

    /// Appends encoded records.
    pub fn append(&mut self, encoded: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(encoded).map_err(io_error(&self.path))?;
        self.bytes += encoded.len() as u64;
        Ok(())
    }

    /// Hands buffered records to the system, and syncs them to disk when `force` or when the
    /// last sync is [`SYNC_INTERVAL`] old.
    pub fn flush(&mut self, force: bool) -> Result<(), StoreError> {
        self.file.flush().map_err(io_error(&self.path))?;
        if force || self.last_sync.elapsed() >= SYNC_INTERVAL {
            self.file
                .get_ref()
                .sync_data()
                .map_err(io_error(&self.path))?;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Whether the log has grown enough beyond `live_bytes` to compact.
    pub fn wants_compaction(&self, live_bytes: u64) -> bool {
        self.bytes >= COMPACT_MIN_BYTES && self.bytes >= COMPACT_FACTOR * live_bytes
    }

    /// Replaces the log with `records` (the live ones): written to a temporary file, synced,
    /// renamed over the log, and the directory synced.
    pub fn compact(&mut self, records: &[(u64, std::sync::Arc<str>)]) -> Result<(), StoreError> {
        self.flush(true)?;
        let temporary = self.path.with_extension("log.compacting");
        let mut encoded = Vec::new();
        {
            let file = std::fs::File::create(&temporary).map_err(io_error(&temporary))?;
            let mut writer = BufWriter::with_capacity(1 << 20, file);
            for (received_ms, xml) in records {
                encoded.clear();
                encode(*received_ms, xml, &mut encoded);
                writer.write_all(&encoded).map_err(io_error(&temporary))?;
            }
            writer.flush().map_err(io_error(&temporary))?;
            writer.get_ref().sync_all().map_err(io_error(&temporary))?;
        }
        std::fs::rename(&temporary, &self.path).map_err(io_error(&self.path))?;
        if let Some(directory) = self.path.parent() {
            std::fs::File::open(directory)
                .and_then(|directory| directory.sync_all())
                .map_err(io_error(directory))?;
        }
        *self = LogWriter::open(&self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_path(dir.path());
        let mut writer = LogWriter::open(&path).expect("open");
        let mut encoded = Vec::new();
        encode(1, "<a/>", &mut encoded);
        encode(2, "<b/>", &mut encoded);
        writer.append(&encoded).expect("append");
        writer.flush(true).expect("flush");
        // A crash in the middle of the third record.
        let mut torn = Vec::new();
        encode(3, "<c/>", &mut torn);
        writer.append(&torn[..torn.len() - 2]).expect("append");
        writer.flush(true).expect("flush");
        drop(writer);
        let records = read_all(&path).expect("read");
        assert_eq!(
            records,
            vec![(1, "<a/>".to_owned()), (2, "<b/>".to_owned())]
        );
        let mut writer = LogWriter::open(&path).expect("reopen");
        writer.append(&torn).expect("append");
        writer.flush(true).expect("flush");
        assert_eq!(read_all(&path).expect("read").len(), 3);
    }
}
