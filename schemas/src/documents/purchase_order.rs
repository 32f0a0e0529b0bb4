//! `PurchaseOrder`: a client's commitment to fund a session (paper, section II-B.1, "create
//! purchase order"). The corp issues the `Issued` part with its own `Restrictions` and signs it
//! (`CorpSignature`); the client may add `ClientRestrictions`, which can only narrow the corp's,
//! and signs everything before its signature (`ClientSignature`). A server presents the whole
//! document to the corp when it validates the order.
//!
//! What each signature covers (canonical compact form of each part, concatenated):
//! - `CorpSignature`: `Issued`.
//! - `ClientSignature`: `Issued`, `CorpSignature`, then `ClientRestrictions` if present.

use super::common::{
    AMOUNT_TYPE, BOOLEAN_TYPE, CURRENCY_TYPE, Money, OBJECT_ID_TYPE, Reader, SHA256_TYPE,
    TIMESTAMP_TYPE, money_element,
};
use super::document::impl_document;
use super::requirements::{ENV_TYPE, MEGABYTES_TYPE};
use super::signature::{SIGNATURE_CONTENT, Signature, read_signature, signature_element};
use crate::schema::model::{
    Content, DocumentSchema, ElementDecl, SimpleKind, SimpleType, leaf, one, optional, repeated,
    required_attribute,
};
use crate::schema::types::format_date_time;
use crate::schema::validate::Problem;
use crate::xml::{Element, Layout, Limits, write_document};
use time::OffsetDateTime;

/// Most servers a restriction may name.
pub const SERVERS_MAX: u32 = 64;
/// Most environment types a restriction may name.
pub const ENV_TYPES_MAX: u32 = 16;

static CPU_MSPS_TYPE: SimpleType = SimpleType {
    name: "CPUmspsLimit",
    doc: "A cap on CPU milliseconds per second.",
    kind: SimpleKind::Unsigned { max: 1_000_000 },
};

static ORDER_ID: ElementDecl = leaf(
    "OrderId",
    &OBJECT_ID_TYPE,
    "The order's id, unique within its corp.",
);
static CORP: ElementDecl = leaf("Corp", &OBJECT_ID_TYPE, "The issuing XenoCorp.");
static CLIENT: ElementDecl = leaf(
    "Client",
    &OBJECT_ID_TYPE,
    "The client's account at the corp: a name or, for pseudonymous clients, an opaque id.",
);
static AMOUNT: ElementDecl = ElementDecl {
    name: "Amount",
    doc: "The most that may be charged against the order; ring-fenced at the corp when issued.",
    attributes: &[required_attribute(
        "currency",
        &CURRENCY_TYPE,
        "The currency.",
    )],
    content: Content::Simple(&AMOUNT_TYPE),
};
static ISSUED_AT: ElementDecl = leaf(
    "IssuedAt",
    &TIMESTAMP_TYPE,
    "When the corp issued the order.",
);
static EXPIRY: ElementDecl = leaf(
    "Expiry",
    &TIMESTAMP_TYPE,
    "After this instant the order cannot be validated or charged.",
);

