//! What this server says about itself: the signed `ServerAdvertisement` (for the XIS and for
//! status queries) and the status answer.

use crate::server::Server;
use xeno_schemas::documents::{Environment, Load, NetworkCoordinates, ServerAdvertisement};
use xeno_schemas::proto::server::v1 as pb;
use xeno_schemas::signing::SigningKey;

/// How long an advertisement is to be believed.
pub const ADVERTISEMENT_LIFETIME_SECONDS: i64 = 120;

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
    let now = time::OffsetDateTime::now_utc();
    let mut environments: Vec<Environment> = server
        .managers
        .iter()
        .map(|(env_type, manager)| Environment {
            env_type: env_type.clone(),
            versions: manager.capabilities.versions.clone(),
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
        location: None,
        load: Some(Load {
            cpu_utilisation_percent: None,
            load_average: None,
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
        paths: Vec::new(),
        tokens: Vec::new(),
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
