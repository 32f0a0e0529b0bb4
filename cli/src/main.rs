//! `xeno`: the XenoServer Open Platform's command-line client.
//!
//! Exit codes, for scripts: 0 success; 1 the operation ran and said no (an invalid document, a
//! refused request); 2 bad usage or an I/O problem before anything was attempted.

mod schema;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "xeno",
    version,
    about = "Client for the XenoServer Open Platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with the platform's XML documents.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Schema(command) => schema::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xeno: {error:#}");
            ExitCode::from(2)
        }
    }
}