static MUST_VALIDATE: ElementDecl = leaf(
    "MustValidate",
    &BOOLEAN_TYPE,
    "The order must be validated with the corp before the server starts work.",
);
static SERVER: ElementDecl = leaf(
    "Server",
    &SHA256_TYPE,
    "A server (by id: its key fingerprint).",
);
static SERVERS: ElementDecl = ElementDecl {
    name: "Servers",
    doc: "Only these servers may validate and charge the order.",
    attributes: &[],
    content: Content::Sequence(&[repeated(&SERVER, 1, SERVERS_MAX)]),
};
static ENV_TYPES: ElementDecl = ElementDecl {
    name: "EnvTypes",
    doc: "Only sessions of these environment types may be funded.",
    attributes: &[],
    content: Content::Sequence(&[repeated(&ENV_TYPE, 1, ENV_TYPES_MAX)]),
};
static MAX_CPU: ElementDecl = leaf(
    "MaxCPUmsps",
    &CPU_MSPS_TYPE,
    "The session may not ask for more CPU than this.",
);
static MAX_MEMORY: ElementDecl = leaf(
    "MaxMemoryMB",
    &MEGABYTES_TYPE,
    "The session may not ask for more memory than this.",
);
static NOT_AFTER: ElementDecl = leaf(
    "NotAfter",
    &TIMESTAMP_TYPE,
    "An expiry earlier than the order's own.",
);
static MAX_AMOUNT: ElementDecl = ElementDecl {
    name: "MaxAmount",
    doc: "A cap lower than the order's amount.",
    attributes: &[required_attribute(
        "currency",
        &CURRENCY_TYPE,
        "The currency, which must be the order's.",
    )],
    content: Content::Simple(&AMOUNT_TYPE),
};
static RESTRICTION_PARTICLES: &[crate::schema::model::Particle] = &[
    optional(&MUST_VALIDATE),
    optional(&SERVERS),
    optional(&ENV_TYPES),
    optional(&MAX_CPU),
    optional(&MAX_MEMORY),
    optional(&NOT_AFTER),
    optional(&MAX_AMOUNT),
];
static RESTRICTIONS: ElementDecl = ElementDecl {
    name: "Restrictions",
    doc: "Conditions the corp sets for honouring the order.",
    attributes: &[],
    content: Content::Sequence(RESTRICTION_PARTICLES),
};
static ISSUED: ElementDecl = ElementDecl {
    name: "Issued",
    doc: "The part of the order the corp issues and signs.",
    attributes: &[],
    content: Content::Sequence(&[
        one(&ORDER_ID),
        one(&CORP),
        one(&CLIENT),
        one(&AMOUNT),
        one(&ISSUED_AT),
        one(&EXPIRY),
        optional(&RESTRICTIONS),
    ]),
};
static CORP_SIGNATURE: ElementDecl = ElementDecl {
    name: "CorpSignature",
    doc: "The corp's signature over Issued.",
    attributes: &[],
    content: SIGNATURE_CONTENT,
};
static CLIENT_RESTRICTIONS: ElementDecl = ElementDecl {
    name: "ClientRestrictions",
    doc: "Further conditions added by the client; each may only narrow what the corp allowed.",
    attributes: &[],
    content: Content::Sequence(RESTRICTION_PARTICLES),
};
static CLIENT_SIGNATURE: ElementDecl = ElementDecl {
    name: "ClientSignature",
    doc: "The client's signature over Issued, CorpSignature and ClientRestrictions.",
    attributes: &[],
    content: SIGNATURE_CONTENT,
};
static ROOT: ElementDecl = ElementDecl {
    name: "PurchaseOrder",
    doc: "A purchase order (paper, section II-B.1): issued and signed by a corp, narrowed and signed by its client.",
    attributes: &[],
    content: Content::Sequence(&[
        one(&ISSUED),
        one(&CORP_SIGNATURE),
        optional(&CLIENT_RESTRICTIONS),
        optional(&CLIENT_SIGNATURE),
    ]),
};

/// The schema of [`PurchaseOrder`].
pub static SCHEMA: DocumentSchema = DocumentSchema {
    root: &ROOT,
    limits: Limits::DEFAULT,
    xsd_file: "PurchaseOrder.xsd",
};

/// Conditions on an order. Absent fields impose nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restrictions {
    /// Must be validated before work starts.
    pub must_validate: Option<bool>,
    /// Only these servers (by id).
    pub servers: Option<Vec<String>>,
    /// Only these environment types.
    pub env_types: Option<Vec<String>>,
    /// Cap on CPUmsps.
    pub max_cpu_msps: Option<u64>,
    /// Cap on MemoryMB.
    pub max_memory_mb: Option<u64>,
    /// An earlier expiry.
    pub not_after: Option<OffsetDateTime>,
    /// A lower cap on the amount.
    pub max_amount: Option<Money>,
}

impl Restrictions {
    /// Whether nothing is restricted.
    pub fn is_empty(&self) -> bool {
        *self == Restrictions::default()
    }
}

/// The corp-issued part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedOrder {
    /// Order id.
    pub order_id: String,
    /// Issuing corp.
    pub corp: String,
    /// Client account.
    pub client: String,
    /// Ring-fenced amount.
    pub amount: Money,
    /// Issue time.
    pub issued_at: OffsetDateTime,
    /// Expiry.
    pub expires_at: OffsetDateTime,
    /// The corp's conditions.
    pub restrictions: Restrictions,
}

/// A parsed `PurchaseOrder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseOrder {
    /// What the corp issued.
    pub issued: IssuedOrder,
    /// The corp's signature over `issued`.
    pub corp_signature: Signature,
    /// The client's narrowing conditions, if it added any.
    pub client_restrictions: Option<Restrictions>,
    /// The client's signature, once it has signed.
    pub client_signature: Option<Signature>,
}

impl PurchaseOrder {
    /// The bytes the corp signs: the canonical form of `Issued`.
    pub fn corp_signed_bytes(issued: &IssuedOrder) -> Vec<u8> {
        write_document(&issued_element(issued), Layout::Compact).into_bytes()
    }

    /// The bytes the client signs: `Issued`, `CorpSignature` and `ClientRestrictions`.
    pub fn client_signed_bytes(&self) -> Vec<u8> {
        let mut bytes = Self::corp_signed_bytes(&self.issued);
        bytes.extend(
            write_document(
                &signature_element("CorpSignature", &self.corp_signature),
                Layout::Compact,
            )
            .bytes(),
        );
        if let Some(restrictions) = &self.client_restrictions {
            bytes.extend(
                write_document(
                    &restrictions_element("ClientRestrictions", restrictions),
                    Layout::Compact,
                )
                .bytes(),
            );
        }
        bytes
    }
}

