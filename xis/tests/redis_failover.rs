//! Killing a Redis master under the XIS: the token's postings and the records it held are
//! served by its replica. An XIS reading from replicas keeps answering at once; one reading
//! from masters answers again once the replica is promoted; writes resume after that.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::redis_cluster::{FORM_TIMEOUT, RedisCluster};
use support::redis_config;
use tonic::transport::Channel;
use xeno_clients::simulated::SimulatedServer;
use xeno_clients::xis::{self as client, exact};

const SERVERS: usize = 60;

async fn complete(channel: &Channel, expected: &BTreeSet<String>, version: u64) -> bool {
    match client::lookup_all(channel.clone(), "EnvType", exact("Wasm"), false, 10_000).await {
        Ok(matches) => {
            matches.len() == expected.len()
                && matches.iter().all(|m| m.version == version)
                && matches
                    .iter()
                    .map(|m| m.server_id.clone())
                    .collect::<BTreeSet<_>>()
                    == *expected
        }
        Err(_) => false,
    }
}

async fn until_complete(
    channel: &Channel,
    expected: &BTreeSet<String>,
    version: u64,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    while !complete(channel, expected, version).await {
        assert!(
            start.elapsed() < timeout,
            "no complete answer within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_answered_for_by_its_replica() {
    let Some(mut cluster) = RedisCluster::start() else {
        return;
    };
    let urls = cluster.urls();
    let masters_config = redis_config(&urls, "failover", 90);
    let mut replicas_config = redis_config(&urls, "failover", 90);
    replicas_config.redis.read_from_replicas = true;
    let from_masters = xeno_xis::daemon::start(masters_config).await.expect("xis");
    let from_replicas = xeno_xis::daemon::start(replicas_config).await.expect("xis");
    let masters = client::connect(&from_masters.addr.to_string())
        .await
        .expect("connect");
    let replicas = client::connect(&from_replicas.addr.to_string())
        .await
        .expect("connect");

    let servers: Vec<SimulatedServer> = (0..SERVERS).map(|_| SimulatedServer::generate()).collect();
    for server in &servers {
        client::advertise_xml(masters.clone(), server.signed_xml(1, |_| {}))
            .await
            .expect("advertise");
    }
    let expected: BTreeSet<String> = servers.iter().map(|s| s.id.clone()).collect();
    assert!(complete(&masters, &expected, 1).await);
    cluster.wait_replicated();

    // Kill the master holding the EnvType postings (and a third of the records).
    let victim = cluster.master_of("failover:{t:EnvType}:t0");
    cluster.kill(victim);
    let killed = Instant::now();

    let replica_answer = until_complete(&replicas, &expected, 1, Duration::from_secs(5)).await;
    let master_answer = until_complete(&masters, &expected, 1, FORM_TIMEOUT).await;
    println!(
        "master {victim} killed: complete answers after {:?} reading from replicas, {:?} reading from masters",
        replica_answer, master_answer
    );
    assert!(
        replica_answer < Duration::from_secs(3),
        "replica reads took {replica_answer:?}"
    );

    // Writes resume once the replica is promoted: every server refreshes.
    cluster.wait_healthy();
    for server in &servers {
        let deadline = Instant::now() + FORM_TIMEOUT;
        while client::advertise_xml(masters.clone(), server.signed_xml(2, |_| {}))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "writes did not resume");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    until_complete(&masters, &expected, 2, Duration::from_secs(5)).await;
    println!(
        "all {SERVERS} servers refreshed {:?} after the kill",
        killed.elapsed()
    );
    from_masters.shutdown().await;
    from_replicas.shutdown().await;
}
