//! `xenoserver`: run a XenoServer's environment manager, or build the root file system images
//! its Linux domains start from.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use xeno_taskmgr_vm::images;

#[derive(Parser)]
#[command(
    name = "xenoserver",
    version,
    about = "A XenoServer: sessions, tasks, metering and charging"
)]
struct Cli {
    /// Configuration file (TOML); needed to run the server.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Root file system images for Linux domains.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Builds an image from Debian packages and their dependencies, fetched through this
    /// machine's apt configuration, and prints the `[[linux.images]]` entry that offers it.
    Build {
        /// The image's name, as sessions ask for it (`EnvImage`).
        name: String,
        /// Debian packages, comma-separated (`python3,gcc,make`).
        #[arg(long, value_delimiter = ',', required = true)]
        packages: Vec<String>,
        /// Where images live.
        #[arg(long, default_value = xeno_taskmgr_vm::DEFAULT_IMAGES_DIR)]
        images_dir: PathBuf,
        /// Follow `Recommends` too, as `apt-get install` does by default.
        #[arg(long)]
        recommends: bool,
    },
    /// Rehashes every file of an image against its manifest.
    Verify {
        /// The image's name (only for messages).
        name: String,
        /// Its digest.
        digest: String,
        /// Where images live.
        #[arg(long, default_value = xeno_taskmgr_vm::DEFAULT_IMAGES_DIR)]
        images_dir: PathBuf,
    },
}

fn image(command: ImageCommand) -> Result<()> {
    match command {
        ImageCommand::Build {
            name,
            packages,
            images_dir,
            recommends,
        } => {
            let options = images::BuildOptions {
                name,
                packages,
                images_dir,
                recommends,
            };
            let built = images::build(&options, &mut |step| eprintln!("image build: {step}"))?;
            eprintln!(
                "image build: {} packages, {} entries, {} MB{}",
                built.packages.len(),
                built.entries,
                built.bytes / (1024 * 1024),
                if built.reused {
                    " (the same image was already there)"
                } else {
                    ""
                }
            );
            let entry = images::ImageEntry {
                name: built.name,
                digest: built.digest,
            };
            print!("{}", entry.to_toml());
            Ok(())
        }
        ImageCommand::Verify {
            name,
            digest,
            images_dir,
        } => {
            let entry = images::ImageEntry { name, digest };
            let image = images::open(&images_dir, &entry)?;
            images::verify(&image)?;
            println!(
                "image {} ({}): {} entries, {} bytes, as its manifest says",
                image.name, image.digest, image.entries, image.bytes
            );
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    xeno_daemon::init_tracing();
    let cli = Cli::parse();
    if let Some(Command::Image(command)) = cli.command {
        return tokio::task::spawn_blocking(move || image(command)).await?;
    }
    let path = cli
        .config
        .context("--config is needed to run the server (or give a subcommand: image)")?;
    let config = xeno_envmgr::config::Config::load(&path)?;
    let running = xeno_envmgr::daemon::start(config).await?;
    println!(
        "xenoserver {} grpc={}",
        running.server_id, running.grpc_addr
    );
    running
        .wait(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