fn read_restrictions(reader: &Reader<'_, '_>, currency: &Money) -> Result<Restrictions, Problem> {
    let list = |name: &str, item: &str| -> Result<Option<Vec<String>>, Problem> {
        reader
            .child(name)
            .map(|list| list.children(item).iter().map(Reader::text).collect())
            .transpose()
    };
    let max_amount = reader.child_money("MaxAmount")?;
    if let Some(max_amount) = &max_amount
        && max_amount.currency != currency.currency
    {
        let element = reader.required_child("MaxAmount")?;
        return Err(element.problem(format!(
            "currency {} differs from the order's {}",
            max_amount.currency, currency.currency
        )));
    }
    Ok(Restrictions {
        must_validate: reader.child_boolean("MustValidate")?,
        servers: list("Servers", "Server")?,
        env_types: list("EnvTypes", "EnvType")?,
        max_cpu_msps: reader.child_unsigned("MaxCPUmsps")?,
        max_memory_mb: reader.child_unsigned("MaxMemoryMB")?,
        not_after: reader.child_timestamp("NotAfter")?,
        max_amount,
    })
}

fn read(root: &Reader<'_, '_>) -> Result<PurchaseOrder, Problem> {
    let issued_reader = root.required_child("Issued")?;
    let amount = issued_reader.required_money("Amount")?;
    let issued_at = issued_reader.required_timestamp("IssuedAt")?;
    let expires_at = issued_reader.required_timestamp("Expiry")?;
    if expires_at <= issued_at {
        return Err(issued_reader
            .required_child("Expiry")?
            .problem("expiry must be after the issue time"));
    }
    let restrictions = match issued_reader.child("Restrictions") {
        Some(restrictions) => read_restrictions(&restrictions, &amount)?,
        None => Restrictions::default(),
    };
    let client_restrictions = root
        .child("ClientRestrictions")
        .map(|r| read_restrictions(&r, &amount))
        .transpose()?;
    Ok(PurchaseOrder {
        issued: IssuedOrder {
            order_id: issued_reader.required_text("OrderId")?,
            corp: issued_reader.required_text("Corp")?,
            client: issued_reader.required_text("Client")?,
            amount,
            issued_at,
            expires_at,
            restrictions,
        },
        corp_signature: read_signature(&root.required_child("CorpSignature")?)?,
        client_restrictions,
        client_signature: root
            .child("ClientSignature")
            .map(|s| read_signature(&s))
            .transpose()?,
    })
}

fn restrictions_element(name: &str, restrictions: &Restrictions) -> Element {
    let mut element = Element::new(name).with_optional_leaf(
        "MustValidate",
        restrictions.must_validate.map(|v| v.to_string()),
    );
    if let Some(servers) = &restrictions.servers {
        let mut list = Element::new("Servers");
        for server in servers {
            list = list.with_leaf("Server", server.clone());
        }
        element = element.with_child(list);
    }
    if let Some(env_types) = &restrictions.env_types {
        let mut list = Element::new("EnvTypes");
        for env_type in env_types {
            list = list.with_leaf("EnvType", env_type.clone());
        }
        element = element.with_child(list);
    }
    element = element
        .with_optional_leaf(
            "MaxCPUmsps",
            restrictions.max_cpu_msps.map(|v| v.to_string()),
        )
        .with_optional_leaf(
            "MaxMemoryMB",
            restrictions.max_memory_mb.map(|v| v.to_string()),
        )
        .with_optional_leaf("NotAfter", restrictions.not_after.map(format_date_time));
    if let Some(max_amount) = &restrictions.max_amount {
        element = element.with_child(money_element("MaxAmount", max_amount));
    }
    element
}

fn issued_element(issued: &IssuedOrder) -> Element {
    let mut element = Element::new("Issued")
        .with_leaf("OrderId", issued.order_id.clone())
        .with_leaf("Corp", issued.corp.clone())
        .with_leaf("Client", issued.client.clone())
        .with_child(money_element("Amount", &issued.amount))
        .with_leaf("IssuedAt", format_date_time(issued.issued_at))
        .with_leaf("Expiry", format_date_time(issued.expires_at));
    if !issued.restrictions.is_empty() {
        element = element.with_child(restrictions_element("Restrictions", &issued.restrictions));
    }
    element
}

fn write(order: &PurchaseOrder) -> Element {
    let mut root = Element::new("PurchaseOrder")
        .with_child(issued_element(&order.issued))
        .with_child(signature_element("CorpSignature", &order.corp_signature));
    if let Some(restrictions) = &order.client_restrictions {
        root = root.with_child(restrictions_element("ClientRestrictions", restrictions));
    }
    if let Some(signature) = &order.client_signature {
        root = root.with_child(signature_element("ClientSignature", signature));
    }
    root
}

impl_document!(PurchaseOrder, SCHEMA, read, write);
