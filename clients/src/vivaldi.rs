//! Vivaldi network coordinates with height vectors (Dabek, Cox, Kaashoek and Morris, "Vivaldi:
//! A Decentralized Network Coordinate System", SIGCOMM 2004), for every XenoServer to compute
//! its own coordinates from round trips it measures to peers and advertise them
//! (`NetworkCoordinates` in the `ServerAdvertisement`). The distance between two servers'
//! coordinates then estimates their round-trip time without anyone measuring it, which is what
//! the resource discovery objectives `near` and `equidistant` rank by.
//!
//! A coordinate is a Euclidean vector plus a *height*: the latency of the node's access link,
//! which every path to it crosses. `distance = ‖x_a − x_b‖ + h_a + h_b` (all in ms). Each
//! measurement moves the node along the spring between it and the peer, weighted by how
//! confident the two are (their error estimates), with the adaptive timestep `δ = c_c·w`.
//!
//! ```
//! use xeno_clients::vivaldi::{VivaldiConfig, VivaldiNode};
//! let config = VivaldiConfig::default();
//! let mut a = VivaldiNode::new(config, 1);
//! let mut b = VivaldiNode::new(config, 2);
//! for _ in 0..200 {
//!     let (ca, ea) = (a.coordinates().clone(), a.error());
//!     a.observe(b.coordinates(), b.error(), 80.0).unwrap();
//!     b.observe(&ca, ea, 80.0).unwrap();
//! }
//! let estimate = a.coordinates().distance_ms(b.coordinates());
//! assert!((estimate - 80.0).abs() < 8.0, "{estimate}");
//! // What the server advertises:
//! let advertised = a.coordinates().to_advertised(a.error());
//! assert_eq!(advertised.components.len(), 3);
//! ```

use xeno_schemas::documents::NetworkCoordinates;
use xeno_schemas::schema::Decimal;

/// Largest error estimate kept: 1 means no confidence at all; a little above leaves room for
/// a bad start to be recognised.
pub const ERROR_MAX: f64 = 1.5;
/// Longest round trip accepted, ms: anything longer is a measurement fault (or a timeout).
pub const RTT_MAX_MS: f64 = 60_000.0;
/// Largest coordinate component written to an advertisement, ms (the schema allows six
/// integer digits).
pub const COMPONENT_MAX_MS: f64 = 999_999.0;

/// Tuning. The defaults are the paper's (`c_e = c_c = 0.25`) with three dimensions plus height,
/// which its measurements found as accurate as five plain dimensions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VivaldiConfig {
    /// Euclidean dimensions, 2 to 8 (what an advertisement can carry).
    pub dimensions: usize,
    /// Weight of a new sample in the error estimate (`c_e`).
    pub error_gain: f64,
    /// Timestep scale (`c_c`).
    pub step_gain: f64,
    /// Smallest height, ms: every host has some access latency, and a zero height cannot grow.
    pub height_min_ms: f64,
}

impl Default for VivaldiConfig {
    fn default() -> Self {
        VivaldiConfig {
            dimensions: 3,
            error_gain: 0.25,
            step_gain: 0.25,
            height_min_ms: 0.1,
        }
    }
}

/// A point in the coordinate space.
#[derive(Debug, Clone, PartialEq)]
pub struct Coordinates {
    /// The Euclidean part, ms.
    pub components: Vec<f64>,
    /// The height, ms.
    pub height: f64,
}

impl Coordinates {
    /// The origin of a space of `dimensions`, with the smallest height.
    pub fn origin(dimensions: usize, height_min_ms: f64) -> Coordinates {
        Coordinates {
            components: vec![0.0; dimensions],
            height: height_min_ms,
        }
    }

    /// The estimated round trip between two coordinates, ms. Coordinates of different
    /// dimensions compare over the dimensions they share.
    pub fn distance_ms(&self, other: &Coordinates) -> f64 {
        self.euclidean_ms(other) + self.height + other.height
    }

    fn euclidean_ms(&self, other: &Coordinates) -> f64 {
        self.components
            .iter()
            .zip(&other.components)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt()
    }

    /// Reads advertised coordinates (a missing height is zero).
    pub fn from_advertised(advertised: &NetworkCoordinates) -> Coordinates {
        Coordinates {
            components: advertised.components.iter().map(|c| c.to_f64()).collect(),
            height: advertised.height.map_or(0.0, Decimal::to_f64),
        }
    }

