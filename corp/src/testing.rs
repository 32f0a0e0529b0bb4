//! Driving the corp's state machine directly, with no gRPC, TLS or writer in the loop: a corp
//! over a SQLite store in a temporary directory, parties with real keys and certificates, and
//! the operations a client and a server perform, at times the test chooses. Effects are
//! persisted after every operation (as the writer does before it answers), so a test can
//! "crash" the corp at any point and restart it from what is durable.

use crate::ca::{CertificateAuthority, certificate_serial};
use crate::config::Config;
use crate::core::{ChargeAnswer, ClientRegistration, Corp, ServerRegistration, UsageAnnotation};
use crate::error::CorpResult;
use crate::model::{Effect, MachineSpec, Privacy, Settlement};
use crate::store::Store;
use std::sync::Arc;
use xeno_clients::identity::key_and_csr;
use xeno_schemas::Document;
use xeno_schemas::documents::{Money, PurchaseOrder, Restrictions, UsageRecord};
use xeno_schemas::signing::{SigningKey, pem_to_der};

/// 2027-01-15T08:00:00Z: the fixture's clock starts here.
pub(crate) const EPOCH_MS: i64 = 1_800_000_000_000;

/// A registered party: its account id, the serial its calls present, and its key.
pub(crate) struct Actor {
    pub(crate) id: String,
    pub(crate) serial: String,
    pub(crate) key: SigningKey,
}

/// A corp under test, with its store and clock.
pub(crate) struct Fixture {
    pub(crate) config: Config,
    pub(crate) corp: Corp,
    pub(crate) store: Box<dyn Store>,
    ca: Arc<CertificateAuthority>,
    pub(crate) now_ms: i64,
    _dir: tempfile::TempDir,
}

pub(crate) fn gbp(minor: u64) -> Money {
    Money {
        currency: "GBP".parse().expect("GBP"),
        minor,
    }
}

fn actor(certificate_pem: &str, key_pem: &str, id: String) -> Actor {
    let der = pem_to_der(certificate_pem, "CERTIFICATE").expect("certificate PEM");
    Actor {
        id,
        serial: certificate_serial(&der).expect("serial"),
        key: SigningKey::from_pkcs8_der(&pem_to_der(key_pem, "PRIVATE KEY").expect("key PEM"))
            .expect("key"),
    }
}

