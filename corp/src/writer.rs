//! Group commit. One thread owns the [`Corp`] state and the [`Store`]; requests queue to it
//! (boundedly), and it applies them in batches: every request in a batch runs in order against
//! the in-memory state, the batch's effects are persisted in one durable transaction, and only
//! then is any request in it answered. Thousands of charges share one fsync, and nothing is
//! acknowledged before it is on disk.

use crate::core::{Corp, Snapshot};
use crate::error::{CorpError, CorpResult};
use crate::model::Effect;
use crate::store::Store;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use tokio::sync::oneshot;

type Reply = Box<dyn FnOnce(Result<(), CorpError>) + Send>;
type Job = Box<dyn FnOnce(&mut Corp, &mut dyn Store, &mut Vec<Effect>) -> Reply + Send>;
/// Rebuilds the state from a fresh snapshot, after a failed commit.
pub type Rebuild = Box<dyn Fn(Snapshot) -> anyhow::Result<Corp> + Send>;

/// The handle through which requests reach the writer thread.
#[derive(Clone)]
pub struct Writer {
    queue: SyncSender<Job>,
}

impl Writer {
    /// Starts the writer thread, which first runs `open` to load the state (stores with
    /// blocking clients must be created on the thread that uses them). Returns once the state is
    /// loaded. `queue_max` bounds waiting requests; `batch_max` bounds a batch.
    pub async fn start(
        open: impl FnOnce() -> anyhow::Result<(Corp, Box<dyn Store>)> + Send + 'static,
        rebuild: Rebuild,
        queue_max: usize,
        batch_max: usize,
    ) -> anyhow::Result<Writer> {
        assert!(batch_max > 0 && queue_max >= batch_max, "bad commit limits");
        let (queue, receiver) = mpsc::sync_channel(queue_max);
        let (ready, opened) = oneshot::channel();
        std::thread::Builder::new()
            .name("corp-writer".to_owned())
            .spawn(move || match open() {
                Ok((corp, store)) => {
                    let _ = ready.send(Ok(()));
                    run(corp, store, rebuild, &receiver, batch_max);
                }
                Err(error) => {
                    let _ = ready.send(Err(error));
                }
            })?;
        opened
            .await
            .map_err(|_| anyhow::anyhow!("the writer thread stopped while loading"))??;
        Ok(Writer { queue })
    }

    /// Runs `operation` on the writer thread and returns its result once its effects are durable.
    pub async fn submit<R: Send + 'static>(
        &self,
        operation: impl FnOnce(&mut Corp, &mut dyn Store, &mut Vec<Effect>) -> CorpResult<R>
        + Send
        + 'static,
    ) -> CorpResult<R> {
        let (sender, receiver) = oneshot::channel();
        let job: Job = Box::new(move |corp, store, effects| {
            let before = effects.len();
            let result = operation(corp, store, effects);
            debug_assert!(
                result.is_ok() || effects.len() == before,
                "a failed operation left effects"
            );
            Box::new(move |committed: Result<(), CorpError>| {
                let _ = sender.send(committed.and(result));
            })
        });
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(CorpError::Unavailable(
                    "the corp is overloaded; retry shortly".to_owned(),
                ));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(CorpError::Unavailable(
                    "the corp is shutting down".to_owned(),
                ));
            }
        }
        receiver.await.unwrap_or_else(|_| {
            Err(CorpError::Unavailable(
                "the corp stopped before answering".to_owned(),
            ))
        })
    }
}

fn run(
    mut corp: Corp,
    mut store: Box<dyn Store>,
    rebuild: Rebuild,
    receiver: &Receiver<Job>,
    batch_max: usize,
) {
    let mut batch = Vec::with_capacity(batch_max);
    while let Ok(first) = receiver.recv() {
        batch.push(first);
        while batch.len() < batch_max {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut effects = Vec::new();
        let replies: Vec<Reply> = batch
            .drain(..)
            .map(|job| job(&mut corp, store.as_mut(), &mut effects))
            .collect();
        let committed = if effects.is_empty() {
            Ok(())
        } else {
            store.persist(&effects)
        };
        match committed {
            Ok(()) => replies.into_iter().for_each(|reply| reply(Ok(()))),
            Err(error) => {
                tracing::error!(
                    "commit failed, answering {} requests with UNAVAILABLE: {error:#}",
                    replies.len()
                );
                for reply in replies {
                    reply(Err(CorpError::Unavailable(
                        "the corp could not store this; retry".to_owned(),
                    )));
                }
                // Memory ran ahead of the store: reload what the store actually has.
                match store.load().and_then(&rebuild) {
                    Ok(reloaded) => corp = reloaded,
                    Err(error) => {
                        tracing::error!(
                            "cannot reload state after a failed commit: {error:#}; stopping"
                        );
                        std::process::abort();
                    }
                }
            }
        }
    }
}