    /// The coordinates as an advertisement carries them (to the microsecond), with `error`.
    pub fn to_advertised(&self, error: f64) -> NetworkCoordinates {
        let micros = |value: f64| Decimal {
            #[allow(clippy::cast_possible_truncation)] // Clamped to the schema's range first.
            mantissa: (value.clamp(-COMPONENT_MAX_MS, COMPONENT_MAX_MS) * 1000.0).round() as i128,
            scale: 3,
        };
        NetworkCoordinates {
            components: self.components.iter().map(|c| micros(*c)).collect(),
            height: Some(micros(self.height.max(0.0))),
            error: Some(Decimal {
                #[allow(clippy::cast_possible_truncation)] // Clamped to [0, ERROR_MAX].
                mantissa: (error.clamp(0.0, ERROR_MAX) * 10_000.0).round() as i128,
                scale: 4,
            }),
        }
    }
}

/// Why a measurement was not used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VivaldiError {
    /// Not a usable round trip.
    #[error("round trip {0} ms is not a positive number below {RTT_MAX_MS} ms")]
    BadRtt(f64),
    /// The peer's coordinates have another number of dimensions, or are not finite.
    #[error("the peer's coordinates are unusable (dimensions {0}, or not finite)")]
    BadPeer(usize),
}

/// One node's Vivaldi state.
#[derive(Debug, Clone)]
pub struct VivaldiNode {
    config: VivaldiConfig,
    coordinates: Coordinates,
    error: f64,
    /// xorshift state, for the random direction that separates nodes at the same point.
    random: u64,
}

