//! `xenocorp`: run a XenoCorp, and the operator's commands against a running one.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use xeno_corp::config::{Config, parse_major_amount};
use xeno_schemas::proto::common::v1::Money;
use xeno_schemas::proto::corp::v1 as pb;

// glibc's allocator spent a sixth of the corp's CPU under a charge storm (threads freeing each
// other's allocations); mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "xenocorp",
    version,
    about = "A XenoCorp: credentials, purchase orders, charging and settlement"
)]
struct Cli {
    /// Configuration file (TOML); defaults apply when absent.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the corp until interrupted.
    Serve,
    /// Grant the auditor role to an account.
    GrantAuditor {
        /// The account id.
        account: String,
    },
    /// Revoke an account's certificates.
    Revoke {
        /// The account id.
        account: String,
    },
    /// Credit a client account with money received from outside.
    Deposit {
        /// The account id.
        account: String,
        /// The amount in major units, e.g. 25.00.
        amount: String,
        /// The currency.
        #[arg(long, default_value = "GBP")]
        currency: String,
    },
    /// Check the ledger's invariants; exits 1 if any is violated.
    Check,
    /// Print the configuration in effect (defaults filled in).
    ShowConfig,
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    xeno_daemon::config::load_or_default(path.map(PathBuf::as_path))
}

#[tokio::main]
async fn main() -> Result<()> {
    xeno_daemon::init_tracing();
    // A failed money invariant is a bug: stop at once rather than keep serving from a bad state.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
    let cli = Cli::parse();
    let config = load_config(cli.config.as_ref())?;
    match cli.command {
        Command::Serve => {
            let corp = xeno_corp::daemon::start(config).await?;
            println!(
                "xenocorp {} grpc={} web={}",
                corp.corp_id,
                corp.grpc_addr,
                corp.web_addr.map(|a| a.to_string()).unwrap_or_default()
            );
            corp.wait(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
        }
        Command::GrantAuditor { account } => {
            let mut admin = xeno_clients::corp_admin::connect(&config.admin_socket()).await?;
            admin
                .grant_auditor(pb::GrantAuditorRequest {
                    account_id: account.clone(),
                })
                .await
                .context("granting")?;
            println!("{account} is now an auditor");
            Ok(())
        }
        Command::Revoke { account } => {
            let mut admin = xeno_clients::corp_admin::connect(&config.admin_socket()).await?;
            let response = admin
                .revoke(pb::RevokeRequest {
                    account_id: account.clone(),
                })
                .await
                .context("revoking")?;
            println!(
                "revoked {account}: certificates {}",
                response.into_inner().revoked_serials.join(", ")
            );
            Ok(())
        }
        Command::Deposit {
            account,
            amount,
            currency,
        } => {
            let minor = parse_major_amount(&amount)
                .with_context(|| format!("{amount:?} is not an amount like 25.00"))?;
            let mut admin = xeno_clients::corp_admin::connect(&config.admin_socket()).await?;
            let response = admin
                .deposit(pb::DepositRequest {
                    account_id: account.clone(),
                    amount: Some(Money {
                        currency,
                        amount_minor: minor,
                    }),
                })
                .await
                .context("depositing")?;
            let available = response.into_inner().available.unwrap_or_default();
            println!(
                "{account}: available {} {}",
                xeno_schemas::documents::format_minor(available.amount_minor),
                available.currency
            );
            Ok(())
        }
        Command::Check => {
            let mut admin = xeno_clients::corp_admin::connect(&config.admin_socket()).await?;
            let report = admin
                .check_invariants(pb::CheckInvariantsRequest {})
                .await
                .context("checking")?
                .into_inner();
            println!(
                "{} accounts, {} orders, {} charges, {} transfers",
                report.accounts, report.orders, report.charges, report.transfers
            );
            if report.violations.is_empty() {
                println!("all invariants hold");
                Ok(())
            } else {
                for violation in &report.violations {
                    println!("VIOLATION: {violation}");
                }
                std::process::exit(1);
            }
        }
        Command::ShowConfig => {
            println!("{config:#?}");
            Ok(())
        }
    }
}
