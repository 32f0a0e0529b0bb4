//! What this server says about itself: the signed `ServerAdvertisement` (for the XIS and for
//! status queries) and the status answer.

use crate::server::Server;
use serde::Deserialize;
use std::collections::BTreeMap;
use xeno_schemas::documents::{
    Environment, Load, Location, NetworkCoordinates, NetworkPath, ServerAdvertisement,
};
use xeno_schemas::proto::server::v1 as pb;
use xeno_schemas::schema::types::Decimal;
use xeno_schemas::signing::SigningKey;

/// How long an advertisement is to be believed.
pub const ADVERTISEMENT_LIFETIME_SECONDS: i64 = 120;

/// `[advertisement]`: what the operator says about this server beyond what it measures:
/// where it is, its network paths, and free-form tokens. All optional; what is set is
/// published in every advertisement and can be looked up in the XIS (`Country=GB`,
/// `gpu=a100`) and used by resource discovery (location in suggestions, paths for the
/// `disjoint` objective).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdvertisedSettings {
    /// ISO 3166 two-letter country code, e.g. `"GB"`.
    pub country: Option<String>,
    /// Region or state.
    pub region: Option<String>,
    /// City.
    pub city: Option<String>,
    /// Latitude in degrees (-90 to 90).
    pub latitude: Option<f64>,
    /// Longitude in degrees (-180 to 180).
    pub longitude: Option<f64>,
    /// The routers on this server's paths toward the hosts or networks its clients are in,
    /// nearest first (`[[advertisement.paths]]` with `toward` and `hops`): two servers whose
    /// paths toward a host share no hop are `disjoint` for it.
    pub paths: Vec<PathSetting>,
    /// Extension tokens, name to value (`tokens = { gpu = "a100", rack = "7" }`).
    pub tokens: BTreeMap<String, String>,
}

/// One `[[advertisement.paths]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSetting {
    /// The destination host or network.
    pub toward: String,
    /// Hops, nearest first.
    pub hops: Vec<String>,
}

/// Degrees as the advertisement writes them: six decimal places (about 0.1 m).
fn degrees(value: Option<f64>) -> Option<Decimal> {
    value.map(|degrees| Decimal {
        mantissa: (degrees * 1e6).round() as i128,
        scale: 6,
    })
}

impl AdvertisedSettings {
    fn location(&self) -> Option<Location> {
        let location = Location {
            country: self.country.clone(),
            region: self.region.clone(),
            city: self.city.clone(),
            latitude: degrees(self.latitude),
            longitude: degrees(self.longitude),
        };
        (location != Location::default()).then_some(location)
    }

    fn paths(&self) -> Vec<NetworkPath> {
        self.paths
            .iter()
            .map(|path| NetworkPath {
                toward: path.toward.clone(),
                hops: path.hops.clone(),
            })
            .collect()
    }

    fn tokens(&self) -> Vec<(String, String)> {
        self.tokens
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }

    /// Checks the settings the way the XIS will: as part of a complete advertisement,
    /// against the schema, so that a bad setting fails at start with the element it breaks.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, value, limit) in [
            ("latitude", self.latitude, 90.0),
            ("longitude", self.longitude, 180.0),
        ] {
            if let Some(value) = value {
                anyhow::ensure!(
                    value.is_finite() && value.abs() <= limit,
                    "advertisement.{name} must be between -{limit} and {limit}, not {value}"
                );
            }
        }
        let now = time::OffsetDateTime::now_utc();
        let sample = ServerAdvertisement {
            server_id: "0".repeat(64),
            version: 1,
            issued_at: now,
            expires_at: now + time::Duration::seconds(ADVERTISEMENT_LIFETIME_SECONDS),
            endpoint: "127.0.0.1:1".to_owned(),
            // Placeholders for what the server fills in itself, so that only these settings
            // can fail.
            corps: vec!["corp".to_owned()],
            location: self.location(),
            load: None,
            environments: vec![Environment {
                env_type: "Wasm".to_owned(),
                versions: Vec::new(),
                images: Vec::new(),
            }],
            price_sheets: Vec::new(),
            coordinates: None,
            paths: self.paths(),
            tokens: self.tokens(),
            signature: None,
        };
        use xeno_schemas::Document;
        let parsed = ServerAdvertisement::parse(sample.to_xml().as_bytes())
            .map_err(|error| anyhow::anyhow!("[advertisement] settings: {error}"))?;
        xeno_schemas::documents::tokens::extract(&parsed)
            .map_err(|error| anyhow::anyhow!("[advertisement] tokens: {error}"))?;
        Ok(())
    }
}

/// The host's one-minute load average and, from it, an estimate of CPU utilisation (the
/// load spread over the host's cores, at most 100%), from `/proc/loadavg`.
fn host_load() -> (Option<Decimal>, Option<Decimal>) {
    let Some(load) = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok())
    else {
        return (None, None);
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64;
    let percent = (load / cores * 100.0).min(100.0);
    let hundredths = |value: f64| Decimal {
        mantissa: (value * 100.0).round() as i128,
        scale: 2,
    };
    (Some(hundredths(load)), Some(hundredths(percent)))
}