impl VivaldiNode {
    /// A node at the origin with no confidence; `seed` varies the random directions it takes
    /// when it sits exactly on a peer (give each node a different one).
    pub fn new(config: VivaldiConfig, seed: u64) -> VivaldiNode {
        let dimensions = config.dimensions.clamp(2, 8);
        VivaldiNode {
            config: VivaldiConfig {
                dimensions,
                ..config
            },
            coordinates: Coordinates::origin(dimensions, config.height_min_ms),
            error: 1.0,
            random: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// Current coordinates.
    pub fn coordinates(&self) -> &Coordinates {
        &self.coordinates
    }

    /// Current error estimate (relative; 0 is perfect, 1 no confidence).
    pub fn error(&self) -> f64 {
        self.error
    }

    fn random_unit(&mut self) -> f64 {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        #[allow(clippy::cast_precision_loss)]
        let unit = (self.random >> 11) as f64 / (1u64 << 53) as f64;
        unit * 2.0 - 1.0
    }

    /// Takes one measured round trip to a peer with coordinates `peer` and error `peer_error`.
    pub fn observe(
        &mut self,
        peer: &Coordinates,
        peer_error: f64,
        rtt_ms: f64,
    ) -> Result<(), VivaldiError> {
        if !(rtt_ms > 0.0 && rtt_ms < RTT_MAX_MS) {
            return Err(VivaldiError::BadRtt(rtt_ms));
        }
        if peer.components.len() != self.config.dimensions
            || !peer.height.is_finite()
            || peer.components.iter().any(|c| !c.is_finite())
        {
            return Err(VivaldiError::BadPeer(peer.components.len()));
        }
        let peer_error = peer_error.clamp(0.0, ERROR_MAX);
        let distance = self.coordinates.distance_ms(peer);
        let weight = if self.error + peer_error > 0.0 {
            self.error / (self.error + peer_error)
        } else {
            0.5
        };
        let sample_error = (distance - rtt_ms).abs() / rtt_ms;
        let gain = self.config.error_gain * weight;
        self.error = (sample_error * gain + self.error * (1.0 - gain)).clamp(0.0, ERROR_MAX);
        let force = self.config.step_gain * weight * (rtt_ms - distance);
        let mut direction: Vec<f64> = self
            .coordinates
            .components
            .iter()
            .zip(&peer.components)
            .map(|(mine, theirs)| mine - theirs)
            .collect();
        let euclidean = direction.iter().map(|d| d * d).sum::<f64>().sqrt();
        if euclidean < 1e-9 {
            // On top of the peer: push apart in a random direction.
            for component in &mut direction {
                *component = self.random_unit();
            }
            let norm = direction
                .iter()
                .map(|d| d * d)
                .sum::<f64>()
                .sqrt()
                .max(1e-9);
            for (component, d) in self.coordinates.components.iter_mut().zip(&direction) {
                *component += force * d / norm;
            }
        } else {
            // The height-vector unit: [x_a − x_b, h_a + h_b] / distance.
            let total = euclidean + self.coordinates.height + peer.height;
            for (component, d) in self.coordinates.components.iter_mut().zip(&direction) {
                *component += force * d / total;
            }
            self.coordinates.height += force * (self.coordinates.height + peer.height) / total;
        }
        self.coordinates.height = self.coordinates.height.max(self.config.height_min_ms);
        Ok(())
    }
}

/// The median relative error `|estimate − truth| / truth` over every pair of `coordinates`
/// whose true round trip `rtt(i, j)` is positive: how the accuracy of a coordinate system is
/// usually reported.
pub fn median_relative_error(
    coordinates: &[Coordinates],
    rtt: impl Fn(usize, usize) -> f64,
) -> f64 {
    let mut errors = Vec::new();
    for i in 0..coordinates.len() {
        for j in i + 1..coordinates.len() {
            let truth = rtt(i, j);
            if truth > 0.0 {
                errors.push((coordinates[i].distance_ms(&coordinates[j]) - truth).abs() / truth);
            }
        }
    }
    if errors.is_empty() {
        return 0.0;
    }
    errors.sort_by(f64::total_cmp);
    errors[errors.len() / 2]
}
/// The time to open a TCP connection to `endpoint` (`host:port`, with or without an
/// `http(s)://` scheme), in ms: one round trip, which is all Vivaldi needs and all that a
/// server's public port is sure to answer. `None` if it does not connect within `timeout`.
pub async fn connect_rtt_ms(endpoint: &str, timeout: std::time::Duration) -> Option<f64> {
    let address = endpoint
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let started = std::time::Instant::now();
    let connected = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await;
    match connected {
        Ok(Ok(_stream)) => Some(started.elapsed().as_secs_f64() * 1000.0),
        _ => None,
    }
}

/// A server to measure against: where its coordinates say it is, how sure it is, and where
/// to connect.
#[derive(Debug, Clone)]
pub struct Landmark {
    /// Its advertised coordinates.
    pub coordinates: Coordinates,
    /// Its advertised error estimate.
    pub error: f64,
    /// Its endpoint.
    pub endpoint: String,
}

/// Places this machine in the coordinate space, as a client that advertises nothing. First
/// one round trip to every candidate at once (at most [`CANDIDATES_MAX`]; many will not
/// answer, or answer slowly); the [`LANDMARKS_MAX`] that answered fastest become landmarks,
/// and `rounds` more passes over them feed a Vivaldi node that starts at the origin. Returns
/// the coordinates, their error estimate and how many round trips were used; `None` if no
/// candidate answered.
pub async fn locate(
    candidates: &[Landmark],
    rounds: usize,
    timeout: std::time::Duration,
) -> Option<(Coordinates, f64, usize)> {
    let config = VivaldiConfig {
        dimensions: candidates.first()?.coordinates.components.len(),
        ..VivaldiConfig::default()
    };
    let candidates = &candidates[..candidates.len().min(CANDIDATES_MAX)];
    let first = futures::future::join_all(
        candidates
            .iter()
            .map(|candidate| connect_rtt_ms(&candidate.endpoint, timeout)),
    )
    .await;
    let mut answered: Vec<(f64, &Landmark)> = first
        .into_iter()
        .zip(candidates)
        .filter_map(|(rtt, candidate)| Some((rtt?, candidate)))
        .collect();
    answered.sort_by(|a, b| a.0.total_cmp(&b.0));
    answered.truncate(LANDMARKS_MAX);
    let mut node = VivaldiNode::new(config, 0x5eed);
    let mut used = 0;
    let mut observe = |node: &mut VivaldiNode, landmark: &Landmark, rtt_ms: f64| {
        if node
            .observe(&landmark.coordinates, landmark.error, rtt_ms)
            .is_ok()
        {
            used += 1;
        }
    };
    for (rtt_ms, landmark) in &answered {
        observe(&mut node, landmark, *rtt_ms);
    }
    for _ in 0..rounds.min(ROUNDS_MAX) {
        for (_, landmark) in &answered {
            if let Some(rtt_ms) = connect_rtt_ms(&landmark.endpoint, timeout).await {
                observe(&mut node, landmark, rtt_ms);
            }
        }
    }
    (used > 0).then(|| (node.coordinates().clone(), node.error(), used))
}

/// Most candidates [`locate`] tries.
pub const CANDIDATES_MAX: usize = 256;
/// Most landmarks [`locate`] keeps measuring.
pub const LANDMARKS_MAX: usize = 32;
/// Most further passes [`locate`] makes over its landmarks.
pub const ROUNDS_MAX: usize = 16;
