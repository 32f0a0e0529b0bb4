//! A task's output, kept in a bounded buffer that drops the oldest bytes.
//!
//! stdout and stderr are one sequence per task: every byte gets the next offset of the task,
//! whichever stream it came from, and each chunk says its stream. One sequence is what
//! `StreamOutputRequest.from_offset` (one resume point per task) can name. Offsets keep counting
//! through dropped bytes, so a reader sees a gap rather than silently missing data.

use std::collections::VecDeque;
use xeno_schemas::proto::common::v1::OutputStream;

/// Largest chunk of output in one event, as `OutputChunk` allows (64 KiB).
pub(crate) const CHUNK_BYTES_MAX: usize = 64 * 1024;

/// Most chunks kept per task, whatever their size: a task alternating one-byte writes between
/// stdout and stderr makes a chunk per byte, and this keeps the bookkeeping of such output
/// bounded too (the oldest chunks go first, as with bytes).
pub(crate) const CHUNKS_KEPT_MAX: usize = 4096;

/// One run of bytes from one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// Which stream.
    pub stream: OutputStream,
    /// Offset of `data[0]` in the task's output.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Chunk {
    /// Offset just past the chunk.
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// A task's kept output.
#[derive(Debug)]
pub(crate) struct OutputLog {
    chunks: VecDeque<Chunk>,
    kept_bytes: usize,
    produced_bytes: u64,
    cap_bytes: usize,
}

impl OutputLog {
    /// An empty log keeping at most `cap_bytes` bytes.
    pub fn new(cap_bytes: usize) -> Self {
        OutputLog {
            chunks: VecDeque::new(),
            kept_bytes: 0,
            produced_bytes: 0,
            cap_bytes,
        }
    }

    /// Bytes produced so far, kept or dropped.
    pub fn produced_bytes(&self) -> u64 {
        self.produced_bytes
    }

    /// Appends output, dropping the oldest kept bytes beyond the cap.
    pub fn append(&mut self, stream: OutputStream, mut data: &[u8]) {
        let mut offset = self.produced_bytes;
        self.produced_bytes += data.len() as u64;
        if data.len() > self.cap_bytes {
            // Only the newest cap_bytes could survive the trimming below anyway.
            let skip = data.len() - self.cap_bytes;
            offset += skip as u64;
            data = &data[skip..];
        }
        while !data.is_empty() {
            // Contiguous output from the same stream joins the last chunk, so a task writing a
            // line at a time does not make an event per line.
            let take = match self.chunks.back_mut() {
                Some(last)
                    if last.stream == stream
                        && last.end() == offset
                        && last.data.len() < CHUNK_BYTES_MAX =>
                {
                    let take = data.len().min(CHUNK_BYTES_MAX - last.data.len());
                    last.data.extend_from_slice(&data[..take]);
                    take
                }
                _ => {
                    let take = data.len().min(CHUNK_BYTES_MAX);
                    self.chunks.push_back(Chunk {
                        stream,
                        offset,
                        data: data[..take].to_vec(),
                    });
                    take
                }
            };
            self.kept_bytes += take;
            offset += take as u64;
            data = &data[take..];
        }
        self.trim();
    }

    /// Drops the oldest bytes until the log is within both caps.
    fn trim(&mut self) {
        while self.kept_bytes > self.cap_bytes || self.chunks.len() > CHUNKS_KEPT_MAX {
            let too_many_chunks = self.chunks.len() > CHUNKS_KEPT_MAX;
            let excess = self.kept_bytes.saturating_sub(self.cap_bytes);
            let Some(oldest) = self.chunks.front_mut() else {
                return;
            };
            if !too_many_chunks && excess < oldest.data.len() {
                oldest.data.drain(..excess);
                oldest.offset += excess as u64;
                self.kept_bytes -= excess;
            } else {
                self.kept_bytes -= oldest.data.len();
                self.chunks.pop_front();
            }
        }
    }

    /// Kept output from `offset` on, in order: the chunk holding `offset` is cut to start there.
    pub fn from(&self, offset: u64) -> impl Iterator<Item = Chunk> + '_ {
        self.chunks
            .iter()
            .filter(move |chunk| chunk.end() > offset)
            .map(move |chunk| {
                let skip = offset.saturating_sub(chunk.offset);
                let skip = usize::try_from(skip)
                    .unwrap_or(usize::MAX)
                    .min(chunk.data.len());
                Chunk {
                    stream: chunk.stream,
                    offset: chunk.offset + skip as u64,
                    data: chunk.data[skip..].to_vec(),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: OutputStream = OutputStream::Stdout;
    const ERR: OutputStream = OutputStream::Stderr;

    fn collect(log: &OutputLog, from: u64) -> Vec<(OutputStream, u64, Vec<u8>)> {
        log.from(from)
            .map(|chunk| (chunk.stream, chunk.offset, chunk.data))
            .collect()
    }

    #[test]
    fn one_sequence_of_offsets_across_streams() {
        let mut log = OutputLog::new(1024);
        log.append(OUT, b"ab");
        log.append(OUT, b"c");
        log.append(ERR, b"oops");
        log.append(OUT, b"d");
        assert_eq!(
            collect(&log, 0),
            [
                (OUT, 0, b"abc".to_vec()),
                (ERR, 3, b"oops".to_vec()),
                (OUT, 7, b"d".to_vec())
            ]
        );
        assert_eq!(
            collect(&log, 4),
            [(ERR, 4, b"ops".to_vec()), (OUT, 7, b"d".to_vec())]
        );
        assert!(collect(&log, 8).is_empty());
    }

    #[test]
    fn drops_the_oldest_and_keeps_counting() {
        let mut log = OutputLog::new(4);
        log.append(OUT, b"hello");
        log.append(OUT, b"world!");
        assert_eq!(log.produced_bytes(), 11);
        assert_eq!(collect(&log, 0), [(OUT, 7, b"rld!".to_vec())]);
        log.append(ERR, b"x");
        assert_eq!(
            collect(&log, 0),
            [(OUT, 8, b"ld!".to_vec()), (ERR, 11, b"x".to_vec())]
        );
    }

    #[test]
    fn chunks_never_exceed_the_event_size() {
        let mut log = OutputLog::new(1 << 20);
        log.append(OUT, &vec![b'x'; CHUNK_BYTES_MAX + 10]);
        log.append(OUT, &[b'y'; 5]);
        let chunks = collect(&log, 0);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].2.len(), CHUNK_BYTES_MAX);
        assert_eq!(chunks[1].1, CHUNK_BYTES_MAX as u64);
        assert_eq!(chunks[1].2.len(), 15);
    }

    #[test]
    fn bounds_the_number_of_chunks() {
        let mut log = OutputLog::new(1 << 20);
        for i in 0..(CHUNKS_KEPT_MAX + 10) {
            log.append(if i % 2 == 0 { OUT } else { ERR }, b"z");
        }
        let chunks = collect(&log, 0);
        assert_eq!(chunks.len(), CHUNKS_KEPT_MAX);
        assert_eq!(chunks[0].1, 10, "the ten oldest chunks were dropped");
    }
}
