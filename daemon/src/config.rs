//! A daemon's configuration: one TOML file, every field with a documented default, checked
//! once when it is read so that the daemon never meets a bad value later; and the command-line
//! arguments that name it.

use anyhow::Context;
use std::path::{Path, PathBuf};

/// A daemon's configuration type.
pub trait DaemonConfig: serde::de::DeserializeOwned + Default {
    /// Checks every field, naming the one at fault.
    fn check(&self) -> anyhow::Result<()>;
}

/// Reads and checks the configuration file at `path`.
pub fn load<C: DaemonConfig>(path: &Path) -> anyhow::Result<C> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: C = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    config
        .check()
        .with_context(|| format!("checking {}", path.display()))?;
    Ok(config)
}

/// The file at `path`, or the defaults (checked too) when there is none.
pub fn load_or_default<C: DaemonConfig>(path: Option<&Path>) -> anyhow::Result<C> {
    match path {
        Some(path) => load(path),
        None => {
            let config = C::default();
            config.check()?;
            Ok(config)
        }
    }
}

/// A certificate and key for serving TLS, as PEM files (the XIS's and RD's optional `[tls]`).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM file.
    pub certificate_file: PathBuf,
    /// Private key, PEM file.
    pub key_file: PathBuf,
}

impl TlsConfig {
    /// The server's TLS configuration, naming the file that cannot be read.
    pub fn server_config(&self) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
        let certificate = std::fs::read_to_string(&self.certificate_file)
            .with_context(|| format!("reading {}", self.certificate_file.display()))?;
        let key = std::fs::read_to_string(&self.key_file)
            .with_context(|| format!("reading {}", self.key_file.display()))?;
        Ok(tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(certificate, key)))
    }
}

/// The arguments every daemon takes.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Configuration file (TOML); defaults apply when absent.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print the configuration in effect (defaults filled in) and exit.
    #[arg(long)]
    pub show_config: bool,
}

impl DaemonArgs {
    /// The configuration to run with, or `None` when `--show-config` printed it instead.
    pub fn configuration<C: DaemonConfig + serde::Serialize>(&self) -> anyhow::Result<Option<C>> {
        let config: C = load_or_default(self.config.as_deref())?;
        if self.show_config {
            println!("{}", toml::to_string(&config)?);
            return Ok(None);
        }
        Ok(Some(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct Example {
        workers: u32,
    }

    impl DaemonConfig for Example {
        fn check(&self) -> anyhow::Result<()> {
            anyhow::ensure!(self.workers <= 8, "workers must be at most 8");
            Ok(())
        }
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_file_and_the_field() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("example.toml");
        std::fs::write(&path, "workers = 9\n").expect("written");
        let error = load::<Example>(&path).expect_err("refused");
        let text = format!("{error:#}");
        assert!(
            text.contains("example.toml") && text.contains("workers must be at most 8"),
            "{text}"
        );
        std::fs::write(&path, "wrokers = 1\n").expect("written");
        let error = format!("{:#}", load::<Example>(&path).expect_err("unknown field"));
        assert!(error.contains("wrokers"), "{error}");
    }

    #[test]
    fn no_file_means_the_defaults() {
        let config: Example = load_or_default(None).expect("defaults");
        assert_eq!(config.workers, 0);
    }
}
