//! The RD system's view of the servers: every current advertisement, read from the XIS (the
//! paper's "drawing out and caching this information toward the users"), parsed once into what
//! matching needs. Queries run on an immutable [`Snapshot`], swapped in after each sync, so
//! they never wait for one.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use xeno_clients::vivaldi::Coordinates;
use xeno_schemas::documents::{Environment, PriceSheet, ServerAdvertisement};

/// Most servers held: a bound on memory (about 10 KB each) well above the 100,000 the
/// benchmark uses.
pub const SERVERS_MAX: usize = 1_000_000;

/// What matching needs of one server.
#[derive(Debug)]
pub struct ServerView {
    /// Its id.
    pub id: String,
    /// Where clients reach it.
    pub endpoint: String,
    /// Its advertisement's version.
    pub version: u64,
    /// The advertisement as signed.
    pub xml: Arc<str>,
    /// When the XIS received it, on this system's clock (Unix ms); refreshed by each sync.
    pub received_ms: AtomicU64,
    /// Environments and versions.
    pub environments: Vec<Environment>,
    /// Free CPU, ms per second.
    pub available_cpu_msps: Option<u64>,
    /// Free memory, MB.
    pub available_memory_mb: Option<u64>,
    /// Free bandwidth, kbps.
    pub available_kbps: Option<u64>,
    /// CPU utilisation, percent.
    pub cpu_utilisation_percent: f64,
    /// Prices.
    pub price_sheets: Vec<PriceSheet>,
    /// Network coordinates and their error.
    pub coordinates: Option<(Coordinates, f64)>,
    /// Paths: destination, hop count, and the links (hashes of hop pairs), sorted.
    pub paths: Vec<(String, usize, Vec<u64>)>,
}

fn link(a: &str, b: &str) -> u64 {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    first.hash(&mut hasher);
    second.hash(&mut hasher);
    hasher.finish()
}

impl ServerView {
    /// The view of a parsed advertisement received `received_ms` (this system's clock).
    pub fn new(advertisement: ServerAdvertisement, xml: Arc<str>, received_ms: u64) -> ServerView {
        let load = advertisement.load.unwrap_or_default();
        let paths = advertisement
            .paths
            .iter()
            .map(|path| {
                let mut links: Vec<u64> = path
                    .hops
                    .windows(2)
                    .map(|pair| link(&pair[0], &pair[1]))
                    .collect();
                if let Some(last) = path.hops.last() {
                    links.push(link(last, &path.toward));
                }
                links.sort_unstable();
                links.dedup();
                (path.toward.clone(), path.hops.len(), links)
            })
            .collect();
        ServerView {
            id: advertisement.server_id,
            endpoint: advertisement.endpoint,
            version: advertisement.version,
            xml,
            received_ms: AtomicU64::new(received_ms),
            environments: advertisement.environments,
            available_cpu_msps: load.available_cpu_msps,
            available_memory_mb: load.available_memory_mb,
            available_kbps: load.available_kbps,
            cpu_utilisation_percent: load.cpu_utilisation_percent.map_or(0.0, |d| d.to_f64()),
            price_sheets: advertisement.price_sheets,
            coordinates: advertisement.coordinates.as_ref().map(|c| {
                (
                    Coordinates::from_advertised(c),
                    c.error.map_or(1.0, |e| e.to_f64()),
                )
            }),
            paths,
        }
    }

    /// When the XIS received it, on this system's clock (Unix ms).
    pub fn received_ms(&self) -> u64 {
        self.received_ms.load(Ordering::Relaxed)
    }

    /// The host part of the endpoint (`xs1.example.net` of `xs1.example.net:7443`).
    pub fn endpoint_host(&self) -> &str {
        let without_scheme = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, rest)| rest);
        match without_scheme.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => without_scheme,
        }
    }
}

/// Sorted link sets share nothing.
pub fn disjoint(a: &[u64], b: &[u64]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return false,
        }
    }
    true
}

/// Most interned names per kind (environment types, environment versions, currencies): the
/// bits of a mask. Servers with others are matched on their full view.
pub const INTERNED_MAX: usize = 64;

/// Prices of one sheet in the order of the `PriceSheet` (CPU-second, MB-second, network GB,
/// million fuel, session start), picounits; 0 where the sheet has none (free).
pub type Prices = [u64; 5];

