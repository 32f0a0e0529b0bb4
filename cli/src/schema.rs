//! `xeno schema`: validate documents, and write the XSD files.

use anyhow::{Context, Result};
use clap::Subcommand;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use xeno_schemas::documents::{ALL_SCHEMAS, AnyDocument, parse_any};
use xeno_schemas::schema::xsd;

#[derive(Subcommand)]
pub enum SchemaCommand {
    /// Validate documents of any platform type: prints `FILE: ok` for each valid file and every
    /// problem (element path, message, line:column) for each invalid one. Exits 1 if any file
    /// is invalid.
    Validate {
        /// The files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write the XSD of every document type, generated from the document model.
    Xsd {
        /// Directory to write into.
        #[arg(long, default_value = "schemas/xsd")]
        dir: PathBuf,
    },
}

pub fn run(command: SchemaCommand) -> Result<ExitCode> {
    match command {
        SchemaCommand::Validate { files } => validate(&files),
        SchemaCommand::Xsd { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for schema in ALL_SCHEMAS {
                let path = dir.join(schema.xsd_file);
                std::fs::write(&path, xsd::generate(schema))
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads at most one byte more than the largest document any type accepts, so that a huge
/// file is refused by size without being read whole.
fn read_capped(path: &Path) -> Result<Vec<u8>> {
    let cap = ALL_SCHEMAS
        .iter()
        .map(|schema| schema.limits.document_bytes_max)
        .max()
        .unwrap_or(0)
        + 1;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(u64::try_from(cap)?)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

fn kind(document: &AnyDocument) -> &'static str {
    match document {
        AnyDocument::EnvironmentalRequirements(_) => "EnvironmentalRequirements",
        AnyDocument::TaskDescription(_) => "TaskDescription",
        AnyDocument::ServerAdvertisement(_) => "ServerAdvertisement",
        AnyDocument::PurchaseOrder(_) => "PurchaseOrder",
        AnyDocument::UsageRecord(_) => "UsageRecord",
    }
}

fn validate(files: &[PathBuf]) -> Result<ExitCode> {
    let mut all_valid = true;
    for path in files {
        let bytes = read_capped(path)?;
        match parse_any(&bytes) {
            Ok(document) => println!("{}: ok ({})", path.display(), kind(&document)),
            Err(errors) => {
                all_valid = false;
                for error in &errors.errors {
                    println!("{}: {error}", path.display());
                }
            }
        }
    }
    Ok(if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
