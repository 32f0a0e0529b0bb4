//! The XIS's behaviour, held against both backends: the embedded index always, and a Redis
//! Cluster of our own (three masters, three replicas) when `redis-server` is installed (always
//! under CI). Each scenario runs over gRPC against an in-process daemon.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;
use support::redis_cluster::RedisCluster;
use support::{memory_config, redis_config, wait_for};
use tonic::Code;
use tonic::transport::Channel;
use xeno_clients::simulated::SimulatedServer;
use xeno_clients::xis::query::{self, Query};
use xeno_clients::xis::{self as client, exact, range};
use xeno_schemas::documents::{Document, ServerAdvertisement};
use xeno_schemas::proto::xis::v1 as pb;
use xeno_xis::config::Config;
use xeno_xis::daemon::RunningXis;

async fn start(config: Config) -> (RunningXis, Channel) {
    let xis = xeno_xis::daemon::start(config).await.expect("xis starts");
    let channel = client::connect(&xis.addr.to_string())
        .await
        .expect("connect");
    (xis, channel)
}

async fn advertise(channel: &Channel, xml: String) -> Result<pb::AdvertiseResponse, tonic::Status> {
    pb::xis_client::XisClient::new(channel.clone())
        .advertise(pb::AdvertiseRequest {
            advertisement_xml: xml,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn lookup(
    channel: &Channel,
    token: &str,
    values: Option<pb::lookup_request::Values>,
    page_size: u32,
    cursor: &str,
    include_stale: bool,
) -> Result<pb::LookupResponse, tonic::Status> {
    client::lookup(
        channel.clone(),
        pb::LookupRequest {
            token: token.to_owned(),
            values,
            page_size,
            cursor: cursor.to_owned(),
            include_stale,
        },
    )
    .await
    .map_err(|error| match error {
        client::ClientError::Status(status) => status,
        other => panic!("{other}"),
    })
}

async fn ids(
    channel: &Channel,
    token: &str,
    values: Option<pb::lookup_request::Values>,
    stale: bool,
) -> BTreeSet<String> {
    client::lookup_all(channel.clone(), token, values, stale, 100_000)
        .await
        .expect("lookup")
        .into_iter()
        .map(|found| found.server_id)
        .collect()
}

/// The test population: 40 servers; CPU in eight values with five servers each (so pages end
/// inside runs of equal values); Wasm or Linux; prices; free-form tokens.
fn population() -> Vec<(SimulatedServer, u64)> {
    (0..40u64)
        .map(|i| (SimulatedServer::generate(), i))
        .collect()
}

fn population_xml(server: &SimulatedServer, i: u64, version: u64) -> String {
    server.signed_xml(version, |ad| {
        if let Some(load) = ad.load.as_mut() {
            load.available_cpu_msps = Some(100 + (i % 8) * 10);
        }
        if i % 2 == 1 {
            ad.environments[0].env_type = "Linux".to_owned();
            ad.environments[0].versions = vec!["6.1".to_owned(), "2.4.18".to_owned()];
        }
        ad.price_sheets[0].cpu_second_pico = Some((i + 1) * 1_000_000);
        let gpu = if i.is_multiple_of(3) { "none" } else { "a100" };
        ad.tokens = vec![
            ("gpu".to_owned(), gpu.to_owned()),
            ("disk-iops".to_owned(), (i * 100).to_string()),
        ];
    })
}

/// Lookups: ranges (with the paper's alias), exact values, numbers compared as numbers,
/// qualified and free-form tokens, every page in order with a cursor bound to its query, and
/// what each match says.
async fn lookups_and_pages(config: Config) {
    let (xis, channel) = start(config).await;
    let servers = population();
    for (server, i) in &servers {
        let stored = advertise(&channel, population_xml(server, *i, 1))
            .await
            .expect("advertise");
        assert_eq!(
            (stored.server_id.as_str(), stored.version),
            (server.id.as_str(), 1)
        );
        assert!(stored.tokens >= 15, "{stored:?}");
    }
    let cpu = |i: u64| 100 + (i % 8) * 10;
    let expected: Vec<(u64, String)> = {
        let mut rows: Vec<(u64, String)> = servers
            .iter()
            .filter(|(_, i)| (100..=150).contains(&cpu(*i)))
            .map(|(server, i)| (cpu(*i), server.id.clone()))
            .collect();
        rows.sort();
        rows
    };
    // "token=CPUmsps, values=100-150", seven to a page.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let page = lookup(
            &channel,
            "CPUmsps",
            range(Some(100.0), Some(150.0)),
            7,
            &cursor,
            false,
        )
        .await
        .expect("page");
        assert_eq!(page.total_matches, 30);
        pages += 1;
        for found in &page.matches {
            let (server, _) = servers
                .iter()
                .find(|(s, _)| s.id == found.server_id)
                .expect("ours");
            assert_eq!(found.version, 1);
            assert!(!found.stale && found.age_ms < 60_000, "{found:?}");
            assert_eq!(
                found.endpoint,
                format!("xs-{}.example.net:7443", &server.id[..8])
            );
            seen.push((
                found.value.parse::<u64>().expect("integer"),
                found.server_id.clone(),
            ));
        }
        if page.next_cursor.is_empty() {
            break;
        }
        assert_eq!(page.matches.len(), 7);
        cursor = page.next_cursor;
    }
    assert_eq!(pages, 5);
    assert_eq!(seen, expected, "every match once, by value then server id");
    // A cursor is only good for its own query.
    let first = lookup(
        &channel,
        "CPUmsps",
        range(Some(100.0), Some(150.0)),
        7,
        "",
        false,
    )
    .await
    .expect("first page");
    let error = lookup(
        &channel,
        "CPUmsps",
        range(Some(100.0), Some(160.0)),
        7,
        &first.next_cursor,
        false,
    )
    .await
    .expect_err("foreign cursor");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("cursor"), "{}", error.message());

    let linux: BTreeSet<String> = servers
        .iter()
        .filter(|(_, i)| i % 2 == 1)
        .map(|(s, _)| s.id.clone())
        .collect();
    assert_eq!(ids(&channel, "EnvType", exact("Linux"), false).await, linux);
    assert_eq!(
        ids(&channel, "Version@Linux", exact("2.4.18"), false).await,
        linux
    );
    assert_eq!(
        ids(
            &channel,
            "Environments/Environment/EnvType",
            exact("Linux"),
            false
        )
        .await,
        linux
    );
    // Numbers compare as numbers, whichever way they are written.
    let at_120: BTreeSet<String> = servers
        .iter()
        .filter(|(_, i)| cpu(*i) == 120)
        .map(|(s, _)| s.id.clone())
        .collect();
    assert_eq!(at_120.len(), 5);
    assert_eq!(
        ids(&channel, "AvailableCPUmsps", exact("120.0"), false).await,
        at_120
    );
    // Prices per currency, in major units.
    let cheap: BTreeSet<String> = servers
        .iter()
        .filter(|(_, i)| *i < 10)
        .map(|(s, _)| s.id.clone())
        .collect();
    assert_eq!(
        ids(&channel, "CPUSecond@GBP", range(None, Some(0.00001)), false).await,
        cheap
    );
    // Free-form tokens: text, number, or present at all.
    let no_gpu: BTreeSet<String> = servers
        .iter()
        .filter(|(_, i)| i % 3 == 0)
        .map(|(s, _)| s.id.clone())
        .collect();
    assert_eq!(ids(&channel, "gpu", exact("none"), false).await, no_gpu);
    assert_eq!(
        ids(
            &channel,
            "disk-iops",
            range(Some(1000.0), Some(1900.0)),
            false
        )
        .await
        .len(),
        10
    );
    assert_eq!(ids(&channel, "gpu", None, false).await.len(), 40);
    assert_eq!(ids(&channel, "no-such-token", None, false).await.len(), 0);
    // Boolean searches are the client's: and/or over lookups.
    let query = Query::parse("EnvType=Linux CPUmsps=100-120 | gpu=none").expect("query");
    let found: BTreeSet<String> = query::find(channel.clone(), &query, false, 10_000)
        .await
        .expect("find")
        .into_iter()
        .map(|found| found.server_id)
        .collect();
    let wanted: BTreeSet<String> = servers
        .iter()
        .filter(|(_, i)| (i % 2 == 1 && cpu(*i) <= 120) || i % 3 == 0)
        .map(|(s, _)| s.id.clone())
        .collect();
    assert_eq!(found, wanted);
    // What a lookup points at can be fetched and verified.
    let (advertisement, stored) = client::get_advertisement(channel.clone(), &servers[3].0.id)
        .await
        .expect("verified advertisement");
    assert_eq!(advertisement.server_id, servers[3].0.id);
    assert!(!stored.stale);
    xis.shutdown().await;
}