/// What matching reads of one server, packed so that a query scans one contiguous array
/// instead of chasing each server's heap pointers (at 100,000 servers the pointer chase, not
/// the arithmetic, is what a query costs).
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// When the XIS received the record (this system's clock, Unix ms).
    pub received_ms: u64,
    /// Bit per interned environment type the server runs.
    pub env_mask: u64,
    /// Bit per interned (environment type, version) it offers.
    pub version_mask: u64,
    /// The server has names beyond the masks: match it on its full view.
    pub overflow: bool,
    /// Free CPU ms/s, memory MB, bandwidth kbps (`None`: not advertised).
    pub resources: [Option<u64>; 3],
    /// CPU utilisation, 0 to 1.
    pub utilisation: f32,
    /// Coordinate dimensions (0: none), components, height and error.
    pub dimensions: u8,
    /// The components.
    pub components: [f64; 8],
    /// The height.
    pub height: f64,
    /// The advertised error.
    pub coordinate_error: f32,
    /// Up to two price sheets (currency id, prices); more are in the view.
    pub sheets: [Option<(u8, Prices)>; 2],
}

/// Names interned into the masks of [`Row`].
#[derive(Debug, Default)]
pub struct Interned {
    /// Environment type → bit.
    pub env_types: HashMap<String, u8>,
    /// (environment type, version) → bit.
    pub versions: HashMap<(String, String), u8>,
    /// Currency code → id.
    pub currencies: HashMap<String, u8>,
}

fn intern<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u8>, key: K) -> Option<u8> {
    if let Some(bit) = map.get(&key) {
        return Some(*bit);
    }
    let next = map.len();
    (next < INTERNED_MAX).then(|| {
        let bit = u8::try_from(next).unwrap_or(u8::MAX);
        map.insert(key, bit);
        bit
    })
}

impl Interned {
    fn row(&mut self, view: &ServerView) -> Row {
        let mut overflow = false;
        let (mut env_mask, mut version_mask) = (0u64, 0u64);
        for environment in &view.environments {
            match intern(&mut self.env_types, environment.env_type.clone()) {
                Some(bit) => env_mask |= 1 << bit,
                None => overflow = true,
            }
            for version in &environment.versions {
                match intern(
                    &mut self.versions,
                    (environment.env_type.clone(), version.clone()),
                ) {
                    Some(bit) => version_mask |= 1 << bit,
                    None => overflow = true,
                }
            }
        }
        let mut sheets = [None, None];
        for (index, sheet) in view.price_sheets.iter().enumerate() {
            let currency = intern(&mut self.currencies, sheet.currency.as_str().to_owned());
            match (sheets.get_mut(index), currency) {
                (Some(slot), Some(id)) => {
                    *slot = Some((
                        id,
                        [
                            sheet.cpu_second_pico.unwrap_or(0),
                            sheet.memory_mb_second_pico.unwrap_or(0),
                            sheet.network_gb_pico.unwrap_or(0),
                            sheet.million_fuel_pico.unwrap_or(0),
                            sheet.session_start_pico.unwrap_or(0),
                        ],
                    ));
                }
                _ => overflow = true,
            }
        }
        let mut components = [0.0; 8];
        let (mut dimensions, mut height, mut coordinate_error) = (0u8, 0.0, 1.0f32);
        if let Some((coordinates, error)) = &view.coordinates {
            for (slot, value) in components.iter_mut().zip(&coordinates.components) {
                *slot = *value;
            }
            dimensions = u8::try_from(coordinates.components.len().min(8)).unwrap_or(8);
            height = coordinates.height;
            #[allow(clippy::cast_possible_truncation)] // An error estimate, 0 to ~1.5.
            {
                coordinate_error = *error as f32;
            }
        }
        #[allow(clippy::cast_possible_truncation)] // A percentage.
        let utilisation = (view.cpu_utilisation_percent / 100.0) as f32;
        Row {
            received_ms: view.received_ms(),
            env_mask,
            version_mask,
            overflow,
            resources: [
                view.available_cpu_msps,
                view.available_memory_mb,
                view.available_kbps,
            ],
            utilisation,
            dimensions,
            components,
            height,
            coordinate_error,
            sheets,
        }
    }
}

impl Row {
    /// The row's coordinates.
    pub fn coordinates(&self) -> Option<Coordinates> {
        (self.dimensions > 0).then(|| Coordinates {
            components: self.components[..usize::from(self.dimensions)].to_vec(),
            height: self.height,
        })
    }

