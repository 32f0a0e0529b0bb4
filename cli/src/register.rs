//! `xeno register`: open an account with a corp. The key pair is generated here; only a
//! certificate signing request goes to the corp.

use crate::profile::{self, ProfileFile};
use crate::refusal::from_status;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use xeno_schemas::proto::corp::v1 as pb;
use xeno_schemas::proto::corp::v1::xeno_corp_client::XenoCorpClient;

#[derive(Subcommand)]
pub enum RegisterCommand {
    /// Register as a client, to buy purchase orders and run sessions.
    Client(ClientArgs),
    /// Register a XenoServer, to host sessions and be paid for them.
    Server(ServerArgs),
}

/// Where the corp is.
#[derive(Args)]
pub struct CorpArgs {
    /// The corp's gRPC address, host:port.
    #[arg(long)]
    corp: String,
    /// The corp's CA certificate (PEM), obtained from the corp out of band (its web page serves
    /// it at /ca.pem).
    #[arg(long)]
    corp_ca: PathBuf,
}

#[derive(Args)]
pub struct ClientArgs {
    #[command(flatten)]
    corp: CorpArgs,
    /// Your name.
    #[arg(long)]
    name: String,
    /// Your postal address.
    #[arg(long)]
    address: String,
    /// How the corp bills you.
    #[arg(long)]
    charging: String,
    /// Certificate carries only an opaque account id; the corp alone knows who you are.
    #[arg(long)]
    pseudonymous: bool,
}

#[derive(Args)]
pub struct ServerArgs {
    #[command(flatten)]
    corp: CorpArgs,
    /// The operator's name.
    #[arg(long)]
    owner_name: String,
    /// The operator's address.
    #[arg(long)]
    owner_address: String,
    /// Where the operator is paid.
    #[arg(long)]
    payout: String,
    /// Where clients will reach the server, host:port.
    #[arg(long)]
    endpoint: String,
    /// Architecture family.
    #[arg(long, default_value = std::env::consts::ARCH)]
    architecture: String,
    /// CPU model.
    #[arg(long, default_value = "")]
    cpu_model: String,
    /// CPU cores.
    #[arg(long)]
    cores: u32,
    /// Memory, MB.
    #[arg(long)]
    memory_mb: u64,
    /// Network, Mbps.
    #[arg(long, default_value_t = 0)]
    network_mbps: u32,
    /// The XIS node the server advertises through.
    #[arg(long, default_value = "")]
    xis_node: String,
}

async fn anonymous(corp: &CorpArgs) -> Result<(XenoCorpClient<tonic::transport::Channel>, String)> {
    let ca = std::fs::read_to_string(&corp.corp_ca)
        .with_context(|| format!("reading {}", corp.corp_ca.display()))?;
    let channel = xeno_clients::transport::connect(
        &corp.corp,
        &ca,
        None,
        &xeno_clients::transport::Peer::Corp(None),
    )
    .await?;
    Ok((XenoCorpClient::new(channel), ca))
}

pub async fn run(command: RegisterCommand, profile_dir: &Path) -> Result<()> {
    match command {
        RegisterCommand::Client(args) => {
            let (mut corp, ca) = anonymous(&args.corp).await?;
            let (key_pem, csr_pem) = xeno_clients::identity::key_and_csr(&args.name)?;
            let privacy = if args.pseudonymous {
                pb::PrivacyMode::Pseudonymous
            } else {
                pb::PrivacyMode::Identified
            };
            let response = corp
                .register_client(pb::RegisterClientRequest {
                    name: args.name,
                    address: args.address,
                    charging_details: args.charging,
                    privacy: privacy as i32,
                    csr_pem,
                })
                .await
                .map_err(|status| from_status("registration refused", status))?
                .into_inner();
            let file = ProfileFile {
                corp: args.corp.corp,
                account_id: response.account_id.clone(),
                role: "client".to_owned(),
            };
            profile::create(profile_dir, &file, &key_pem, &response.certificate_pem, &ca)?;
            println!(
                "registered client {} (profile {})",
                response.account_id,
                profile_dir.display()
            );
        }
        RegisterCommand::Server(args) => {
            let (mut corp, ca) = anonymous(&args.corp).await?;
            let (key_pem, csr_pem) = xeno_clients::identity::key_and_csr("xenoserver")?;
            let response = corp
                .register_server(pb::RegisterServerRequest {
                    owner_name: args.owner_name,
                    owner_address: args.owner_address,
                    payout_details: args.payout,
                    machine: Some(pb::MachineSpec {
                        architecture: args.architecture,
                        cpu_model: args.cpu_model,
                        cpu_cores: args.cores,
                        memory_mb: args.memory_mb,
                        network_mbps: args.network_mbps,
                        xis_node: args.xis_node,
                    }),
                    csr_pem,
                    endpoint: args.endpoint,
                })
                .await
                .map_err(|status| from_status("registration refused", status))?
                .into_inner();
            let file = ProfileFile {
                corp: args.corp.corp,
                account_id: response.server_id.clone(),
                role: "server".to_owned(),
            };
            profile::create(profile_dir, &file, &key_pem, &response.certificate_pem, &ca)?;
            println!(
                "registered server {} with {} (profile {})",
                response.server_id,
                response.corp_id,
                profile_dir.display()
            );
        }
    }
    Ok(())
}
