//! The `xenocorp` configuration file (TOML). Every field has a documented default, so an empty
//! file is a working configuration for a local corp. Validated once, by [`Config::validate`].

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use xeno_schemas::documents::Currency;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This corp's id; prefixes every id it issues. Default `corp-a`.
    pub corp_id: String,
    /// Where state lives: the CA key and certificate, the SQLite database, the admin socket.
    /// Default `./xenocorp-data`.
    pub data_dir: PathBuf,
    /// The gRPC (mutual TLS) listen address. Default `127.0.0.1:7100`.
    pub listen: SocketAddr,
    /// The HTTPS listen address of the registration form and account pages; `None` disables
    /// them. Default `127.0.0.1:7180`.
    pub web_listen: Option<SocketAddr>,
    /// Storage: `sqlite` (a file in the data directory) or a `postgres://` URL. Default `sqlite`.
    pub database: String,
    /// DNS names and IP addresses in the corp's own TLS certificate. Default
    /// `["localhost", "127.0.0.1", "::1"]`.
    pub tls_names: Vec<String>,
    /// Business rules.
    pub policy: Policy,
    /// Group commit tuning.
    pub commit: CommitConfig,
}

/// The corp's business rules: what distinguishes one corp from another (paper, section II-A.1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Currencies accepted for orders. Default `["GBP", "EUR", "USD"]`.
    pub currencies: Vec<String>,
    /// The corp's commission on what servers earn, in parts per million of the amount spent.
    /// Default 50,000 (5%).
    pub commission_ppm: u64,
    /// Order lifetime when the client asks for none, seconds. Default 86,400 (a day).
    pub order_lifetime_default_seconds: u64,
    /// Longest order lifetime granted, seconds. Default 2,592,000 (30 days).
    pub order_lifetime_max_seconds: u64,
    /// How long after an order's expiry its bound server may still charge for usage before it,
    /// seconds; until then the order's client cannot close it (the server's final charge must
    /// land), and after it the client may close it whether or not the server did. Default 300.
    pub charge_grace_seconds: u64,
    /// Whether orders carry the corp restriction that they be validated before work starts.
    /// Default true.
    pub must_validate: bool,
    /// Environment types orders may fund; empty means any. Default empty.
    pub env_types: Vec<String>,
    /// Credit granted to each new client account, in major units of `credit_currency`
    /// (for example `"100.00"`); `"0"` grants none and funds come only from deposits. Default `"0"`.
    pub initial_client_credit: String,
    /// Currency of `initial_client_credit`. Default `GBP`.
    pub credit_currency: String,
    /// Validity of issued certificates, days. Default 365.
    pub certificate_lifetime_days: u64,
}

/// Group commit: charges and other writes are applied in batches, one durable transaction per
/// batch, and acknowledged only after it commits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommitConfig {
    /// Most requests in one batch. Default 4,096.
    pub batch_max: usize,
    /// Most requests waiting for the writer; beyond it requests are refused with UNAVAILABLE
    /// rather than queued without bound. Default 65,536.
    pub queue_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            corp_id: "corp-a".to_owned(),
            data_dir: PathBuf::from("xenocorp-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            web_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7180))),
            database: "sqlite".to_owned(),
            tls_names: vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ],
            policy: Policy::default(),
            commit: CommitConfig::default(),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            currencies: vec!["GBP".to_owned(), "EUR".to_owned(), "USD".to_owned()],
            commission_ppm: 50_000,
            order_lifetime_default_seconds: 86_400,
            order_lifetime_max_seconds: 2_592_000,
            charge_grace_seconds: 300,
            must_validate: true,
            env_types: Vec::new(),
            initial_client_credit: "0".to_owned(),
            credit_currency: "GBP".to_owned(),
            certificate_lifetime_days: 365,
        }
    }
}

impl Default for CommitConfig {
    fn default() -> Self {
        CommitConfig {
            batch_max: 4096,
            queue_max: 65_536,
        }
    }
}

/// Most parts per million: 100%.
const PPM_MAX: u64 = 1_000_000;

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
        xeno_daemon::config::load(path)
    }

    /// Checks every field once, so that the daemon never meets a bad value later.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::{bail, ensure};
        ensure!(
            (xeno_schemas::documents::common::IDENTIFIER.matches)(&self.corp_id),
            "corp_id {:?} must be an identifier (a letter, then letters, digits, '_', '.' or '-')",
            self.corp_id
        );
        ensure!(
            self.database == "sqlite"
                || self.database.starts_with("postgres://")
                || self.database.starts_with("postgresql://"),
            "database must be \"sqlite\" or a postgres:// URL"
        );
        ensure!(
            !self.tls_names.is_empty(),
            "tls_names must name at least one host"
        );
        let policy = &self.policy;
        ensure!(
            !policy.currencies.is_empty(),
            "policy.currencies must not be empty"
        );
        for currency in policy
            .currencies
            .iter()
            .chain(std::iter::once(&policy.credit_currency))
        {
            if currency.parse::<Currency>().is_err() {
                bail!("currency {currency:?} is not a three-letter ISO 4217 code");
            }
        }
        ensure!(
            policy.commission_ppm <= PPM_MAX,
            "policy.commission_ppm must be at most 1000000 (100%)"
        );
        ensure!(
            0 < policy.order_lifetime_default_seconds
                && policy.order_lifetime_default_seconds <= policy.order_lifetime_max_seconds,
            "policy.order_lifetime_default_seconds must be positive and at most order_lifetime_max_seconds"
        );
        ensure!(
            policy.certificate_lifetime_days > 0,
            "policy.certificate_lifetime_days must be positive"
        );
        self.initial_credit_minor()?;
        ensure!(
            self.commit.batch_max > 0 && self.commit.queue_max >= self.commit.batch_max,
            "commit.queue_max must be at least commit.batch_max, which must be positive"
        );
        Ok(())
    }

    /// `policy.initial_client_credit` in minor units.
    pub fn initial_credit_minor(&self) -> anyhow::Result<u64> {
        parse_major_amount(&self.policy.initial_client_credit).ok_or_else(|| {
            anyhow::anyhow!(
                "policy.initial_client_credit {:?} is not an amount like 100.00",
                self.policy.initial_client_credit
            )
        })
    }

    /// The SQLite database file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("ledger.sqlite")
    }

    /// The operator's admin socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.data_dir.join("admin.sock")
    }
}

/// Parses an amount in major units (`"10.50"`) into minor units, exactly.
pub use xeno_schemas::documents::common::parse_major_amount;

impl xeno_daemon::DaemonConfig for Config {
    fn check(&self) -> anyhow::Result<()> {
        self.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_a_valid_configuration() {
        let config: Config = toml::from_str("").expect("defaults");
        config.validate().expect("valid");
        assert_eq!(config.policy.commission_ppm, 50_000);
    }

    #[test]
    fn bad_values_are_named() {
        let config: Config = toml::from_str("[policy]\ncommission_ppm = 2000000").expect("parses");
        assert!(
            config
                .validate()
                .expect_err("invalid")
                .to_string()
                .contains("commission_ppm")
        );
        let error = toml::from_str::<Config>("listen_port = 1").expect_err("unknown field");
        assert!(error.to_string().contains("listen_port"));
        assert_eq!(parse_major_amount("10.5"), Some(10_500_000));
        assert_eq!(parse_major_amount("ten"), None);
    }
}
