//! `xeno`: the XenoServer Open Platform's command-line client.
//!
//! Exit codes, for scripts: 0 success; 1 the operation ran and was refused (an invalid document,
//! a denied request); 2 bad usage, or a problem before anything could be asked (I/O, network).

mod dev;
mod display;
mod find;
mod order;
mod profile;
mod refusal;
mod register;
mod schema;
mod session;

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
    /// Create and list sessions on a XenoServer.
    #[command(subcommand)]
    Session(session::SessionCommand),
    /// Deploy a task into a session.
    Deploy(session::DeployArgs),
    /// A session's output and events.
    Logs(session::LogsArgs),
    /// A session's (or one task's) state.
    Status {
        /// The session.
        session: String,
        /// One task.
        task: Option<String>,
    },
    /// End a session: its tasks stop, the last charge is made and the order closed.
    Destroy {
        /// The session.
        session: String,
    },
    /// The charges for a session, as its corp recorded them.
    Charges {
        /// The session.
        session: String,
    },
    /// Find XenoServers: a boolean query over the XIS (--xis), or a resource discovery
    /// system's ranked suggestions for your requirements (--rd).
    Find(Box<find::FindArgs>),
    /// Query a XenoServer's status.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Run a whole local platform (a corp, a XenoServer with the Wasm task manager) and a demo
    /// session through it.
    Dev(dev::DevArgs),
    /// Work with the platform's XML documents.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
}

#[derive(Subcommand)]
enum ServerCommand {
    /// A server's capacity, environments and prices.
    Status {
        /// The server: HOST:PORT (any server your corp certified; its id is printed), or
        /// ID@HOST:PORT (that very server).
        server: session::ServerTarget,
    },
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let profile_dir = profile::directory(cli.profile.as_deref());
    let profile = || profile::Profile::load(&profile_dir);
    match cli.command {
        Command::Schema(command) => return schema::run(command),
        Command::Dev(args) => return dev::run(args).await,
        Command::Find(args) => find::run(*args).await?,
        Command::Register(command) => register::run(command, &profile_dir).await?,
        Command::Order(command) => order::run(command, &profile()?).await?,
        Command::Account => order::account(&profile()?).await?,
        Command::Audit { order } => order::audit(&profile()?, order).await?,
        Command::Session(command) => session::run(command, &profile()?).await?,
        Command::Deploy(args) => session::deploy(args, &profile()?).await?,
        Command::Logs(args) => session::logs(args, &profile()?).await?,
        Command::Status { session, task } => session::status(&profile()?, session, task).await?,
        Command::Destroy { session } => session::destroy(&profile()?, session).await?,
        Command::Charges { session } => session::charges(&profile()?, session).await?,
        Command::Server(ServerCommand::Status { server }) => {
            session::server_status(&profile()?, &server).await?
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