/// Writes are total rewrites with an increasing version; an older one never replaces a newer.
async fn versions_only_go_forward(config: Config) {
    let (xis, channel) = start(config).await;
    let server = SimulatedServer::generate();
    let with_cpu = |version: u64, cpu: u64| {
        server.signed_xml(version, |ad| {
            ad.load.as_mut().expect("load").available_cpu_msps = Some(cpu);
        })
    };
    let v1 = with_cpu(1, 500);
    advertise(&channel, v1.clone()).await.expect("v1");
    advertise(&channel, with_cpu(2, 600)).await.expect("v2");
    assert!(
        ids(&channel, "AvailableCPUmsps", exact("500"), false)
            .await
            .is_empty(),
        "v1's values are gone"
    );
    let found = lookup(&channel, "AvailableCPUmsps", exact("600"), 10, "", false)
        .await
        .expect("lookup");
    assert_eq!((found.matches.len(), found.matches[0].version), (1, 2));
    for (stale_xml, what) in [
        (v1, "an older version"),
        (with_cpu(2, 700), "the same version"),
    ] {
        let error = advertise(&channel, stale_xml).await.expect_err(what);
        assert_eq!(error.code(), Code::FailedPrecondition, "{what}");
        assert!(
            error.message().contains("stored version 2"),
            "{}",
            error.message()
        );
    }
    assert_eq!(
        ids(&channel, "AvailableCPUmsps", None, false).await.len(),
        1
    );
    assert!(
        ids(&channel, "AvailableCPUmsps", exact("700"), false)
            .await
            .is_empty()
    );
    xis.shutdown().await;
}

