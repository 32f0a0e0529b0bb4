//! Starting a corp: its CA, store, writer, gRPC service (mutual TLS, with health and
//! reflection), operator socket and web pages. Used by the `xenocorp` binary and, in process,
//! by `xeno dev` and the tests.

use crate::ca::CertificateAuthority;
use crate::config::Config;
use crate::core::Corp;
use crate::service::{AdminService, CorpService, MESSAGE_BYTES_MAX};
use crate::writer::Writer;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use xeno_daemon::Servers;
use xeno_schemas::proto::corp::v1::corp_admin_server::CorpAdminServer;
use xeno_schemas::proto::corp::v1::xeno_corp_server::XenoCorpServer;

/// A running corp.
pub struct RunningCorp {
    /// Its id.
    pub corp_id: String,
    /// Where its gRPC service listens.
    pub grpc_addr: SocketAddr,
    /// Where its web pages listen.
    pub web_addr: Option<SocketAddr>,
    /// Its CA certificate, PEM.
    pub ca_certificate_pem: String,
    /// The operator's socket.
    pub admin_socket: std::path::PathBuf,
    servers: Servers,
}

impl RunningCorp {
    /// Stops serving and waits for the servers to finish.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    /// Stops serving and waits for the servers to finish, leaving this handle inert.
    pub async fn stop(&mut self) {
        self.servers.stop().await;
    }

    /// Serves until one server fails or `signal` completes.
    pub async fn wait(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        self.servers.until(signal).await?;
        self.shutdown().await;
        Ok(())
    }
}

/// Starts a corp from its configuration.
pub async fn start(config: Config) -> anyhow::Result<RunningCorp> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let ca = Arc::new(CertificateAuthority::load_or_create(
        &config.data_dir,
        &config.corp_id,
    )?);
    let writer = {
        let open_config = config.clone();
        let open_ca = Arc::clone(&ca);
        let rebuild_config = config.clone();
        let rebuild_ca = Arc::clone(&ca);
        Writer::start(
            move || {
                let mut store = crate::store::open(&open_config)?;
                let snapshot = store.load().context("loading the corp's state")?;
                let corp = Corp::new(&open_config, open_ca, snapshot)?;
                let violations = corp.violations();
                anyhow::ensure!(
                    violations.is_empty(),
                    "the stored ledger is inconsistent: {}",
                    violations.join("; ")
                );
                Ok((corp, store))
            },
            Box::new(move |snapshot| Corp::new(&rebuild_config, Arc::clone(&rebuild_ca), snapshot)),
            config.commit.queue_max,
            config.commit.batch_max,
        )
        .await?
    };
    let (certificate_pem, key_pem) = ca.issue_own_tls(&config.corp_id, &config.tls_names)?;
    let mut servers = Servers::new("corp");

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let grpc_addr = listener.local_addr()?;
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&certificate_pem, &key_pem))
        .client_ca_root(Certificate::from_pem(ca.certificate_pem()))
        .client_auth_optional(true);
    let corp_service = XenoCorpServer::new(CorpService::new(writer.clone(), servers.stopping()))
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(4 * MESSAGE_BYTES_MAX);
    xeno_daemon::grpc::serve(&mut servers, listener, Some(tls), corp_service).await?;

    let admin_socket = config.admin_socket();
    let _ = std::fs::remove_file(&admin_socket);
    let admin_listener = tokio::net::UnixListener::bind(&admin_socket)
        .with_context(|| format!("binding {}", admin_socket.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&admin_socket, std::fs::Permissions::from_mode(0o600))?;
    }
    let admin_stop = servers.stopped();
    let admin =
        Server::builder().add_service(CorpAdminServer::new(AdminService::new(writer.clone())));
    servers.spawn("the admin server", async move {
        Ok(admin
            .serve_with_incoming_shutdown(UnixListenerStream::new(admin_listener), admin_stop)
            .await?)
    });

    let web_addr = match config.web_listen {
        Some(address) => {
            let secret = web_secret(&config.data_dir)?;
            let web = crate::web::WebServer::bind(
                address,
                writer.clone(),
                (&certificate_pem, &key_pem),
                ca.certificate_pem(),
                &secret,
            )
            .await?;
            let web_addr = web.local_addr();
            let web_stop = servers.stopped();
            servers.spawn("the web server", async move { web.serve(web_stop).await });
            Some(web_addr)
        }
        None => None,
    };
    tracing::info!(
        corp = %config.corp_id,
        grpc = %grpc_addr,
        web = ?web_addr,
        admin = %admin_socket.display(),
        "xenocorp serving"
    );
    Ok(RunningCorp {
        corp_id: config.corp_id.clone(),
        grpc_addr,
        web_addr,
        ca_certificate_pem: ca.certificate_pem().to_owned(),
        admin_socket,
        servers,
    })
}

/// The key of the web account links, created once and kept in the data directory.
fn web_secret(data_dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("web-secret");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return hex::decode(text.trim()).with_context(|| format!("{} is not hex", path.display()));
    }
    let secret: [u8; 32] = rand::random();
    crate::ca::write_private(&path, &hex::encode(secret))?;
    Ok(secret.to_vec())
}
