//! A client for the operator's socket, used by the `xenocorp` subcommands and the tests.

use anyhow::Context;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint};
use xeno_schemas::proto::corp::v1::corp_admin_client::CorpAdminClient;

/// Connects to a running corp's admin socket.
pub async fn connect(socket: &Path) -> anyhow::Result<CorpAdminClient<Channel>> {
    let socket: PathBuf = socket.to_owned();
    let display = socket.display().to_string();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::try_from("http://corp-admin.invalid")?
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .with_context(|| {
            format!("connecting to the corp's admin socket {display} (is xenocorp running?)")
        })?;
    Ok(CorpAdminClient::new(channel))
}