/// Unsigned, forged, tampered, expired, oversized and malformed advertisements, and malformed
/// lookups, are refused with their documented codes, and the index is unchanged.
async fn bad_input_is_refused(config: Config) {
    let (xis, channel) = start(config).await;
    let honest = SimulatedServer::generate();
    let mallory = SimulatedServer::generate();
    advertise(&channel, honest.signed_xml(5, |_| {}))
        .await
        .expect("honest");
    let before = lookup(&channel, "ServerId", None, 100, "", true)
        .await
        .expect("lookup");

    let unsigned = honest.advertisement(6).to_canonical();
    // Mallory signs an advertisement that claims to be the honest server.
    let forged = mallory.sign(honest.advertisement(6)).to_canonical();
    // The honest server's signature, over different content.
    let tampered = honest
        .signed_xml(6, |_| {})
        .replace("<AvailableCPUmsps>1000<", "<AvailableCPUmsps>9000<");
    let expired = honest.signed_xml(6, |ad| {
        ad.issued_at -= time::Duration::hours(2);
        ad.expires_at = ad.issued_at + time::Duration::minutes(1);
    });
    let too_long_lived = honest.signed_xml(6, |ad| ad.expires_at += time::Duration::days(30));
    let future = honest.signed_xml(6, |ad| {
        ad.issued_at += time::Duration::hours(1);
        ad.expires_at += time::Duration::hours(2);
    });
    let reserved = honest.signed_xml(6, |ad| {
        ad.tokens = vec![("Country".to_owned(), "FR".to_owned())]
    });
    let oversized = format!(
        "{}<!--{}-->",
        honest.signed_xml(6, |_| {}),
        "x".repeat(70_000)
    );
    let cases: Vec<(String, Code, &str)> = vec![
        (unsigned, Code::Unauthenticated, "not signed"),
        (forged, Code::Unauthenticated, "only advertise itself"),
        (tampered, Code::Unauthenticated, "does not verify"),
        (expired, Code::InvalidArgument, "expired"),
        (too_long_lived, Code::InvalidArgument, "lifetime"),
        (future, Code::InvalidArgument, "future"),
        (reserved, Code::InvalidArgument, "reserved"),
        (oversized, Code::InvalidArgument, "limit is 65536"),
        (
            "<ServerAdvertisement><ServerId>x".to_owned(),
            Code::InvalidArgument,
            "",
        ),
        (
            "<EnvironmentalRequirements/>".to_owned(),
            Code::InvalidArgument,
            "",
        ),
    ];
    for (xml, code, words) in cases {
        let error = advertise(&channel, xml).await.expect_err(words);
        assert_eq!(error.code(), code, "{words}: {}", error.message());
        assert!(
            error.message().contains(words),
            "{words}: {}",
            error.message()
        );
    }
    let bad_lookups: Vec<(Option<pb::lookup_request::Values>, u32, &str, &str)> = vec![
        (range(Some(150.0), Some(100.0)), 10, "", "greater than max"),
        (range(Some(f64::NAN), None), 10, "", "numbers"),
        (range(None, None), 1001, "", "page_size"),
        (range(None, None), 10, "garbage", "cursor"),
    ];
    for (values, page_size, cursor, words) in bad_lookups {
        let error = lookup(
            &channel,
            "AvailableCPUmsps",
            values,
            page_size,
            cursor,
            false,
        )
        .await
        .expect_err(words);
        assert_eq!(error.code(), Code::InvalidArgument, "{words}");
        assert!(
            error.message().contains(words),
            "{words}: {}",
            error.message()
        );
    }
    let error = lookup(&channel, "", None, 10, "", false)
        .await
        .expect_err("empty token");
    assert_eq!(error.code(), Code::InvalidArgument);
    let mut get = pb::xis_client::XisClient::new(channel.clone());
    let error = get
        .get_advertisement(pb::GetAdvertisementRequest {
            server_id: mallory.id.clone(),
        })
        .await
        .expect_err("never advertised");
    assert_eq!(error.code(), Code::NotFound);
    // Nothing changed.
    let after = lookup(&channel, "ServerId", None, 100, "", true)
        .await
        .expect("lookup");
    let ageless = |mut page: pb::LookupResponse| {
        page.matches.iter_mut().for_each(|m| m.age_ms = 0);
        page
    };
    assert_eq!(ageless(after), ageless(before));
    let (stored, _) = client::get_advertisement(channel.clone(), &honest.id)
        .await
        .expect("get");
    assert_eq!(stored.version, 5);
    assert_eq!(
        stored.load.and_then(|load| load.available_cpu_msps),
        Some(1000)
    );
    xis.shutdown().await;
}

