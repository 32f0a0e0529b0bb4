//! A task's stdout and stderr as WASI sees them: every write goes straight into the domain's
//! events (kept up to the task's cap, offered to readers, counted for usage) and always
//! succeeds, so a guest can neither block nor crash the host by writing.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream as WasiOutputStream, Pollable, StreamError};
use xeno_schemas::proto::common::v1::OutputStream;
use xeno_taskmgr_kit::events::{CHUNK_BYTES_MAX, DomainEvents};
use xeno_taskmgr_kit::metering::TaskMeter;

/// One of a task's output streams.
#[derive(Clone)]
pub(crate) struct OutputPipe {
    task_id: Arc<str>,
    stream: OutputStream,
    events: Arc<DomainEvents>,
    meter: Arc<TaskMeter>,
}

impl OutputPipe {
    pub(crate) fn new(
        task_id: Arc<str>,
        stream: OutputStream,
        events: Arc<DomainEvents>,
        meter: Arc<TaskMeter>,
    ) -> Self {
        OutputPipe {
            task_id,
            stream,
            events,
            meter,
        }
    }

    fn record(&self, data: &[u8]) {
        self.meter.add_output_bytes(data.len() as u64);
        self.events.output(&self.task_id, self.stream, data);
    }
}

impl IsTerminal for OutputPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputPipe {
    fn p2_stream(&self) -> Box<dyn WasiOutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl WasiOutputStream for OutputPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.record(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // The permit bounds what one write may ask the host to copy at once.
        Ok(CHUNK_BYTES_MAX)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputPipe {
    async fn ready(&mut self) {}
}

impl AsyncWrite for OutputPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let len = buf.len().min(CHUNK_BYTES_MAX);
        self.record(&buf[..len]);
        Poll::Ready(Ok(len))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
