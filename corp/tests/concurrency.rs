//! Money under concurrency, on every backend: validation is exactly-once however many servers
//! race for an order, and charges are exactly-once however often they are retried, by the unary
//! call or over a server's charge stream.

mod support;

use std::collections::HashMap;
use support::*;
use tonic::Code;
use xeno_clients::charging::Charger;
use xeno_schemas::proto::corp::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_validations_from_ten_servers_have_one_winner() {
    for backend in backends() {
        let corp = TestCorp::start(&backend).await;
        let mut alice = corp
            .register_client("Alice", pb::PrivacyMode::Identified)
            .await;
        corp.deposit(&alice.id, 10_000_000).await;
        let bought = alice.buy(1_000_000).await;
        let order = alice.sign(&bought, None);
        let mut servers = Vec::new();
        for index in 0..10 {
            servers.push(corp.register_server(&format!("xs{index}")).await);
        }
        let mut attempts = tokio::task::JoinSet::new();
        for (index, server) in servers.iter().enumerate() {
            for _ in 0..10 {
                let mut client = server.corp.clone();
                let order = order.clone();
                let server_id = server.id.clone();
                attempts.spawn(async move {
                    let answer = client
                        .validate_purchase_order(pb::ValidatePurchaseOrderRequest {
                            purchase_order_xml: xeno_schemas::Document::to_xml(&order),
                            session_id: format!("session-of-{index}"),
                            requirements_xml: requirements("Wasm", Some(100)),
                        })
                        .await;
                    (server_id, answer)
                });
            }
        }
        let mut winners: HashMap<String, Vec<pb::ValidatePurchaseOrderResponse>> = HashMap::new();
        let mut refused = 0;
        while let Some(result) = attempts.join_next().await {
            let (server_id, answer) = result.expect("task");
            match answer {
                Ok(response) => winners
                    .entry(server_id)
                    .or_default()
                    .push(response.into_inner()),
                Err(status) => {
                    assert_eq!(status.code(), Code::AlreadyExists, "{}", status.message());
                    refused += 1;
                }
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "exactly one server wins: {:?}",
            winners.keys().collect::<Vec<_>>()
        );
        let (winner, answers) = winners.into_iter().next().expect("a winner");
        assert_eq!(
            answers.len(),
            10,
            "the winner's every attempt gets the same answer"
        );
        // Every answer is the same binding; only the corp's clock reading differs between them.
        let binding =
            |answer: &pb::ValidatePurchaseOrderResponse| pb::ValidatePurchaseOrderResponse {
                corp_time_unix_ms: 0,
                ..answer.clone()
            };
        assert!(answers.iter().all(|answer| {
            binding(answer) == binding(&answers[0]) && answer.bound_server_id == winner
        }));
        assert!(
            answers.iter().all(|answer| answer.corp_time_unix_ms > 0),
            "every answer carries the corp's clock"
        );
        assert_eq!(refused, 90);
        corp.assert_invariants().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_charges_from_thirty_two_servers_each_sent_twice_are_charged_once() {
    const SERVERS: usize = 32;
    const CHARGES: usize = 10_000;
    for backend in backends() {
        let corp = TestCorp::start(&backend).await;
        let mut alice = corp
            .register_client("Alice", pb::PrivacyMode::Identified)
            .await;
        corp.deposit(&alice.id, 1_000_000_000).await;
        let mut plans = Vec::new();
        for index in 0..SERVERS {
            let mut server = corp.register_server(&format!("xs{index}")).await;
            let bought = alice.buy(10_000_000).await;
            let order = alice.sign(&bought, None);
            server
                .validate(&order, &format!("s{index}"), "Wasm")
                .await
                .expect("validate");
            let count = CHARGES / SERVERS + usize::from(index < CHARGES % SERVERS);
            plans.push((server, order.issued.order_id.clone(), count));
        }
        let mut senders = tokio::task::JoinSet::new();
        let mut expected: HashMap<String, u64> = HashMap::new();
        for (server, order_id, count) in plans {
            // Amounts vary with the sequence so that a double charge could not hide.
            let total: u64 = (1..=count as u64).map(|sequence| 100 + sequence).sum();
            expected.insert(order_id.clone(), total);
            // The original of each charge goes by the unary call, one at a time; its copy goes
            // over the server's charge stream, all copies in flight at once and in the reverse
            // order, so originals and retries interleave across the two ways in.
            let mut client = server.corp.clone();
            let unary_order = order_id.clone();
            senders.spawn(async move {
                let mut outcomes = Vec::new();
                for sequence in 1..=count as u64 {
                    let answer = client
                        .charge_from_purchase_order(pb::ChargeRequest {
                            order_id: unary_order.clone(),
                            sequence,
                            amount: Some(gbp(100 + sequence)),
                            usage_record_xml: usage_xml(&unary_order, sequence, 100 + sequence),
                        })
                        .await
                        .expect("every charge is answered")
                        .into_inner();
                    outcomes.push(answer);
                }
                outcomes
            });
            let charger = Charger::new(server.corp.clone());
            senders.spawn(async move {
                let copies = (1..=count as u64).rev().map(|sequence| {
                    let charger = charger.clone();
                    let order_id = order_id.clone();
                    async move {
                        charger
                            .charge(pb::ChargeRequest {
                                order_id: order_id.clone(),
                                sequence,
                                amount: Some(gbp(100 + sequence)),
                                usage_record_xml: usage_xml(&order_id, sequence, 100 + sequence),
                            })
                            .await
                            .expect("every streamed charge is answered")
                    }
                });
                futures::future::join_all(copies).await
            });
        }
        // Audits race the charges: an audit that shares a commit batch with a charge it lists
        // must still show that charge's usage record (not stored yet when the audit runs).
        let mut auditing = tokio::task::JoinSet::new();
        for auditor in 0..8 {
            let mut client = alice.corp.clone();
            let orders: Vec<String> = expected.keys().cloned().collect();
            auditing.spawn(async move {
                let mut listed = 0;
                for round in 0..60 {
                    let order_id = &orders[(auditor + round) % orders.len()];
                    let audit = client
                        .audit_order(pb::AuditOrderRequest {
                            order_id: order_id.clone(),
                            ..Default::default()
                        })
                        .await
                        .expect("an audit during the storm")
                        .into_inner();
                    for charge in &audit.charges {
                        let record = <xeno_schemas::documents::UsageRecord as xeno_schemas::Document>::parse(
                            charge.usage_record_xml.as_bytes(),
                        )
                        .expect("every listed charge has its usage record");
                        assert_eq!(
                            (&record.order_id, record.sequence),
                            (order_id, charge.sequence)
                        );
                    }
                    listed += audit.charges.len();
                }
                listed
            });
        }
        let mut answered = 0;
        let mut replayed = 0;
        while let Some(result) = senders.join_next().await {
            for answer in result.expect("sender") {
                assert_eq!(answer.outcome, pb::ChargeOutcome::Charged as i32);
                answered += 1;
                replayed += usize::from(answer.replayed);
            }
        }
        assert_eq!(answered, 2 * CHARGES);
        let mut listed = 0;
        while let Some(result) = auditing.join_next().await {
            listed += result.expect("auditor");
        }
        assert!(listed > 0, "the audits listed charges");
        assert_eq!(replayed, CHARGES, "exactly one of each pair is a replay");
        for (order_id, total) in expected {
            let audit = alice
                .corp
                .audit_order(pb::AuditOrderRequest {
                    order_id: order_id.clone(),
                    ..Default::default()
                })
                .await
                .expect("audit")
                .into_inner();
            let charged = audit
                .order
                .expect("order")
                .charged
                .expect("charged")
                .amount_minor;
            assert_eq!(charged, total, "order {order_id} charged once per sequence");
        }
        let report = corp.assert_invariants().await;
        assert_eq!(report.charges, CHARGES as u64);
    }
}
