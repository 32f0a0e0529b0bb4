//! The corp's behaviour, run against every storage backend (SQLite always; PostgreSQL when
//! configured, and always under CI): the whole purchase order life, and every kind of bad input
//! refused with its specific status while the ledger stays unchanged.

mod support;

use support::*;
use tonic::Code;
use xeno_schemas::documents::{Money, Restrictions};
use xeno_schemas::proto::corp::v1 as pb;

const POUND: u64 = 1_000_000;

#[tokio::test]
async fn purchase_order_life_on_every_backend() {
    for backend in backends() {
        purchase_order_life(&backend).await;
    }
}

async fn purchase_order_life(backend: &Backend) {
    let corp = TestCorp::start(backend).await;
    let mut alice = corp
        .register_client("Alice", pb::PrivacyMode::Identified)
        .await;
    let mut server = corp.register_server("xs1").await;
    assert_eq!(server.id.len(), 64, "a server's id is its key fingerprint");
    corp.deposit(&alice.id, 100 * POUND).await;

    // Ordering ring-fences the amount: available drops, nothing is spent.
    let order = alice.buy(10 * POUND).await;
    let order_id = order.issued.order_id.clone();
    assert!(order_id.starts_with("corp-t:po-"), "{order_id}");
    assert_eq!(order.issued.restrictions.must_validate, Some(true));
    let account = alice.account().await;
    assert_eq!(
        (available_gbp(&account), reserved_gbp(&account)),
        (90 * POUND, 10 * POUND)
    );

    // The client narrows it to this server and 5 pounds, and signs.
    let narrowed = alice.sign(
        &order,
        Some(Restrictions {
            servers: Some(vec![server.id.clone()]),
            max_amount: Some(Money {
                currency: "GBP".parse().expect("GBP"),
                minor: 5 * POUND,
            }),
            ..Restrictions::default()
        }),
    );
    let validation = server
        .validate(&narrowed, "session-1", "Wasm")
        .await
        .expect("validation");
    assert_eq!(validation.bound_server_id, server.id);
    assert_eq!(
        validation.limit.as_ref().expect("limit").amount_minor,
        5 * POUND
    );
    // The same server validating again for the same session gets the same answer (read on
    // the corp's clock a moment later).
    let again = server
        .validate(&narrowed, "session-1", "Wasm")
        .await
        .expect("again");
    assert!(again.corp_time_unix_ms >= validation.corp_time_unix_ms);
    assert_eq!(
        pb::ValidatePurchaseOrderResponse {
            corp_time_unix_ms: validation.corp_time_unix_ms,
            ..again
        },
        validation
    );

    // Charges: idempotent by sequence; refused beyond what remains.
    let first = server.charge(&order_id, 1, POUND).await.expect("charge 1");
    assert_eq!(first.outcome, pb::ChargeOutcome::Charged as i32);
    assert!(!first.replayed);
    let replay = server.charge(&order_id, 1, POUND).await.expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.charged_total, first.charged_total);
    let over = server
        .charge(&order_id, 2, 4 * POUND + 500_000)
        .await
        .expect("charge 2");
    assert_eq!(over.outcome, pb::ChargeOutcome::RefusedInsufficient as i32);
    assert_eq!(over.remaining.expect("remaining").amount_minor, 4 * POUND);
    let rest = server
        .charge(&order_id, 3, 4 * POUND)
        .await
        .expect("charge 3");
    assert_eq!(rest.remaining.expect("remaining").amount_minor, 0);

    // Settlement: the remainder returns to the client; the server is paid less 5% commission.
    let settlement = server
        .corp
        .close_purchase_order(pb::ClosePurchaseOrderRequest {
            order_id: order_id.clone(),
        })
        .await
        .expect("close")
        .into_inner();
    let amount = |m: Option<xeno_schemas::proto::common::v1::Money>| m.expect("money").amount_minor;
    assert_eq!(amount(settlement.spent), 5 * POUND);
    assert_eq!(amount(settlement.returned), 5 * POUND);
    assert_eq!(amount(settlement.commission), 250_000);
    assert_eq!(amount(settlement.payout), 4_750_000);
    let again = server
        .corp
        .close_purchase_order(pb::ClosePurchaseOrderRequest {
            order_id: order_id.clone(),
        })
        .await
        .expect("close twice");
    assert_eq!(amount(again.into_inner().returned), 5 * POUND);
    let account = alice.account().await;
    assert_eq!(
        (available_gbp(&account), reserved_gbp(&account)),
        (95 * POUND, 0)
    );
    assert_eq!(
        available_gbp(&server.account().await),
        4_750_000,
        "server payout"
    );

    // Audit: the client sees its own charges with their annotations.
    let audit = alice
        .corp
        .audit_order(pb::AuditOrderRequest {
            order_id: order_id.clone(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner();
    assert_eq!(audit.charges.len(), 3);
    assert!(
        audit.charges[0]
            .usage_record_xml
            .contains("task hello running (charge 1)")
    );
    assert_eq!(
        audit.charges[1].outcome,
        pb::ChargeOutcome::RefusedInsufficient as i32
    );
    assert!(audit.client_identity.starts_with("Alice"));
    let by_server = server
        .corp
        .audit_server(pb::AuditServerRequest {
            server_id: server.id.clone(),
        })
        .await
        .expect("server audit");
    assert_eq!(by_server.into_inner().orders.len(), 1);

    corp.assert_invariants().await;
}

#[tokio::test]
async fn pseudonymous_clients_are_revealed_only_to_auditors() {
    for backend in backends() {
        let corp = TestCorp::start(&backend).await;
        let mut carol = corp
            .register_client("Carol Secret", pb::PrivacyMode::Pseudonymous)
            .await;
        let mut server = corp.register_server("xs1").await;
        let mut auditor = corp
            .register_client("Audrey Auditor", pb::PrivacyMode::Identified)
            .await;
        corp.deposit(&carol.id, 10 * POUND).await;
        let certificate = carol.credentials.certificate_pem.clone();
        assert!(!certificate.is_empty());
        let order = carol.buy(POUND).await;
        let order_id = order.issued.order_id.clone();
        let validation = server
            .validate(&carol.sign(&order, None), "s", "Wasm")
            .await
            .expect("validate");
        assert_eq!(
            validation.client, carol.id,
            "servers see the opaque account id"
        );
        server.charge(&order_id, 1, 1000).await.expect("charge");

        let request = || pb::AuditOrderRequest {
            order_id: order_id.clone(),
            ..Default::default()
        };
        let seen_by_server = server
            .corp
            .audit_order(request())
            .await
            .expect("server audit")
            .into_inner();
        assert_eq!(seen_by_server.client_identity, carol.id);
        let refused = auditor
            .corp
            .audit_order(request())
            .await
            .expect_err("not an auditor yet");
        assert_eq!(refused.code(), Code::PermissionDenied);
        corp.admin()
            .await
            .grant_auditor(pb::GrantAuditorRequest {
                account_id: auditor.id.clone(),
            })
            .await
            .expect("grant");
        let seen_by_auditor = auditor
            .corp
            .audit_order(request())
            .await
            .expect("auditor")
            .into_inner();
        assert!(
            seen_by_auditor.client_identity.starts_with("Carol Secret"),
            "{}",
            seen_by_auditor.client_identity
        );
        assert_eq!(seen_by_auditor.charges.len(), 1);
        let audit = auditor
            .corp
            .audit_server(pb::AuditServerRequest {
                server_id: server.id.clone(),
            })
            .await
            .expect("server audit");
        assert_eq!(audit.into_inner().orders.len(), 1);
        corp.assert_invariants().await;
    }
}

/// Everything observable about the money: each party's account.
async fn ledger_view(parties: &mut [&mut Party]) -> Vec<pb::GetAccountResponse> {
    let mut views = Vec::new();
    for party in parties.iter_mut() {
        views.push(party.account().await);
    }
    views
}

fn expect_refusal<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    words: &str,
    case: &str,
) {
    let status = result.expect_err(&format!("{case}: must be refused"));
    assert_eq!(status.code(), code, "{case}: {}", status.message());
    assert!(
        status.message().contains(words),
        "{case}: message {:?} lacks {words:?}",
        status.message()
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_moves_no_money() {
    for backend in backends() {
        bad_input(&backend).await;
    }
}

async fn bad_input(backend: &Backend) {
    let corp = TestCorp::start(backend).await;
    let mut alice = corp
        .register_client("Alice", pb::PrivacyMode::Identified)
        .await;
    let mut bob = corp
        .register_client("Bob", pb::PrivacyMode::Identified)
        .await;
    let mut server = corp.register_server("xs1").await;
    let mut other_server = corp.register_server("xs2").await;
    corp.deposit(&alice.id, 50 * POUND).await;
    let order = alice.buy(10 * POUND).await;
    let order_id = order.issued.order_id.clone();
    let signed = alice.sign(&order, None);
    let before = ledger_view(&mut [&mut alice, &mut bob, &mut server]).await;

    // Documents and signatures.
    let result = server
        .corp
        .validate_purchase_order(pb::ValidatePurchaseOrderRequest {
            purchase_order_xml: "<PurchaseOrder><Issued/>".to_owned(),
            session_id: "s".to_owned(),
            requirements_xml: requirements("Wasm", None),
        })
        .await;
    expect_refusal(
        result,
        Code::InvalidArgument,
        "purchase order: ",
        "malformed order",
    );
    let mut tampered = signed.clone();
    tampered.issued.amount.minor = 1000 * POUND;
    expect_refusal(
        server.validate(&tampered, "s", "Wasm").await,
        Code::PermissionDenied,
        "corp's signature",
        "tampered amount",
    );
    expect_refusal(
        server.validate(&order, "s", "Wasm").await,
        Code::PermissionDenied,
        "not signed by its client",
        "unsigned by client",
    );
    expect_refusal(
        server.validate(&bob.sign(&order, None), "s", "Wasm").await,
        Code::PermissionDenied,
        "client's signature",
        "signed by another client",
    );
    let waived = alice.sign(
        &order,
        Some(Restrictions {
            must_validate: Some(false),
            ..Restrictions::default()
        }),
    );
    expect_refusal(
        server.validate(&waived, "s", "Wasm").await,
        Code::PermissionDenied,
        "widen",
        "widened restriction",
    );
    let raised = alice.sign(
        &order,
        Some(Restrictions {
            max_amount: Some(Money {
                currency: "GBP".parse().expect("GBP"),
                minor: 11 * POUND,
            }),
            ..Restrictions::default()
        }),
    );
    expect_refusal(
        server.validate(&raised, "s", "Wasm").await,
        Code::PermissionDenied,
        "widen",
        "raised cap",
    );
    let past = alice.sign(
        &order,
        Some(Restrictions {
            not_after: Some(time::OffsetDateTime::now_utc() - time::Duration::minutes(1)),
            ..Restrictions::default()
        }),
    );
    expect_refusal(
        server.validate(&past, "s", "Wasm").await,
        Code::FailedPrecondition,
        "expired",
        "expired order",
    );
    let elsewhere = alice.sign(
        &order,
        Some(Restrictions {
            servers: Some(vec![other_server.id.clone()]),
            ..Restrictions::default()
        }),
    );
    expect_refusal(
        server.validate(&elsewhere, "s", "Wasm").await,
        Code::PermissionDenied,
        "other servers",
        "restricted to another server",
    );
    let only_linux = alice.sign(
        &order,
        Some(Restrictions {
            env_types: Some(vec!["Linux".to_owned()]),
            ..Restrictions::default()
        }),
    );
    expect_refusal(
        server.validate(&only_linux, "s", "Wasm").await,
        Code::PermissionDenied,
        "environment types Linux",
        "wrong environment type",
    );
    expect_refusal(
        alice.validate(&signed, "s", "Wasm").await,
        Code::PermissionDenied,
        "only server accounts",
        "client validating",
    );

    // Charges before validation, from the wrong server, unknown orders, overspending and replays.
    expect_refusal(
        server.charge(&order_id, 1, POUND).await,
        Code::PermissionDenied,
        "not been validated",
        "charge before validation",
    );
    server
        .validate(&signed, "s", "Wasm")
        .await
        .expect("a good validation");
    expect_refusal(
        other_server.validate(&signed, "s2", "Wasm").await,
        Code::AlreadyExists,
        "another server",
        "bound elsewhere",
    );
    expect_refusal(
        other_server.charge(&order_id, 1, POUND).await,
        Code::PermissionDenied,
        "bound to may charge",
        "wrong server charging",
    );
    expect_refusal(
        server.charge("corp-t:po-999", 1, POUND).await,
        Code::NotFound,
        "no order",
        "unknown order",
    );
    expect_refusal(
        server.charge(&order_id, 0, POUND).await,
        Code::InvalidArgument,
        "start at 1",
        "sequence 0",
    );
    let mismatched = server
        .corp
        .charge_from_purchase_order(pb::ChargeRequest {
            order_id: order_id.clone(),
            sequence: 1,
            amount: Some(gbp(2 * POUND)),
            usage_record_xml: usage_xml(&order_id, 1, POUND),
        })
        .await;
    expect_refusal(
        mismatched,
        Code::InvalidArgument,
        "does not match the request",
        "annotation disagreeing with the charge",
    );
    let bad_record = server
        .corp
        .charge_from_purchase_order(pb::ChargeRequest {
            order_id: order_id.clone(),
            sequence: 1,
            amount: Some(gbp(POUND)),
            usage_record_xml: "<UsageRecord/>".to_owned(),
        })
        .await;
    expect_refusal(
        bad_record,
        Code::InvalidArgument,
        "usage record: UsageRecord: missing <Order>",
        "malformed usage record",
    );
    let euros = server
        .corp
        .charge_from_purchase_order(pb::ChargeRequest {
            order_id: order_id.clone(),
            sequence: 1,
            amount: Some(xeno_schemas::proto::common::v1::Money {
                currency: "EUR".to_owned(),
                amount_minor: POUND,
            }),
            usage_record_xml: usage_xml(&order_id, 1, POUND),
        })
        .await;
    expect_refusal(euros, Code::InvalidArgument, "not EUR", "wrong currency");
    let over = server
        .charge(&order_id, 1, 11 * POUND)
        .await
        .expect("an overspending charge is answered");
    assert_eq!(over.outcome, pb::ChargeOutcome::RefusedInsufficient as i32);
    expect_refusal(
        server.charge(&order_id, 1, POUND).await,
        Code::AlreadyExists,
        "already used",
        "sequence reused with another amount",
    );

    // Orders beyond the balance, callers without or with revoked certificates, bad CSRs.
    expect_refusal(
        bob.corp
            .create_purchase_order(pb::CreatePurchaseOrderRequest {
                amount: Some(gbp(POUND)),
                lifetime_seconds: 0,
            })
            .await,
        Code::FailedPrecondition,
        "insufficient available balance: 0.00 GBP available, 1.00 GBP asked",
        "order beyond the balance",
    );
    expect_refusal(
        alice
            .corp
            .create_purchase_order(pb::CreatePurchaseOrderRequest {
                amount: Some(gbp(0)),
                lifetime_seconds: 0,
            })
            .await,
        Code::InvalidArgument,
        "positive",
        "zero order",
    );
    expect_refusal(
        alice
            .corp
            .create_purchase_order(pb::CreatePurchaseOrderRequest {
                amount: Some(xeno_schemas::proto::common::v1::Money {
                    currency: "XYZ".to_owned(),
                    amount_minor: 1,
                }),
                lifetime_seconds: 0,
            })
            .await,
        Code::InvalidArgument,
        "not accepted here",
        "unknown currency",
    );
    expect_refusal(
        corp.anonymous()
            .await
            .create_purchase_order(pb::CreatePurchaseOrderRequest {
                amount: Some(gbp(POUND)),
                lifetime_seconds: 0,
            })
            .await,
        Code::Unauthenticated,
        "client certificate",
        "no client certificate",
    );
    expect_refusal(
        corp.anonymous()
            .await
            .register_client(pb::RegisterClientRequest {
                name: "Mallory".to_owned(),
                address: "x".to_owned(),
                charging_details: "x".to_owned(),
                privacy: 0,
                csr_pem:
                    "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                        .to_owned(),
            })
            .await,
        Code::InvalidArgument,
        "certificate signing request",
        "bad CSR",
    );
    let after = ledger_view(&mut [&mut alice, &mut bob, &mut server]).await;
    assert_eq!(
        before
            .iter()
            .map(|a| (available_gbp(a), reserved_gbp(a)))
            .collect::<Vec<_>>(),
        after
            .iter()
            .map(|a| (available_gbp(a), reserved_gbp(a)))
            .collect::<Vec<_>>(),
        "bad input moved money"
    );

    corp.admin()
        .await
        .revoke(pb::RevokeRequest {
            account_id: bob.id.clone(),
        })
        .await
        .expect("revoke");
    expect_refusal(
        bob.corp.get_account(pb::GetAccountRequest {}).await,
        Code::Unauthenticated,
        "revoked",
        "revoked certificate",
    );
    corp.admin()
        .await
        .revoke(pb::RevokeRequest {
            account_id: other_server.id.clone(),
        })
        .await
        .expect("revoke server");
    expect_refusal(
        other_server.validate(&signed, "s3", "Wasm").await,
        Code::Unauthenticated,
        "revoked",
        "revoked server",
    );
    corp.assert_invariants().await;
}

#[tokio::test]
async fn orders_from_another_corp_are_refused() {
    let first = TestCorp::start(&Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(&Backend::Sqlite, dir.path());
    config.corp_id = "corp-other".to_owned();
    let second = TestCorp::start_with(config, dir).await;
    let mut client = second
        .register_client("Dan", pb::PrivacyMode::Identified)
        .await;
    second.deposit(&client.id, 10 * POUND).await;
    let order = client.buy(POUND).await;
    assert!(order.issued.order_id.starts_with("corp-other:"));
    let mut server = first.register_server("xs1").await;
    let refused = server
        .validate(&client.sign(&order, None), "s", "Wasm")
        .await;
    expect_refusal(
        refused,
        Code::PermissionDenied,
        "issued by corp-other, not corp-t",
        "foreign corp's order",
    );
    // The server's certificate from the first corp means nothing to the second.
    let foreign = xeno_clients::transport::connect(
        &second.address(),
        &second.ca_pem(),
        Some(&server.credentials),
        &xeno_clients::transport::Peer::Corp(None),
    )
    .await;
    if let Ok(channel) = foreign {
        let answer = xeno_schemas::proto::corp::v1::xeno_corp_client::XenoCorpClient::new(channel)
            .get_account(pb::GetAccountRequest {})
            .await;
        assert!(
            answer.is_err(),
            "a foreign certificate must not be accepted"
        );
    }
}

#[tokio::test]
async fn state_survives_a_restart() {
    for backend in backends() {
        let mut corp = TestCorp::start(&backend).await;
        let mut alice = corp
            .register_client("Alice", pb::PrivacyMode::Identified)
            .await;
        let mut server = corp.register_server("xs1").await;
        corp.deposit(&alice.id, 10 * POUND).await;
        let order = alice.buy(5 * POUND).await;
        let order_id = order.issued.order_id.clone();
        server
            .validate(&alice.sign(&order, None), "s", "Wasm")
            .await
            .expect("validate");
        server.charge(&order_id, 1, POUND).await.expect("charge");
        corp.restart().await;
        let mut server = corp.harness().reconnect(&server).await;
        let mut alice = corp.harness().reconnect(&alice).await;
        let replay = server
            .charge(&order_id, 1, POUND)
            .await
            .expect("replay after restart");
        assert!(
            replay.replayed,
            "the charge acknowledged before the restart is remembered"
        );
        let next = server
            .charge(&order_id, 2, POUND)
            .await
            .expect("charge after restart");
        assert_eq!(next.charged_total.expect("total").amount_minor, 2 * POUND);
        assert_eq!(reserved_gbp(&alice.account().await), 5 * POUND);
        corp.assert_invariants().await;
    }
}

/// Alice, with 50 pounds, and an order of hers for 10 pounds bound to server `xs1`.
async fn bound_order(corp: &TestCorp) -> (Party, Party, String) {
    let mut alice = corp
        .register_client("Alice", pb::PrivacyMode::Identified)
        .await;
    let mut server = corp.register_server("xs1").await;
    corp.deposit(&alice.id, 50 * POUND).await;
    let order = alice.buy(10 * POUND).await;
    server
        .validate(&alice.sign(&order, None), "s1", "Wasm")
        .await
        .expect("validate");
    (alice, server, order.issued.order_id)
}

/// One raw `StreamCharges` stream, one charge at a time, so each answer is known to be its own.
struct ChargeStream {
    requests: tokio::sync::mpsc::Sender<pb::ChargeRequest>,
    answers: tonic::Streaming<pb::ChargeStreamReply>,
}

impl ChargeStream {
    async fn open(party: &mut Party) -> Result<ChargeStream, tonic::Status> {
        let (requests, outgoing) = tokio::sync::mpsc::channel(16);
        let answers = party
            .corp
            .stream_charges(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await?
            .into_inner();
        Ok(ChargeStream { requests, answers })
    }

    /// Sends one charge and returns its answer as the unary call would: a response or a status.
    async fn charge(
        &mut self,
        order_id: &str,
        sequence: u64,
        amount_minor: u64,
        usage_record_xml: String,
    ) -> Result<pb::ChargeResponse, tonic::Status> {
        self.requests
            .send(pb::ChargeRequest {
                order_id: order_id.to_owned(),
                sequence,
                amount: Some(gbp(amount_minor)),
                usage_record_xml,
            })
            .await
            .expect("the stream takes requests");
        let reply = self
            .answers
            .message()
            .await
            .expect("the stream stays healthy")
            .expect("the stream stays open after a refusal");
        assert_eq!(
            (reply.order_id.as_str(), reply.sequence),
            (order_id, sequence),
            "the answer names its charge"
        );
        match reply.result.expect("every answer has a result") {
            pb::charge_stream_reply::Result::Answer(answer) => Ok(answer),
            pb::charge_stream_reply::Result::Refusal(refusal) => Err(tonic::Status::new(
                Code::from(refusal.code),
                refusal.message,
            )),
        }
    }
}

#[tokio::test]
async fn charge_streams_follow_the_unary_rules_on_every_backend() {
    for backend in backends() {
        charge_streams_follow_the_unary_rules(&backend).await;
    }
}

async fn charge_streams_follow_the_unary_rules(backend: &Backend) {
    let corp = TestCorp::start(backend).await;
    let (mut alice, mut server, order_id) = bound_order(&corp).await;
    let mut other_server = corp.register_server("xs2").await;

    let mut anonymous = corp.anonymous().await;
    let (_keep_open, outgoing) = tokio::sync::mpsc::channel::<pb::ChargeRequest>(1);
    expect_refusal(
        anonymous
            .stream_charges(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await,
        Code::Unauthenticated,
        "certificate",
        "a stream without a client certificate",
    );

    let mut stream = ChargeStream::open(&mut server).await.expect("stream");
    let usage = |sequence, amount| usage_xml(&order_id, sequence, amount);
    let first = stream
        .charge(&order_id, 1, POUND, usage(1, POUND))
        .await
        .expect("charged");
    assert_eq!(first.outcome, pb::ChargeOutcome::Charged as i32);
    assert!(!first.replayed);
    let again = stream
        .charge(&order_id, 1, POUND, usage(1, POUND))
        .await
        .expect("replayed");
    assert!(
        again.replayed,
        "a retry on the stream replays the first answer"
    );
    assert_eq!(again.charged_total, first.charged_total);
    let before = ledger_view(&mut [&mut alice, &mut server]).await;
    expect_refusal(
        stream
            .charge(&order_id, 1, 2 * POUND, usage(1, 2 * POUND))
            .await,
        Code::AlreadyExists,
        "already used",
        "sequence reused with another amount, on the stream",
    );
    expect_refusal(
        stream.charge(&order_id, 0, POUND, usage(0, POUND)).await,
        Code::InvalidArgument,
        "start at 1",
        "sequence 0, on the stream",
    );
    expect_refusal(
        stream
            .charge(
                "corp-t:po-999",
                1,
                POUND,
                usage_xml("corp-t:po-999", 1, POUND),
            )
            .await,
        Code::NotFound,
        "no order",
        "unknown order, on the stream",
    );
    expect_refusal(
        stream
            .charge(&order_id, 2, POUND, "<UsageRecord/>".to_owned())
            .await,
        Code::InvalidArgument,
        "usage record: UsageRecord: missing <Order>",
        "malformed usage record, on the stream",
    );
    let mut intruder = ChargeStream::open(&mut other_server)
        .await
        .expect("another server's stream");
    expect_refusal(
        intruder.charge(&order_id, 2, POUND, usage(2, POUND)).await,
        Code::PermissionDenied,
        "bound to may charge",
        "wrong server charging, on its own stream",
    );
    assert_eq!(
        ledger_view(&mut [&mut alice, &mut server]).await,
        before,
        "refusals on a stream move no money"
    );
    let over = stream
        .charge(&order_id, 2, 20 * POUND, usage(2, 20 * POUND))
        .await
        .expect("an overspending charge is answered");
    assert_eq!(over.outcome, pb::ChargeOutcome::RefusedInsufficient as i32);
    assert_eq!(over.remaining.map(|m| m.amount_minor), Some(9 * POUND));
    let second = stream
        .charge(&order_id, 3, POUND, usage(3, POUND))
        .await
        .expect("the stream still charges after refusals");
    assert_eq!(
        second.charged_total.map(|m| m.amount_minor),
        Some(2 * POUND)
    );
    corp.assert_invariants().await;
}

#[tokio::test]
async fn a_charger_outlives_a_corp_restart() {
    let mut corp = TestCorp::start(&Backend::Sqlite).await;
    // Restart on the same port, as a real corp would.
    corp.config.listen = corp.running().grpc_addr;
    let (_, server, order_id) = bound_order(&corp).await;
    let charger = xeno_clients::charging::Charger::new(server.corp.clone());
    let request = |sequence| pb::ChargeRequest {
        order_id: order_id.clone(),
        sequence,
        amount: Some(gbp(POUND)),
        usage_record_xml: usage_xml(&order_id, sequence, POUND),
    };
    let first = charger.charge(request(1)).await.expect("charged");
    assert_eq!(first.outcome, pb::ChargeOutcome::Charged as i32);

    // Stopping is not held up by the open stream, and a charge while the corp is down is
    // UNAVAILABLE (to retry), not lost or refused.
    tokio::time::timeout(std::time::Duration::from_secs(10), corp.stop())
        .await
        .expect("the corp stops with a charge stream open");
    let down = charger.charge(request(2)).await;
    expect_refusal(
        down,
        Code::Unavailable,
        "",
        "a charge while the corp is down",
    );

    corp.restart().await;
    let mut retried = None;
    for _ in 0..50 {
        match charger.charge(request(2)).await {
            Ok(answer) => {
                retried = Some(answer);
                break;
            }
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(status) => panic!("the retry was refused: {status}"),
        }
    }
    let retried = retried.expect("the same charger charges again once the corp is back");
    assert_eq!(retried.outcome, pb::ChargeOutcome::Charged as i32);
    assert_eq!(
        retried.charged_total.map(|m| m.amount_minor),
        Some(2 * POUND)
    );
    corp.assert_invariants().await;
}

#[tokio::test]
async fn the_store_audit_finds_a_tampered_audit_trail() {
    let mut corp = TestCorp::start(&Backend::Sqlite).await;
    let (_, mut server, order_id) = bound_order(&corp).await;
    for sequence in 1..=2 {
        server
            .charge(&order_id, sequence, POUND)
            .await
            .expect("charged");
    }
    corp.assert_invariants().await;
    corp.stop().await;

    // Someone with access to the database copies a charge row and moves money without a charge.
    let database = rusqlite::Connection::open(corp.config.sqlite_path()).expect("database");
    database
        .execute(
            "INSERT INTO charges (id, order_id, sequence, amount_minor, outcome, usage_xml,
                usage_sha256, charged_total_after, remaining_after, recorded_at_ms)
             SELECT id + 1000, order_id, sequence, amount_minor, outcome, usage_xml, usage_sha256,
                charged_total_after, remaining_after, recorded_at_ms
             FROM charges WHERE sequence = 1",
            [],
        )
        .expect("duplicate a charge");
    database
        .execute(
            "UPDATE transfers SET amount = amount + 7 WHERE kind = 'charge' AND sequence = 2",
            [],
        )
        .expect("alter a transfer");
    drop(database);

    corp.restart().await;
    let report = corp
        .admin()
        .await
        .check_invariants(pb::CheckInvariantsRequest {})
        .await
        .expect("check")
        .into_inner();
    let found = |words: &str| report.violations.iter().any(|v| v.contains(words));
    assert!(
        found(&format!("charge 1 of order {order_id} is stored 2 times")),
        "{:?}",
        report.violations
    );
    assert!(
        found(&format!(
            "stored order {order_id}: its charges sum to {} but its charge transfers move {}",
            3 * POUND,
            2 * POUND + 7
        )),
        "{:?}",
        report.violations
    );
    assert!(
        found("transfers sum to"),
        "the altered transfer no longer matches the stored balances: {:?}",
        report.violations
    );
}

#[tokio::test]
async fn long_audit_trails_come_a_page_at_a_time_on_every_backend() {
    for backend in backends() {
        long_audit_trails_come_a_page_at_a_time(&backend).await;
    }
}

async fn long_audit_trails_come_a_page_at_a_time(backend: &Backend) {
    const CHARGES: u64 = 501;
    let corp = TestCorp::start(backend).await;
    let (alice, server, order_id) = bound_order(&corp).await;
    let charger = xeno_clients::charging::Charger::new(server.corp.clone());
    let charges = (1..=CHARGES).map(|sequence| {
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
                .expect("charged")
        }
    });
    futures::future::join_all(charges).await;

    let page = |after_sequence, limit| {
        let mut client = alice.corp.clone();
        let order_id = order_id.clone();
        async move {
            let page = client
                .audit_order(pb::AuditOrderRequest {
                    order_id,
                    after_sequence,
                    limit,
                })
                .await
                .expect("audit page")
                .into_inner();
            let sequences: Vec<u64> = page.charges.iter().map(|c| c.sequence).collect();
            (sequences, page.next_after_sequence)
        }
    };
    assert_eq!(page(0, 2).await, (vec![1, 2], 2));
    assert_eq!(page(2, 2).await, (vec![3, 4], 4));
    assert_eq!(
        page(499, 5).await,
        (vec![500, 501], 0),
        "the last page says so"
    );
    let (first, next) = page(0, 0).await;
    assert_eq!(
        (first.len(), next),
        (500, 500),
        "a page holds at most 500 charges"
    );
    assert_eq!(page(next, 0).await, (vec![501], 0));
    assert_eq!(page(CHARGES, 0).await, (vec![], 0), "past the end");
    corp.assert_invariants().await;
}