/// Aging: stale after one TTL (hidden unless asked for, flagged when shown), discarded after
/// two; a replay of the discarded advertisement is refused; the server can come back.
async fn aging(config: Config) {
    assert_eq!(config.ttl_seconds, 1);
    let (xis, channel) = start(config).await;
    let quiet = SimulatedServer::generate();
    let busy = SimulatedServer::generate();
    let quiet_v1 = quiet.signed_xml(1, |_| {});
    advertise(&channel, quiet_v1.clone()).await.expect("quiet");
    let refresher = {
        let channel = channel.clone();
        tokio::spawn(async move {
            for version in 1..200 {
                advertise(&channel, busy.signed_xml(version, |_| {}))
                    .await
                    .expect("busy");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let wasm = || exact("Wasm");
    wait_for(
        "the quiet server to go stale",
        Duration::from_secs(10),
        || async {
            // Answers flag a record stale by its age at once; Redis moves its postings to the
            // stale sets (and so behind the fresh ones, and out of the fresh count) at the
            // next sweep, within `sweep_interval_ms`.
            let fresh = ids(&channel, "EnvType", wasm(), false).await;
            let counted = lookup(&channel, "EnvType", wasm(), 10, "", false)
                .await
                .is_ok_and(|page| page.total_matches == 1);
            counted && fresh.len() == 1 && !fresh.contains(&quiet.id)
        },
    )
    .await;
    let shown = lookup(&channel, "EnvType", wasm(), 10, "", true)
        .await
        .expect("with stale");
    let entry = shown
        .matches
        .iter()
        .find(|m| m.server_id == quiet.id)
        .expect("stale shown");
    assert!(entry.stale && entry.age_ms >= 1000, "{entry:?}");
    assert_eq!(
        shown.matches.last().map(|m| m.server_id.as_str()),
        Some(quiet.id.as_str()),
        "fresh before stale"
    );
    let (_, stored) = client::get_advertisement(channel.clone(), &quiet.id)
        .await
        .expect("still there");
    assert!(stored.stale);
    wait_for(
        "the quiet server to be discarded",
        Duration::from_secs(10),
        || async {
            let mut get = pb::xis_client::XisClient::new(channel.clone());
            let gone = get
                .get_advertisement(pb::GetAdvertisementRequest {
                    server_id: quiet.id.clone(),
                })
                .await
                .is_err_and(|status| status.code() == Code::NotFound);
            gone && !ids(&channel, "EnvType", wasm(), true)
                .await
                .contains(&quiet.id)
        },
    )
    .await;
    // Replaying its last advertisement (still within its Expiry) does not resurrect it.
    let error = advertise(&channel, quiet_v1).await.expect_err("replay");
    assert_eq!(error.code(), Code::FailedPrecondition);
    advertise(&channel, quiet.signed_xml(2, |_| {}))
        .await
        .expect("back with a new version");
    assert!(
        ids(&channel, "EnvType", wasm(), false)
            .await
            .contains(&quiet.id)
    );
    refresher.abort();
    xis.shutdown().await;
}

/// Names are self-certifying, so a client need not trust the XIS: what a dishonest or broken
/// XIS serves (a record altered after signing, or one server's record under another's name)
/// is refused by the client library with the reason, rather than believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_the_embedded_backend() {
    lookups_and_pages(memory_config(90)).await;
    versions_only_go_forward(memory_config(90)).await;
    bad_input_is_refused(memory_config(90)).await;
    aging(memory_config(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_redis_cluster() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let urls = cluster.urls();
    lookups_and_pages(redis_config(&urls, "lookups", 90)).await;
    versions_only_go_forward(redis_config(&urls, "versions", 90)).await;
    bad_input_is_refused(redis_config(&urls, "bad", 90)).await;
    aging(redis_config(&urls, "aging", 1)).await;
    // Discarding is Redis's key expiry: a record key lives two TTLs.
    let (xis, channel) = start(redis_config(&urls, "expiry", 1)).await;
    let server = SimulatedServer::generate();
    advertise(&channel, server.signed_xml(1, |_| {}))
        .await
        .expect("advertise");
    let key = format!("expiry:{{s:{}}}:rec", server.id);
    let ttl = support::redis_cluster::cli(cluster.master_of(&key), &["pttl", &key]);
    let ttl: i64 = ttl.trim().parse().expect("pttl");
    assert!((1..=2000).contains(&ttl), "record key expires in {ttl} ms");
    xis.shutdown().await;
}

/// The embedded backend keeps what it had across a restart, version rules included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        persist: true,
        data_dir: dir.path().to_owned(),
        ..memory_config(90)
    };
    let servers: Vec<SimulatedServer> = (0..25).map(|_| SimulatedServer::generate()).collect();
    let (xis, channel) = start(config.clone()).await;
    for server in &servers {
        advertise(&channel, server.signed_xml(1, |_| {}))
            .await
            .expect("v1");
        advertise(
            &channel,
            server.signed_xml(2, |ad| {
                ad.load.as_mut().expect("load").available_cpu_msps = Some(777);
            }),
        )
        .await
        .expect("v2");
    }
    let before = lookup(&channel, "AvailableCPUmsps", exact("777"), 100, "", false)
        .await
        .expect("lookup");
    assert_eq!(before.total_matches, 25);
    xis.shutdown().await;

    let (xis, channel) = start(config).await;
    let after = lookup(&channel, "AvailableCPUmsps", exact("777"), 100, "", false)
        .await
        .expect("lookup");
    let strip = |page: &pb::LookupResponse| -> Vec<(String, u64, String)> {
        page.matches
            .iter()
            .map(|m| (m.server_id.clone(), m.version, m.endpoint.clone()))
            .collect()
    };
    assert_eq!(strip(&after), strip(&before));
    let error = advertise(&channel, servers[0].signed_xml(2, |_| {}))
        .await
        .expect_err("old version");
    assert_eq!(error.code(), Code::FailedPrecondition);
    let (advertisement, _): (ServerAdvertisement, _) =
        client::get_advertisement(channel.clone(), &servers[0].id)
            .await
            .expect("get");
    assert_eq!(advertisement.version, 2);
    xis.shutdown().await;
}

/// A record discarded by aging still blocks replays of its advertisement after the embedded
/// XIS restarts, whether it was discarded before the restart or while the XIS was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_stay_refused_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        persist: true,
        data_dir: dir.path().to_owned(),
        ..memory_config(1)
    };
    let before = SimulatedServer::generate();
    let during = SimulatedServer::generate();
    let (xis, channel) = start(config.clone()).await;
    let before_v1 = before.signed_xml(1, |_| {});
    let during_v1 = during.signed_xml(1, |_| {});
    advertise(&channel, before_v1.clone())
        .await
        .expect("before");
    wait_for(
        "the first record to be discarded",
        Duration::from_secs(10),
        || async {
            let mut get = pb::xis_client::XisClient::new(channel.clone());
            get.get_advertisement(pb::GetAdvertisementRequest {
                server_id: before.id.clone(),
            })
            .await
            .is_err_and(|status| status.code() == Code::NotFound)
        },
    )
    .await;
    advertise(&channel, during_v1.clone())
        .await
        .expect("during");
    xis.shutdown().await;
    // Down for longer than two TTLs: the second record ages out while nobody sweeps.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let (xis, channel) = start(config).await;
    for (name, replay) in [("before", before_v1), ("during", during_v1)] {
        let error = advertise(&channel, replay)
            .await
            .expect_err("a replay after the restart");
        assert_eq!(error.code(), Code::FailedPrecondition, "{name}: {error:?}");
    }
    assert!(
        ids(&channel, "EnvType", exact("Wasm"), true)
            .await
            .is_empty()
    );
    advertise(&channel, during.signed_xml(2, |_| {}))
        .await
        .expect("a new version is welcome");
    xis.shutdown().await;
}
