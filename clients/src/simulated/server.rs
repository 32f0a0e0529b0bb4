//! Simulated XenoServers for tests, benchmarks and `xeno dev`: a key pair, and signed
//! advertisements with whatever content the caller sets.
//!
//! ```
//! use xeno_clients::simulated::SimulatedServer;
//! let server = SimulatedServer::generate();
//! let xml = server.signed_xml(1, |advertisement| {
//!     advertisement.endpoint = "xs1.example.net:7443".to_owned();
//! });
//! assert!(xml.contains(&server.id));
//! ```

use time::{Duration, OffsetDateTime};
use xeno_schemas::documents::{
    Document, Environment, Load, Location, PriceSheet, ServerAdvertisement, SignatureAlgorithm,
};
use xeno_schemas::signing::SigningKey;

/// A server's identity.
pub struct SimulatedServer {
    /// Its key.
    pub key: SigningKey,
    /// Its id: the key's fingerprint.
    pub id: String,
}

impl SimulatedServer {
    /// A server with a fresh Ed25519 key.
    pub fn generate() -> SimulatedServer {
        // Ed25519 key generation only fails without system randomness.
        #[allow(clippy::expect_used)]
        let (key, _) =
            SigningKey::generate(SignatureAlgorithm::Ed25519).expect("system randomness");
        let id = key.fingerprint();
        SimulatedServer { key, id }
    }

    /// A plain advertisement of this server: Wasm, 1,000 CPU ms/s and 4 GB free, GBP prices,
    /// in GB, valid for two minutes from now.
    pub fn advertisement(&self, version: u64) -> ServerAdvertisement {
        let now = OffsetDateTime::now_utc();
        ServerAdvertisement {
            server_id: self.id.clone(),
            version,
            issued_at: now,
            expires_at: now + Duration::seconds(120),
            endpoint: format!("xs-{}.example.net:7443", &self.id[..8]),
            corps: vec!["corp-a".to_owned()],
            location: Some(Location {
                country: Some("GB".to_owned()),
                ..Location::default()
            }),
            load: Some(Load {
                available_cpu_msps: Some(1000),
                available_memory_mb: Some(4096),
                available_kbps: Some(100_000),
                ..Load::default()
            }),
            environments: vec![Environment {
                env_type: "Wasm".to_owned(),
                versions: vec!["48.0.8".to_owned()],
                images: Vec::new(),
            }],
            price_sheets: vec![PriceSheet {
                currency: "GBP".parse().unwrap_or_else(|_| unreachable!()),
                cpu_second_pico: Some(20_000_000),
                memory_mb_second_pico: Some(1_000),
                network_gb_pico: Some(50_000_000_000),
                million_fuel_pico: None,
                session_start_pico: Some(1_000_000_000),
            }],
            coordinates: None,
            paths: Vec::new(),
            tokens: Vec::new(),
            signature: None,
        }
    }

    /// Signs `advertisement` (whatever its ServerId says) with this server's key.
    pub fn sign(&self, mut advertisement: ServerAdvertisement) -> ServerAdvertisement {
        advertisement.signature = None;
        // Ed25519 signing does not fail.
        #[allow(clippy::expect_used)]
        let signature = self
            .key
            .sign(&advertisement.signed_bytes())
            .expect("ed25519 signs");
        advertisement.signature = Some(signature);
        advertisement
    }

    /// The plain advertisement at `version`, changed by `edit`, signed, as compact XML.
    pub fn signed_xml(&self, version: u64, edit: impl FnOnce(&mut ServerAdvertisement)) -> String {
        let mut advertisement = self.advertisement(version);
        edit(&mut advertisement);
        self.sign(advertisement).to_canonical()
    }
}
