//! Generated populations of XenoServers for tests, benchmarks and `xeno dev`: placed on the
//! Earth in regional clusters, with advertised Vivaldi coordinates that embed their round
//! trips (what converged coordinates look like), varied environments, load and prices in GBP
//! or EUR, and measured paths toward [`DISJOINT_HOST`] through a multi-homed topology.
//!
//! Round trips between two places: great-circle distance at 200 km/ms, there and back, with
//! 30% path inflation, plus both access links. Coordinates are the points on a sphere whose
//! chords are those round trips, and the access link is the height.
//!
//! Paths toward the host: access router, a regional router of one of four providers, the
//! provider's core, its edge, then one of the host's two upstream routers (providers 1 and 2
//! reach it through `up-a`, 3 and 4 through `up-b`). Two servers' paths share no link exactly
//! when their providers reach the host through different upstream routers.

use super::SimulatedServer;
use crate::vivaldi::Coordinates;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use xeno_schemas::documents::{
    Environment, Load, Location, NetworkPath, PriceSheet, ServerAdvertisement,
};
use xeno_schemas::schema::Decimal;

/// The root file system image simulated Linux servers on the 6.1 line offer.
pub const DEBIAN_IMAGE: &str = "debian-12-python";

/// The host the generated paths lead toward (the paper's example address).
pub const DISJOINT_HOST: &str = "128.232.8.50";
/// Round-trip ms per km of great-circle distance.
pub const RTT_MS_PER_KM: f64 = 2.0 / 200.0 * 1.3;
const EARTH_RADIUS_KM: f64 = 6371.0;

/// Regional centres (name, latitude, longitude, country).
pub const REGIONS: [(&str, f64, f64, &str); 6] = [
    ("europe", 50.0, 5.0, "GB"),
    ("us-east", 40.0, -75.0, "US"),
    ("us-west", 37.0, -120.0, "US"),
    ("east-asia", 35.0, 135.0, "JP"),
    ("south-america", -23.0, -46.0, "BR"),
    ("oceania", -33.0, 151.0, "AU"),
];

/// A place on the Earth with an access link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Place {
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
    /// Access-link round trip, ms.
    pub access_ms: f64,
}

impl Place {
    /// The true round trip between two places, ms.
    pub fn rtt_ms(&self, other: &Place) -> f64 {
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = lat2 - lat1;
        let dlong = (other.longitude - self.longitude).to_radians();
        let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlong / 2.0).sin().powi(2);
        let km = 2.0 * EARTH_RADIUS_KM * h.sqrt().asin();
        km * RTT_MS_PER_KM + self.access_ms + other.access_ms
    }

    /// Coordinates whose distances approximate the round trips (chords for arcs).
    pub fn coordinates(&self) -> Coordinates {
        let (lat, long) = (self.latitude.to_radians(), self.longitude.to_radians());
        let radius = EARTH_RADIUS_KM * RTT_MS_PER_KM;
        Coordinates {
            components: vec![
                radius * lat.cos() * long.cos(),
                radius * lat.cos() * long.sin(),
                radius * lat.sin(),
            ],
            height: self.access_ms,
        }
    }
}

/// One generated server: its identity, where it is, and its advertisement content (version 0,
/// unsigned: set the version and sign with [`SimulatedServer::sign`]).
pub struct GeneratedServer {
    /// Key and id.
    pub server: SimulatedServer,
    /// Where it is.
    pub place: Place,
    /// Which of the four providers carries its traffic (1 to 4).
    pub provider: u8,
    /// Its advertisement, unsigned.
    pub advertisement: ServerAdvertisement,
}

fn decimal(value: f64, scale: u8) -> Decimal {
    #[allow(clippy::cast_possible_truncation)] // Generated values are small.
    let mantissa = (value * 10f64.powi(i32::from(scale))).round() as i128;
    Decimal { mantissa, scale }
}

/// `count` servers, the same for the same `seed`.
pub fn generate(count: usize, seed: u64) -> Vec<GeneratedServer> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count).map(|index| one(&mut rng, index)).collect()
}

