//! A client's (or server operator's) profile: the credentials a corp issued and where that corp
//! is, kept in one directory (`--profile`, default `~/.xeno/default`). The private key is
//! generated here and never leaves it.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use xeno_clients::transport::Credentials;
use xeno_schemas::signing::{SigningKey, pem_to_der};

const PROFILE_FILE: &str = "profile.toml";
const KEY_FILE: &str = "key.pem";
const CERTIFICATE_FILE: &str = "cert.pem";
const CORP_CA_FILE: &str = "corp-ca.pem";

/// What `profile.toml` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileFile {
    /// The corp's gRPC address (host:port).
    pub corp: String,
    /// The account (or server) id the corp issued.
    pub account_id: String,
    /// `client` or `server`.
    pub role: String,
}

/// A loaded profile.
pub struct Profile {
    /// Its directory.
    pub dir: PathBuf,
    /// Its settings.
    pub file: ProfileFile,
    /// The corp's CA certificate, PEM.
    pub corp_ca_pem: String,
    /// Our certificate and key.
    pub credentials: Credentials,
}

/// The profile directory: `--profile`, or `$XENO_PROFILE`, or `~/.xeno/default`.
pub fn directory(flag: Option<&Path>) -> PathBuf {
    if let Some(dir) = flag {
        return dir.to_owned();
    }
    if let Some(dir) = std::env::var_os("XENO_PROFILE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".xeno").join("default")
}

fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (register first: `xeno register`)",
            path.display()
        )
    })
}

impl Profile {
    /// Loads the profile in `dir`.
    pub fn load(dir: &Path) -> Result<Profile> {
        let file: ProfileFile = toml::from_str(&read(dir, PROFILE_FILE)?)
            .with_context(|| format!("parsing {}", dir.join(PROFILE_FILE).display()))?;
        Ok(Profile {
            dir: dir.to_owned(),
            file,
            corp_ca_pem: read(dir, CORP_CA_FILE)?,
            credentials: Credentials {
                certificate_pem: read(dir, CERTIFICATE_FILE)?,
                key_pem: read(dir, KEY_FILE)?,
            },
        })
    }

    /// The key that signs purchase orders.
    pub fn signing_key(&self) -> Result<SigningKey> {
        let der = pem_to_der(&self.credentials.key_pem, "PRIVATE KEY")
            .context("the profile's key is not PKCS#8 PEM")?;
        SigningKey::from_pkcs8_der(&der).context("loading the profile's key")
    }

    /// Points the profile at the corp's current address (saved).
    pub fn move_corp(&mut self, address: &str) -> Result<()> {
        self.file.corp = address.to_owned();
        std::fs::write(self.dir.join(PROFILE_FILE), toml::to_string(&self.file)?)
            .context("updating the profile")
    }

    /// Where orders are kept by default.
    pub fn orders_dir(&self) -> PathBuf {
        self.dir.join("orders")
    }
}

/// Writes a new profile (refusing to overwrite an existing one).
pub fn create(
    dir: &Path,
    file: &ProfileFile,
    key_pem: &str,
    certificate_pem: &str,
    corp_ca_pem: &str,
) -> Result<()> {
    if dir.join(PROFILE_FILE).exists() {
        anyhow::bail!(
            "{} already holds a profile; choose another with --profile",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_private(&dir.join(KEY_FILE), key_pem)?;
    std::fs::write(dir.join(CERTIFICATE_FILE), certificate_pem)?;
    std::fs::write(dir.join(CORP_CA_FILE), corp_ca_pem)?;
    std::fs::write(dir.join(PROFILE_FILE), toml::to_string(file)?)?;
    Ok(())
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