    /// Estimated round trip to `host`, ms, without allocating.
    pub fn distance_ms(&self, host: &Coordinates) -> f64 {
        let squares: f64 = self.components[..usize::from(self.dimensions)]
            .iter()
            .zip(&host.components)
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        squares.sqrt() + self.height + host.height
    }
}

/// An immutable view of every server at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The servers, in no particular order.
    pub servers: Vec<Arc<ServerView>>,
    /// `rows[i]` is `servers[i]` packed for matching.
    pub rows: Vec<Row>,
    /// The names the rows' masks stand for.
    pub interned: Interned,
    /// For each destination servers measured a path toward: (index, hop count).
    pub paths_toward: HashMap<String, Vec<(u32, u16)>>,
}

impl Snapshot {
    /// The server named `name`, by id or endpoint host (a scan: names are resolved rarely,
    /// only for hosts given by address and not configured).
    pub fn named(&self, name: &str) -> Option<&Arc<ServerView>> {
        self.servers
            .iter()
            .find(|view| view.id == name || view.endpoint_host() == name)
    }
}

#[derive(Default)]
struct State {
    servers: HashMap<String, Arc<ServerView>>,
    snapshot: Arc<Snapshot>,
    /// The newest XIS receipt time seen (the XIS's clock), where incremental syncs resume.
    newest_received_xis_ms: Option<f64>,
    last_sync_ok_ms: Option<u64>,
}

/// The catalogue.
#[derive(Default)]
pub struct Catalogue {
    state: RwLock<State>,
}

impl Catalogue {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.read().snapshot)
    }

    /// The version held for a server.
    pub fn version_of(&self, server_id: &str) -> Option<u64> {
        self.read().servers.get(server_id).map(|view| view.version)
    }

    /// Where the next incremental sync starts (XIS clock), if any sync has run.
    pub fn newest_received(&self) -> Option<f64> {
        self.read().newest_received_xis_ms
    }

    /// When the last sync succeeded (Unix ms).
    pub fn last_sync_ok_ms(&self) -> Option<u64> {
        self.read().last_sync_ok_ms
    }

    /// Applies one sync: views to add or replace, receipt-time corrections for unchanged
    /// ones, servers to drop (`keep_only`: every other is dropped), then publishes a new
    /// snapshot.
    pub fn apply(
        &self,
        views: Vec<ServerView>,
        refreshed: &[(String, u64)],
        removed: &[String],
        keep_only: Option<&std::collections::HashSet<String>>,
        newest_received_xis_ms: Option<f64>,
        now_ms: u64,
    ) {
        let mut state = self.write();
        for view in views {
            if state.servers.len() >= SERVERS_MAX && !state.servers.contains_key(&view.id) {
                tracing::warn!(limit = SERVERS_MAX, "catalogue full; ignoring new servers");
                break;
            }
            state.servers.insert(view.id.clone(), Arc::new(view));
        }
        for (id, received_ms) in refreshed {
            if let Some(view) = state.servers.get(id) {
                view.received_ms.store(*received_ms, Ordering::Relaxed);
            }
        }
        for id in removed {
            state.servers.remove(id);
        }
        if let Some(keep) = keep_only {
            state.servers.retain(|id, _| keep.contains(id));
        }
        if let Some(newest) = newest_received_xis_ms {
            let current = state.newest_received_xis_ms.unwrap_or(f64::NEG_INFINITY);
            state.newest_received_xis_ms = Some(current.max(newest));
        }
        state.last_sync_ok_ms = Some(now_ms);
        let servers: Vec<Arc<ServerView>> = state.servers.values().cloned().collect();
        let mut interned = Interned::default();
        let rows = servers.iter().map(|view| interned.row(view)).collect();
        let mut paths_toward: HashMap<String, Vec<(u32, u16)>> = HashMap::new();
        for (index, view) in servers.iter().enumerate() {
            for (toward, hops, _) in &view.paths {
                paths_toward.entry(toward.clone()).or_default().push((
                    u32::try_from(index).unwrap_or(u32::MAX),
                    u16::try_from(*hops).unwrap_or(u16::MAX),
                ));
            }
        }
        state.snapshot = Arc::new(Snapshot {
            servers,
            rows,
            interned,
            paths_toward,
        });
    }
}
