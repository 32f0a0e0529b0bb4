//! The corp's rules, tested on the state machine itself.

use crate::error::CorpError;
use crate::testing::Fixture;

/// A client used to be able to close its bound order as soon as it expired, while its server
/// was still within the grace period for its final charge: that charge was then refused
/// ("the order is closed") and the last interval went unpaid.
#[test]
fn a_client_cannot_settle_before_the_servers_final_charge_can_land() {
    let mut fixture = Fixture::new(|config| config.policy.charge_grace_seconds = 300);
    let client = fixture.client("alice");
    let server = fixture.server("xs1");
    fixture.deposit(&client, 10_000);
    let order = fixture
        .buy(&client, 5_000, 60, Some(&server))
        .expect("order");
    let order_id = order.issued.order_id.clone();
    fixture.validate(&server, &order, "s-1").expect("validated");
    fixture
        .charge(&server, &order_id, 1, 100)
        .expect("first charge");

    // Just past the expiry, within the grace period.
    fixture.now_ms += 61_000;
    let refused = fixture
        .close(&client, &order_id)
        .expect_err("the client closes early");
    let CorpError::FailedPrecondition(message) = &refused else {
        panic!("expected FAILED_PRECONDITION, got {refused:?}");
    };
    assert!(
        message.contains("may still make its final charge until"),
        "{message}"
    );
    // The server's final charge, for usage before the expiry, lands.
    let last = fixture
        .charge(&server, &order_id, 2, 250)
        .expect("final charge");
    assert_eq!(last.charged_total.minor, 350);
    let settled = fixture.close(&server, &order_id).expect("server settles");
    assert_eq!((settled.spent, settled.returned), (350, 4_650));
    assert_eq!(
        fixture.close(&client, &order_id).expect("closing again"),
        settled,
        "once settled, the client's close returns the settlement"
    );
    fixture.assert_invariants();
}

#[test]
fn a_client_may_settle_once_the_grace_period_is_over_without_its_server() {
    let mut fixture = Fixture::new(|config| config.policy.charge_grace_seconds = 300);
    let client = fixture.client("alice");
    let server = fixture.server("xs1");
    fixture.deposit(&client, 10_000);
    let order = fixture
        .buy(&client, 5_000, 60, Some(&server))
        .expect("order");
    let order_id = order.issued.order_id.clone();
    fixture.validate(&server, &order, "s-1").expect("validated");
    fixture.charge(&server, &order_id, 1, 100).expect("charge");
    fixture.now_ms += 60_000 + 300_000 + 1;
    let late = fixture
        .charge(&server, &order_id, 2, 100)
        .expect_err("a charge after the grace period");
    assert!(matches!(late, CorpError::FailedPrecondition(_)), "{late:?}");
    let settled = fixture.close(&client, &order_id).expect("client settles");
    assert_eq!((settled.spent, settled.returned), (100, 4_900));
    fixture.assert_invariants();
}

/// One session on one server used to be able to bind two orders, so a server could charge a
/// session to both.
#[test]
fn one_session_is_funded_by_one_order() {
    let mut fixture = Fixture::new(|_| {});
    let client = fixture.client("alice");
    let server = fixture.server("xs1");
    fixture.deposit(&client, 10_000);
    let first = fixture.buy(&client, 1_000, 600, None).expect("first");
    let second = fixture.buy(&client, 1_000, 600, None).expect("second");
    fixture
        .validate(&server, &first, "s-1")
        .expect("first binds");
    let refused = fixture
        .validate(&server, &second, "s-1")
        .expect_err("a second order for the same session");
    let CorpError::AlreadyExists(message) = &refused else {
        panic!("expected ALREADY_EXISTS, got {refused:?}");
    };
    assert!(message.contains(&first.issued.order_id), "{message}");
    // The rule survives a restart from the store, and the second order still funds another
    // session.
    fixture.restart();
    assert!(fixture.validate(&server, &second, "s-1").is_err());
    fixture
        .validate(&server, &second, "s-2")
        .expect("another session");
    fixture.assert_invariants();
}

/// A display name with U+202E RIGHT-TO-LEFT OVERRIDE used to be accepted and shown as it was.
#[test]
fn names_with_bidirectional_controls_are_refused() {
    let mut fixture = Fixture::new(|_| {});
    let (_, csr_pem) = xeno_clients::identity::key_and_csr("m").expect("csr");
    let refused = fixture
        .apply(|corp, now, effects| {
            corp.register_client(
                now,
                crate::core::ClientRegistration {
                    name: "Mallory \u{202e}gnp.exe".to_owned(),
                    address: "1 Test Road".to_owned(),
                    charging_details: "card".to_owned(),
                    privacy: crate::model::Privacy::Identified,
                    csr_pem,
                },
                effects,
            )
        })
        .expect_err("a bidirectional override in a name");
    let CorpError::InvalidArgument(message) = &refused else {
        panic!("expected INVALID_ARGUMENT, got {refused:?}");
    };
    assert!(
        message.contains("name contains the character U+202E"),
        "{message}"
    );
    fixture.assert_invariants();
}