/// This server's advertisement now, signed with its key; `version` must increase with every
/// one published.
pub fn advertisement(
    server: &Server,
    key: &SigningKey,
    version: u64,
) -> anyhow::Result<ServerAdvertisement> {
    advertisement_with(server, key, version, None)
}

/// The same with the network coordinates the server has computed (see `discovery`).
pub fn advertisement_with(
    server: &Server,
    key: &SigningKey,
    version: u64,
    coordinates: Option<NetworkCoordinates>,
) -> anyhow::Result<ServerAdvertisement> {
    let (cpu_free, memory_free, net_free, sessions) = server.free();
    let (load_average, cpu_utilisation_percent) = host_load();
    let advertised = &server.config.advertisement;
    let now = time::OffsetDateTime::now_utc();
    let mut environments: Vec<Environment> = server
        .managers
        .iter()
        .map(|(env_type, manager)| Environment {
            env_type: env_type.clone(),
            versions: manager.capabilities.versions.clone(),
            images: manager
                .capabilities
                .images
                .iter()
                .map(|image| image.name.clone())
                .collect(),
        })
        .collect();
    environments.sort_by(|a, b| a.env_type.cmp(&b.env_type));
    let mut advertisement = ServerAdvertisement {
        server_id: key.fingerprint(),
        version,
        issued_at: now,
        expires_at: now + time::Duration::seconds(ADVERTISEMENT_LIFETIME_SECONDS),
        endpoint: server.config.endpoint(),
        corps: server
            .config
            .corps
            .iter()
            .map(|corp| corp.id.clone())
            .collect(),
        location: advertised.location(),
        load: Some(Load {
            cpu_utilisation_percent,
            load_average,
            connected_clients: None,
            sessions: Some(u64::from(sessions)),
            available_cpu_msps: Some(cpu_free),
            available_memory_mb: Some(memory_free),
            bandwidth_kbps: Some(server.config.capacity.net_kbps),
            available_kbps: Some(net_free),
        }),
        environments,
        price_sheets: vec![server.prices.advertised()],
        coordinates,
        paths: advertised.paths(),
        tokens: advertised.tokens(),
        signature: None,
    };
    advertisement.signature = Some(key.sign(&advertisement.signed_bytes())?);
    Ok(advertisement)
}

/// The answer to QueryXenoServerStatus.
pub fn status(
    server: &Server,
    key: &SigningKey,
    certificate_pem: &str,
    version: u64,
) -> pb::QueryStatusResponse {
    use xeno_schemas::Document;
    let (cpu_free, memory_free, net_free, _) = server.free();
    let capacity = &server.config.capacity;
    let environments = server
        .managers
        .iter()
        .map(|(env_type, manager)| pb::EnvironmentStatus {
            env_type: env_type.clone(),
            versions: manager.capabilities.versions.clone(),
            sessions: server.sessions_of_type(env_type),
            accepting: cpu_free >= server.config.defaults.cpu_msps
                && memory_free >= server.config.defaults.memory_mb,
        })
        .collect();
    pb::QueryStatusResponse {
        server_id: key.fingerprint(),
        certificate_pem: certificate_pem.to_owned(),
        corps: server
            .config
            .corps
            .iter()
            .map(|corp| corp.id.clone())
            .collect(),
        environments,
        cpu_msps_total: capacity.cpu_msps,
        cpu_msps_free: cpu_free,
        memory_mb_total: capacity.memory_mb,
        memory_mb_free: memory_free,
        net_kbps_total: capacity.net_kbps,
        net_kbps_free: net_free,
        advertisement_xml: advertisement(server, key, version)
            .map(|a| a.to_xml())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> AdvertisedSettings {
        toml::from_str(text).expect("toml")
    }

    #[test]
    fn settings_are_checked_as_the_xis_will_check_them() {
        let good = settings(
            "country = \"GB\"\ncity = \"Cambridge\"\nlatitude = 52.2053\nlongitude = 0.1218\n\
             tokens = { gpu = \"a100\" }\n[[paths]]\ntoward = \"net-a\"\nhops = [\"r1\", \"r2\"]\n",
        );
        good.validate().expect("valid settings");
        let location = good.location().expect("a location");
        assert_eq!(location.latitude.map(Decimal::to_f64), Some(52.2053));
        assert_eq!(good.paths()[0].hops, ["r1", "r2"]);

        let error = settings("latitude = 91.0")
            .validate()
            .expect_err("latitude");
        assert!(
            error.to_string().contains("advertisement.latitude"),
            "{error}"
        );
        let error = settings("country = \"Great Britain\"")
            .validate()
            .expect_err("country code");
        assert!(error.to_string().contains("Country"), "{error}");
        let error = settings("tokens = { \"two words\" = \"x\" }")
            .validate()
            .expect_err("token name");
        assert!(error.to_string().contains("Token"), "{error}");
        let error = settings("tokens = { Country = \"GB\" }")
            .validate()
            .expect_err("reserved token");
        assert!(error.to_string().contains("reserved"), "{error}");
    }
}
