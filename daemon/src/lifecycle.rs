//! [`Servers`]: a daemon's servers and background loops, stopped together.

use anyhow::Context;
use std::future::Future;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A daemon's running parts: each a task that ends when the daemon stops (or fails on its
/// own). Stopping sets one signal every part watches and waits for all of them.
pub struct Servers {
    name: &'static str,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Servers {
    /// No parts yet; `name` names the daemon in errors.
    pub fn new(name: &'static str) -> Servers {
        Servers {
            name,
            shutdown: watch::channel(false).0,
            tasks: JoinSet::new(),
        }
    }

    /// Turns `true` when the daemon stops, for loops that watch it.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Completes when the daemon stops, for a server's graceful shutdown.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    }

    /// Runs `task` as one of the daemon's parts, named `what` in its errors.
    pub fn spawn(
        &mut self,
        what: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.tasks
            .spawn(async move { task.await.with_context(|| what.to_owned()) });
    }

    /// Tells every part to stop and waits for them all.
    pub async fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Serves until `signal` completes (then `Ok`, and the caller stops the daemon) or a part
    /// ends first (then the error that ended it: a part never ends by itself).
    pub async fn until(&mut self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::select! {
            () = signal => {
                tracing::info!(daemon = self.name, "shutting down");
                Ok(())
            }
            Some(result) = self.tasks.join_next() => {
                result.with_context(|| format!("a {} task panicked", self.name))??;
                anyhow::bail!("a {} task stopped unexpectedly", self.name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_part_that_fails_ends_the_wait_with_its_error() {
        let mut servers = Servers::new("test");
        servers.spawn("the listener", async { anyhow::bail!("address in use") });
        let error = servers
            .until(std::future::pending())
            .await
            .expect_err("a failed part ends the wait");
        assert_eq!(format!("{error:#}"), "the listener: address in use");
    }

    #[tokio::test]
    async fn stopping_reaches_every_part() {
        let mut servers = Servers::new("test");
        for _ in 0..3 {
            let stopped = servers.stopped();
            servers.spawn("a loop", async move {
                stopped.await;
                Ok(())
            });
        }
        servers
            .until(async {})
            .await
            .expect("the signal ends the wait");
        tokio::time::timeout(std::time::Duration::from_secs(5), servers.stop())
            .await
            .expect("every part stops");
    }
}
