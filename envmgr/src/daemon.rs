//! Starting a XenoServer: its corps, task managers, store, recovered sessions, and the gRPC
//! service over mutual TLS with health and reflection.

use crate::config::Config;
use crate::identity::TrustedCorps;
use crate::server::Manager;
use crate::service::{ServerService, message_bytes_max};
use crate::store::Store;
use anyhow::Context;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use xeno_clients::transport::{self, Credentials};
use xeno_daemon::Servers;
use xeno_schemas::proto::corp::v1::xeno_corp_client::XenoCorpClient;
use xeno_schemas::proto::server::v1::xeno_server_server::XenoServerServer;
use xeno_schemas::proto::taskmanager::v1 as tm;
use xeno_schemas::signing::{SigningKey, pem_to_der};
use xeno_taskmgr_kit::{DynTaskManager, RemoteTaskManager};

// What in-process callers (`xeno dev`, tests, benchmarks) use beside the gRPC service.
pub use crate::identity::ClientId;
pub use crate::server::Server;

/// A running XenoServer.
pub struct RunningServer {
    /// Where its gRPC service listens.
    pub grpc_addr: SocketAddr,
    /// Its id (its key's fingerprint).
    pub server_id: String,
    /// The core, for in-process callers such as `xeno dev`.
    pub server: Arc<Server>,
    /// Advertising in the XIS, when configured.
    pub discovery: Option<crate::discovery::Discovery>,
    servers: Servers,
}

impl RunningServer {
    /// Stops serving. Sessions stay as they are: a restarted server resumes them.
    pub async fn shutdown(mut self) {
        if let Some(discovery) = self.discovery.take() {
            discovery.stop().await;
        }
        self.server.stop();
        self.servers.stop().await;
    }

    /// Serves until `signal` completes or the server fails.
    pub async fn wait(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        self.servers.until(signal).await?;
        self.shutdown().await;
        Ok(())
    }
}