impl Fixture {
    /// A fresh corp (`corp-t`) whose policy `adjust` may change.
    pub(crate) fn new(adjust: impl FnOnce(&mut Config)) -> Fixture {
        // In memory where the machine has it: every operation is made durable, and the
        // simulation makes thousands.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("tempdir");
        let mut config = Config {
            corp_id: "corp-t".to_owned(),
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        adjust(&mut config);
        let ca = Arc::new(
            CertificateAuthority::load_or_create(&config.data_dir, &config.corp_id).expect("CA"),
        );
        let mut store = crate::store::open(&config).expect("store");
        let snapshot = store.load().expect("load");
        let corp = Corp::new(&config, Arc::clone(&ca), snapshot).expect("corp");
        Fixture {
            config,
            corp,
            store,
            ca,
            now_ms: EPOCH_MS,
            _dir: dir,
        }
    }

    /// Runs `operation` on the corp at the fixture's time and persists its effects if it
    /// succeeded (a refused operation may have left effects it must not: it leaves none).
    pub(crate) fn apply<T>(
        &mut self,
        operation: impl FnOnce(&mut Corp, i64, &mut Vec<Effect>) -> CorpResult<T>,
    ) -> CorpResult<T> {
        let mut effects = Vec::new();
        let result = operation(&mut self.corp, self.now_ms, &mut effects);
        if result.is_err() {
            assert!(
                effects.is_empty(),
                "a refused operation emitted effects: {effects:?}"
            );
        }
        self.store.persist(&effects).expect("persist");
        result
    }

    /// Forgets everything in memory and starts again from the store, as after a crash.
    pub(crate) fn restart(&mut self) {
        let snapshot = self.store.load().expect("load");
        self.corp = Corp::new(&self.config, Arc::clone(&self.ca), snapshot).expect("restart");
    }

    /// Asserts the ledger's invariants, in memory and in the store.
    pub(crate) fn assert_invariants(&mut self) {
        let violations = self.corp.violations();
        assert!(violations.is_empty(), "ledger violations: {violations:?}");
        let audit = self.store.audit().expect("store audit");
        assert!(
            audit.violations.is_empty(),
            "store audit: {:?}",
            audit.violations
        );
    }

    pub(crate) fn client(&mut self, name: &str) -> Actor {
        let (key_pem, csr_pem) = key_and_csr(name).expect("csr");
        let registered = self
            .apply(|corp, now, effects| {
                corp.register_client(
                    now,
                    ClientRegistration {
                        name: name.to_owned(),
                        address: "1 Test Road".to_owned(),
                        charging_details: "card".to_owned(),
                        privacy: Privacy::Identified,
                        csr_pem,
                    },
                    effects,
                )
            })
            .expect("client registers");
        actor(&registered.certificate_pem, &key_pem, registered.account_id)
    }

    pub(crate) fn server(&mut self, name: &str) -> Actor {
        let (key_pem, csr_pem) = key_and_csr(name).expect("csr");
        let registered = self
            .apply(|corp, now, effects| {
                corp.register_server(
                    now,
                    ServerRegistration {
                        owner_name: format!("{name} Hosting"),
                        owner_address: "2 Rack Row".to_owned(),
                        payout_details: "bank".to_owned(),
                        machine: MachineSpec {
                            architecture: "x86_64".to_owned(),
                            cpu_model: String::new(),
                            cpu_cores: 2,
                            memory_mb: 4096,
                            network_mbps: 100,
                            xis_node: String::new(),
                            endpoint: format!("{name}.test:7443"),
                        },
                        csr_pem,
                    },
                    effects,
                )
            })
            .expect("server registers");
        actor(&registered.certificate_pem, &key_pem, registered.account_id)
    }

    pub(crate) fn deposit(&mut self, client: &Actor, minor: u64) {
        self.apply(|corp, now, effects| corp.deposit(now, &client.id, gbp(minor), effects))
            .expect("deposit");
    }

    /// An order bought by `client` for `minor`, lasting `lifetime_seconds`, restricted to
    /// `server` and signed by the client.
    pub(crate) fn buy(
        &mut self,
        client: &Actor,
        minor: u64,
        lifetime_seconds: u64,
        server: Option<&Actor>,
    ) -> CorpResult<PurchaseOrder> {
        let (xml, _) = self.apply(|corp, now, effects| {
            corp.create_order(now, &client.serial, gbp(minor), lifetime_seconds, effects)
        })?;
        Ok(match server {
            Some(server) => sign_for(&xml, client, server),
            None => {
                let mut order = PurchaseOrder::parse(xml.as_bytes()).expect("an order parses");
                order.client_signature = Some(
                    client
                        .key
                        .sign(&order.client_signed_bytes())
                        .expect("signing"),
                );
                order
            }
        })
    }

    pub(crate) fn validate(
        &mut self,
        server: &Actor,
        order: &PurchaseOrder,
        session: &str,
    ) -> CorpResult<crate::core::Validation> {
        let requirements = requirements_xml();
        self.apply(|corp, now, effects| {
            corp.validate(
                now,
                &server.serial,
                &order.to_xml(),
                session,
                &requirements,
                effects,
            )
        })
    }

    pub(crate) fn charge(
        &mut self,
        server: &Actor,
        order_id: &str,
        sequence: u64,
        minor: u64,
    ) -> CorpResult<ChargeAnswer> {
        let usage = UsageAnnotation::parse(&usage_xml(order_id, sequence, minor))?;
        self.apply(|corp, now, effects| {
            corp.charge(
                now,
                &server.serial,
                order_id,
                sequence,
                gbp(minor),
                usage,
                effects,
            )
        })
    }

    pub(crate) fn close(&mut self, caller: &Actor, order_id: &str) -> CorpResult<Settlement> {
        self.apply(|corp, now, effects| corp.close(now, &caller.serial, order_id, effects))
    }
}

/// The requirements every test session has.
pub(crate) fn requirements_xml() -> String {
    xeno_schemas::documents::EnvironmentalRequirements::new("test", "Wasm").to_xml()
}

/// The order in `xml`, restricted by its client to `server` and signed.
pub(crate) fn sign_for(xml: &str, client: &Actor, server: &Actor) -> PurchaseOrder {
    let mut order = PurchaseOrder::parse(xml.as_bytes()).expect("an order parses");
    order.client_restrictions = Some(Restrictions {
        servers: Some(vec![server.id.clone()]),
        ..Restrictions::default()
    });
    order.client_signature = Some(
        client
            .key
            .sign(&order.client_signed_bytes())
            .expect("signing"),
    );
    order
}

/// A usage record as a server annotates a charge.
pub(crate) fn usage_xml(order_id: &str, sequence: u64, minor: u64) -> String {
    let start = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time")
        + time::Duration::seconds(i64::try_from(sequence).unwrap_or(0));
    UsageRecord {
        order_id: order_id.to_owned(),
        session_id: "s-1".to_owned(),
        sequence,
        period_start: start,
        period_end: start + time::Duration::seconds(1),
        cpu_ms: 150,
        memory_mb_ms: 64_000,
        network_bytes_in: None,
        network_bytes_out: None,
        fuel: None,
        syscalls: None,
        output_bytes: None,
        charge: gbp(minor),
        activity: Some(format!("charge {sequence}")),
        tasks: Vec::new(),
        extensions: Vec::new(),
    }
    .to_xml()
}