fn one(rng: &mut StdRng, index: usize) -> GeneratedServer {
    let server = SimulatedServer::generate();
    let region = rng.random_range(0..REGIONS.len());
    let (region_name, lat, long, country) = REGIONS[region];
    let place = Place {
        latitude: lat + rng.random_range(-8.0..8.0),
        longitude: long + rng.random_range(-12.0..12.0),
        access_ms: rng.random_range(1.0..20.0),
    };
    let provider: u8 = rng.random_range(1..=4);
    let mut advertisement = server.advertisement(0);
    advertisement.endpoint = format!("xs{index}.{region_name}.example.net:7443");
    advertisement.location = Some(Location {
        country: Some(country.to_owned()),
        region: Some(region_name.to_owned()),
        city: None,
        latitude: Some(decimal(place.latitude, 4)),
        longitude: Some(decimal(place.longitude, 4)),
    });
    advertisement.load = Some(Load {
        cpu_utilisation_percent: Some(decimal(rng.random_range(0.0..100.0), 2)),
        available_cpu_msps: Some(rng.random_range(0..=16u64) * 250),
        available_memory_mb: Some(rng.random_range(1..=64u64) * 512),
        available_kbps: Some(rng.random_range(1..=100u64) * 10_000),
        ..Load::default()
    });
    let mut environments = Vec::new();
    if rng.random_bool(0.7) {
        environments.push(Environment {
            env_type: "Wasm".to_owned(),
            versions: vec!["48.0.8".to_owned()],
            images: Vec::new(),
        });
    }
    if environments.is_empty() || rng.random_bool(0.5) {
        let kernel = if rng.random_bool(0.5) {
            "6.1"
        } else {
            "2.4.18"
        };
        // Servers on today's kernel line offer a Debian image; the paper's 2.4.18 ones none.
        // (No random draw, so the rest of the population is what it always was.)
        let images = if kernel == "6.1" {
            vec![DEBIAN_IMAGE.to_owned()]
        } else {
            Vec::new()
        };
        environments.push(Environment {
            env_type: "Linux".to_owned(),
            versions: vec![kernel.to_owned()],
            images,
        });
    }
    advertisement.environments = environments;
    let currency = if rng.random_bool(0.8) { "GBP" } else { "EUR" };
    advertisement.price_sheets = vec![PriceSheet {
        currency: currency.parse().unwrap_or_else(|_| unreachable!()),
        // 0.00001 to 0.0001 per CPU-second, and so on.
        cpu_second_pico: Some(rng.random_range(10_000_000..100_000_000)),
        memory_mb_second_pico: Some(rng.random_range(100..2_000)),
        network_gb_pico: Some(rng.random_range(10_000_000_000..100_000_000_000)),
        million_fuel_pico: None,
        session_start_pico: Some(rng.random_range(0..10_000_000_000)),
    }];
    let coordinates = place.coordinates();
    advertisement.coordinates = Some(coordinates.to_advertised(0.05));
    let upstream = if provider <= 2 { "up-a" } else { "up-b" };
    advertisement.paths = vec![NetworkPath {
        toward: DISJOINT_HOST.to_owned(),
        hops: vec![
            format!("access-{index}"),
            format!("{region_name}-p{provider}"),
            format!("p{provider}-core{}", region % 2),
            format!("p{provider}-edge"),
            upstream.to_owned(),
        ],
    }];
    GeneratedServer {
        server,
        place,
        provider,
        advertisement,
    }
}

impl GeneratedServer {
    /// The advertisement at `version`, signed, as compact XML.
    pub fn signed_xml(&self, version: u64) -> String {
        use xeno_schemas::documents::Document;
        let mut advertisement = self.advertisement.clone();
        let now = time::OffsetDateTime::now_utc();
        advertisement.version = version;
        advertisement.issued_at = now;
        advertisement.expires_at = now + time::Duration::seconds(120);
        self.server.sign(advertisement).to_canonical()
    }
}
