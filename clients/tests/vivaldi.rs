//! Vivaldi's accuracy on a latency matrix. No published round-trip data set ships as a package
//! here, so the matrix is generated the way such data behaves: 200 hosts on the Earth in six
//! regional clusters, round trips from great-circle distance at two thirds of light speed with
//! 30% path inflation, plus each host's access-link latency (1 to 20 ms, what heights model),
//! and every measurement off by up to ±10%. Target: median relative error at most 15%.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use xeno_clients::vivaldi::{Coordinates, VivaldiConfig, VivaldiNode, median_relative_error};

const HOSTS: usize = 200;
const NEIGHBOURS: usize = 32;
const ROUNDS: usize = 400;
const EARTH_RADIUS_KM: f64 = 6371.0;
/// Round-trip ms per km of great-circle distance: there and back at 200 km/ms, inflated 30%.
const RTT_MS_PER_KM: f64 = 2.0 / 200.0 * 1.3;

struct Host {
    latitude: f64,
    longitude: f64,
    access_ms: f64,
}

fn hosts(rng: &mut StdRng) -> Vec<Host> {
    // Regional centres (lat, long): Europe, North America east and west, East Asia, South
    // America, Oceania.
    let centres = [
        (50.0, 5.0),
        (40.0, -75.0),
        (37.0, -120.0),
        (35.0, 135.0),
        (-23.0, -46.0),
        (-33.0, 151.0),
    ];
    (0..HOSTS)
        .map(|_| {
            let (lat, long) = centres[rng.random_range(0..centres.len())];
            Host {
                latitude: lat + rng.random_range(-8.0..8.0),
                longitude: long + rng.random_range(-12.0..12.0),
                access_ms: rng.random_range(1.0..20.0),
            }
        })
        .collect()
}

fn true_rtt(a: &Host, b: &Host) -> f64 {
    let (lat1, lat2) = (a.latitude.to_radians(), b.latitude.to_radians());
    let dlat = lat2 - lat1;
    let dlong = (b.longitude - a.longitude).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlong / 2.0).sin().powi(2);
    let km = 2.0 * EARTH_RADIUS_KM * h.sqrt().asin();
    km * RTT_MS_PER_KM + a.access_ms + b.access_ms
}

fn simulate(config: VivaldiConfig, seed: u64) -> f64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let hosts = hosts(&mut rng);
    let rtt = |i: usize, j: usize| true_rtt(&hosts[i], &hosts[j]);
    let neighbours: Vec<Vec<usize>> = (0..HOSTS)
        .map(|i| {
            let mut chosen = Vec::new();
            while chosen.len() < NEIGHBOURS {
                let j = rng.random_range(0..HOSTS);
                if j != i && !chosen.contains(&j) {
                    chosen.push(j);
                }
            }
            chosen
        })
        .collect();
    let mut nodes: Vec<VivaldiNode> = (0..HOSTS)
        .map(|i| VivaldiNode::new(config, i as u64 + 1))
        .collect();
    for _ in 0..ROUNDS {
        for i in 0..HOSTS {
            let j = neighbours[i][rng.random_range(0..NEIGHBOURS)];
            let measured = rtt(i, j) * rng.random_range(0.9..1.1);
            let (peer, peer_error) = (nodes[j].coordinates().clone(), nodes[j].error());
            nodes[i]
                .observe(&peer, peer_error, measured)
                .expect("usable sample");
        }
    }
    let coordinates: Vec<Coordinates> = nodes.iter().map(|n| n.coordinates().clone()).collect();
    median_relative_error(&coordinates, rtt)
}

#[test]
fn median_relative_error_is_at_most_15_percent() {
    let error = simulate(VivaldiConfig::default(), 7);
    println!(
        "Vivaldi, 3 dimensions + height, {HOSTS} hosts: median relative error {:.1}%",
        error * 100.0
    );
    assert!(error <= 0.15, "median relative error {error}");
}

#[test]
fn two_dimensions_and_a_height_are_enough() {
    let with_heights = simulate(
        VivaldiConfig {
            dimensions: 2,
            ..VivaldiConfig::default()
        },
        11,
    );
    println!(
        "Vivaldi, 2 dimensions + height: median relative error {:.1}%",
        with_heights * 100.0
    );
    assert!(with_heights <= 0.2, "{with_heights}");
}

#[test]
fn bad_measurements_are_refused_without_moving() {
    let mut node = VivaldiNode::new(VivaldiConfig::default(), 3);
    let peer = Coordinates::origin(3, 0.1);
    for rtt in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
        assert!(node.observe(&peer, 0.5, rtt).is_err(), "{rtt}");
    }
    assert!(
        node.observe(&Coordinates::origin(2, 0.1), 0.5, 10.0)
            .is_err()
    );
    assert_eq!(node.coordinates(), &Coordinates::origin(3, 0.1));
    assert_eq!(node.error(), 1.0);
}
