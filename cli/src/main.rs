//! `xeno`: the XenoServer Open Platform's command-line client.
//!
//! Exit codes, for scripts: 0 success; 1 the operation ran and was refused (an invalid document,
//! a denied request); 2 bad usage, or a problem before anything could be asked (I/O, network).

mod order;
mod profile;
mod refusal;
mod register;
mod schema;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "xeno",
    version,
    about = "Client for the XenoServer Open Platform"
)]
struct Cli {
    /// Profile directory holding your credentials (default: $XENO_PROFILE or ~/.xeno/default).
    #[arg(long, global = true)]
    profile: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register with a corp (keys are generated locally).
    #[command(subcommand)]
    Register(register::RegisterCommand),
    /// Buy, narrow, sign and inspect purchase orders.
    #[command(subcommand)]
    Order(order::OrderCommand),
    /// Your balances and recent orders at your corp.
    Account,
    /// Every charge on an order, with its usage annotation.
    Audit {
        /// The order id.
        order: String,
    },
    /// Work with the platform's XML documents.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let profile_dir = profile::directory(cli.profile.as_deref());
    match cli.command {
        Command::Schema(command) => return schema::run(command),
        Command::Register(command) => register::run(command, &profile_dir).await?,
        Command::Order(command) => {
            order::run(command, &profile::Profile::load(&profile_dir)?).await?
        }
        Command::Account => order::account(&profile::Profile::load(&profile_dir)?).await?,
        Command::Audit { order } => {
            order::audit(&profile::Profile::load(&profile_dir)?, order).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xeno: {error:#}");
            if error.downcast_ref::<refusal::Refused>().is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}