fn read(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Connects the task managers the configuration names.
async fn task_managers(config: &Config) -> anyhow::Result<HashMap<String, Manager>> {
    let mut managers = HashMap::new();
    let mut wasm: Option<DynTaskManager> = None;
    let mut linux: Option<DynTaskManager> = None;
    for entry in &config.task_managers {
        let handle: DynTaskManager = match (&entry.builtin, &entry.address) {
            (Some(builtin), _) if builtin == "linux" => match &linux {
                Some(handle) => Arc::clone(handle),
                None => {
                    let handle: DynTaskManager = Arc::new(
                        xeno_taskmgr_vm::VmTaskManager::new(xeno_taskmgr_vm::VmConfig {
                            tasks_max: config.linux.tasks_max,
                            domains_max: config.linux.domains_max,
                            versions: config.linux.versions.clone(),
                            images_dir: config.linux.images_dir.clone(),
                            images: config
                                .linux
                                .images
                                .iter()
                                .map(|image| xeno_taskmgr_vm::images::ImageEntry {
                                    name: image.name.clone(),
                                    digest: image.digest.clone(),
                                })
                                .collect(),
                            ..xeno_taskmgr_vm::VmConfig::default()
                        })
                        .context("starting the Linux (KVM) task manager")?,
                    );
                    linux = Some(Arc::clone(&handle));
                    handle
                }
            },
            (Some(_), _) => match &wasm {
                Some(handle) => Arc::clone(handle),
                None => {
                    let handle: DynTaskManager = Arc::new(
                        xeno_taskmgr_wasm::WasmTaskManager::new(xeno_taskmgr_wasm::WasmConfig {
                            tasks_max: config.wasm.tasks_max,
                            domains_max: config.wasm.domains_max,
                            ..xeno_taskmgr_wasm::WasmConfig::default()
                        })
                        .context("starting the Wasm task manager")?,
                    );
                    wasm = Some(Arc::clone(&handle));
                    handle
                }
            },
            (None, Some(address)) => {
                Arc::new(RemoteTaskManager::connect(address).await.with_context(|| {
                    format!(
                        "connecting to the task manager for {} at {address}",
                        entry.env_type
                    )
                })?)
            }
            (None, None) => anyhow::bail!(
                "task manager for {} has neither builtin nor address",
                entry.env_type
            ),
        };
        let capabilities = handle
            .get_capabilities(tonic::Request::new(tm::GetCapabilitiesRequest {}))
            .await
            .map_err(|status| {
                anyhow::anyhow!("task manager for {}: {}", entry.env_type, status.message())
            })?
            .into_inner();
        anyhow::ensure!(
            capabilities.env_types.contains(&entry.env_type),
            "the task manager configured for {} serves {} instead",
            entry.env_type,
            capabilities.env_types.join(", ")
        );
        tracing::info!(env_type = %entry.env_type, name = %capabilities.name, version = %capabilities.version, "task manager ready");
        managers.insert(
            entry.env_type.clone(),
            Manager {
                handle,
                capabilities,
            },
        );
    }
    Ok(managers)
}

/// Starts a XenoServer from its configuration.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    config.validate()?;
    // One process-wide TLS provider, whichever crates pulled rustls in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut trusted = TrustedCorps::default();
    let mut corps = HashMap::new();
    let mut ca_bundle = String::new();
    for corp in &config.corps {
        let ca = read(&corp.ca)?;
        trusted.add(&corp.id, &ca)?;
        ca_bundle.push_str(&ca);
        let credentials = Credentials {
            certificate_pem: read(&corp.certificate)?,
            key_pem: read(&corp.key)?,
        };
        let (channel, _) = transport::channel(
            &corp.address,
            &ca,
            Some(&credentials),
            &transport::Peer::corp(&corp.id),
        )?;
        corps.insert(
            corp.id.clone(),
            crate::session::CorpLink::new(XenoCorpClient::new(channel)),
        );
    }
    let first = &config.corps[0];
    let certificate_pem = read(&first.certificate)?;
    let key_pem = read(&first.key)?;
    let key = SigningKey::from_pkcs8_der(
        &pem_to_der(&key_pem, "PRIVATE KEY").context("the server key is not PKCS#8 PEM")?,
    )?;
    let server_id = key.fingerprint();
    let managers = task_managers(&config).await?;
    let store = Store::open(&config.data_dir)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let grpc_addr = listener.local_addr()?;
    let mut config = config;
    // Advertise the address actually bound when none is configured (port 0 picks one).
    config.endpoint.get_or_insert_with(|| grpc_addr.to_string());
    let server = Arc::new(Server::new(config, trusted, corps, managers, store)?);
    server.recover().await?;
    server.spawn_orphan_closer(std::time::Duration::from_millis(
        server.config.metering.orphan_retry_ms,
    ));
    server.spawn_revocation_refresh(std::time::Duration::from_millis(
        server.config.metering.revocation_refresh_ms,
    ));

    let discovery = if server.config.xis.address.is_empty() {
        None
    } else {
        let settings = server.config.xis.clone();
        Some(
            crate::discovery::Discovery::start(
                &settings,
                Arc::clone(&server),
                SigningKey::from_pkcs8_der(
                    &pem_to_der(&key_pem, "PRIVATE KEY")
                        .context("the server key is not PKCS#8 PEM")?,
                )?,
            )
            .context("starting to advertise in the XIS")?,
        )
    };
    let version = Arc::new(AtomicU64::new(0));
    let status = {
        let server = Arc::clone(&server);
        let certificate = certificate_pem.clone();
        Arc::new(move || {
            // Versions come from the clock so they keep increasing across restarts.
            let stamp =
                u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000)
                    .unwrap_or(0);
            let next = version.fetch_max(stamp, Ordering::SeqCst).max(stamp) + 1;
            version.store(next, Ordering::SeqCst);
            crate::advertisement::status(&server, &key, &certificate, next)
        })
    };
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&certificate_pem, &key_pem))
        .client_ca_root(Certificate::from_pem(&ca_bundle))
        // Health probes and load balancers have no certificate; every XenoServer call
        // still demands one (`TrustedCorps::client`).
        .client_auth_optional(true);
    let limit = message_bytes_max(&server);
    let service = XenoServerServer::new(ServerService::new(Arc::clone(&server), status))
        .max_decoding_message_size(limit);
    let mut servers = Servers::new("XenoServer");
    xeno_daemon::grpc::serve(&mut servers, listener, Some(tls), service).await?;
    tracing::info!(server = %server_id, grpc = %grpc_addr, "xenoserver serving");
    Ok(RunningServer {
        grpc_addr,
        server_id,
        server,
        discovery,
        servers,
    })
}
