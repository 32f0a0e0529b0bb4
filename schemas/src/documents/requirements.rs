//! `EnvironmentalRequirements`: what a client asks of a XenoServer when it creates a session
//! (paper, section II-A.3): the execution environment, network, quality of service, spending
//! constraints, and extensions for task manager plugins.
//!
//! ```
//! use xeno_schemas::documents::{Document, EnvironmentalRequirements};
//!
//! let paper = br#"<?xml version="1.0" encoding="UTF-8"?>
//! <EnvironmentalRequirements>
//!   <Basic><EnvName>MyEnvironment</EnvName><EnvType>Linux</EnvType><EnvKernel>2.4.18</EnvKernel></Basic>
//!   <Network><EnvIPAddresses>1</EnvIPAddresses></Network>
//!   <QoS><CPUmsps>150</CPUmsps><NetMbps>5</NetMbps></QoS>
//! </EnvironmentalRequirements>"#;
//! let requirements = EnvironmentalRequirements::parse(paper)?;
//! assert_eq!(requirements.env_type, "Linux");
//! assert_eq!(requirements.qos.cpu_msps, Some(150));
//! assert_eq!(requirements.net_kbps, Some(5_000));
//! # Ok::<(), xeno_schemas::DocumentErrors>(())
//! ```

use super::common::{
    AMOUNT_TYPE, CURRENCY_TYPE, EXTENSIONS, IDENTIFIER_TYPE, Money, NAME, Reader, VERSION_TYPE,
    extensions_element, money_element,
};
use super::document::impl_document;
use crate::schema::model::{
    Content, DocumentSchema, ElementDecl, Particle, SimpleKind, SimpleType, Term, leaf, one,
    optional, required_attribute,
};
use crate::schema::validate::Problem;
use crate::xml::{Element, Limits};

/// Whole milliseconds of CPU per second of real time; 1,000 is one core, and no server has more
/// than a thousand cores.
static CPU_MSPS_TYPE: SimpleType = SimpleType {
    name: "CPUmsps",
    doc: "Milliseconds of CPU time per second of real time (1000 = one whole core).",
    kind: SimpleKind::Unsigned { max: 1_000_000 },
};

static MILLISECONDS_TYPE: SimpleType = SimpleType {
    name: "Milliseconds",
    doc: "A duration in milliseconds.",
    kind: SimpleKind::Unsigned { max: 86_400_000 },
};

/// Megabits per second, to the kilobit: `5`, `0.5`, `2.125`.
pub(crate) static MBPS_TYPE: SimpleType = SimpleType {
    name: "Mbps",
    doc: "Network bandwidth in megabits per second, with up to three decimals.",
    kind: SimpleKind::Decimal {
        signed: false,
        integer_digits: 7,
        fraction_digits: 3,
    },
};

/// Megabytes, up to a petabyte.
pub(crate) static MEGABYTES_TYPE: SimpleType = SimpleType {
    name: "Megabytes",
    doc: "A size in megabytes (2^20 bytes).",
    kind: SimpleKind::Unsigned { max: 1_000_000_000 },
};

static IP_ADDRESSES_TYPE: SimpleType = SimpleType {
    name: "IPAddressCount",
    doc: "How many globally routable IP addresses the environment needs (0 means NAT only).",
    kind: SimpleKind::Unsigned { max: 256 },
};

static SECONDS_TYPE: SimpleType = SimpleType {
    name: "Seconds",
    doc: "A duration in whole seconds (at most a year).",
    kind: SimpleKind::Unsigned { max: 31_622_400 },
};

static ENV_NAME: ElementDecl = leaf("EnvName", &NAME, "The client's name for this environment.");
pub(crate) static ENV_TYPE: ElementDecl = leaf(
    "EnvType",
    &IDENTIFIER_TYPE,
    "The kind of execution environment: Linux, Wasm, or any type a task manager plugin serves.",
);
static ENV_KERNEL: ElementDecl = leaf(
    "EnvKernel",
    &VERSION_TYPE,
    "For operating-system environments: the kernel (ABI) version the environment must present.",
);
static ENV_RUNTIME: ElementDecl = leaf(
    "EnvRuntime",
    &VERSION_TYPE,
    "For language runtimes (Wasm and plugins): the runtime version required.",
);
static ENV_IMAGE: ElementDecl = leaf(
    "EnvImage",
    &IDENTIFIER_TYPE,
    "For operating-system environments: the root file system image the environment's / starts \
     from, by the name servers advertise (Image), such as debian-12-python; the session's \
     scratch storage is layered over it. Without it / is the scratch storage alone.",
);
static BASIC: ElementDecl = ElementDecl {
    name: "Basic",
    doc: "What kind of environment is needed.",
    attributes: &[],
    content: Content::Sequence(&[
        one(&ENV_NAME),
        one(&ENV_TYPE),
        Particle {
            term: Term::Choice(&[&ENV_KERNEL, &ENV_RUNTIME]),
            min: 0,
            max: 1,
        },
        optional(&ENV_IMAGE),
    ]),
};

static ENV_IP_ADDRESSES: ElementDecl = leaf(
    "EnvIPAddresses",
    &IP_ADDRESSES_TYPE,
    "Globally valid IP addresses to allocate to the environment, rather than network address translation.",
);
static NET_MBPS: ElementDecl = leaf(
    "NetMbps",
    &MBPS_TYPE,
    "Network bandwidth for the environment, like installing a network interface of that speed on \
     the server (not a network-wide guarantee). May be given here or under QoS, not both.",
);
static NETWORK: ElementDecl = ElementDecl {
    name: "Network",
    doc: "Network needs.",
    attributes: &[],
    content: Content::Sequence(&[optional(&ENV_IP_ADDRESSES), optional(&NET_MBPS)]),
};

static CPU_MSPS: ElementDecl = leaf(
    "CPUmsps",
    &CPU_MSPS_TYPE,
    "Mean CPU rate: milliseconds of CPU time guaranteed per second of real time.",
);
static CPU_PEAK_MSPS: ElementDecl = leaf(
    "CPUPeakmsps",
    &CPU_MSPS_TYPE,
    "Peak CPU rate the session may reach while it has burst credit; at least CPUmsps.",
);
static CPU_BURST_MS: ElementDecl = leaf(
    "CPUBurstms",
    &MILLISECONDS_TYPE,
    "Burst credit: CPU milliseconds the session may use above its mean rate, earned back while idle.",
);
static NET_PEAK_MBPS: ElementDecl = leaf(
    "NetPeakMbps",
    &MBPS_TYPE,
    "Peak network rate; at least the mean NetMbps.",
);
static MEMORY_MB: ElementDecl = leaf(
    "MemoryMB",
    &MEGABYTES_TYPE,
    "Memory for the environment, in megabytes.",
);
static DISK_MB: ElementDecl = leaf(
    "DiskMB",
    &MEGABYTES_TYPE,
    "Scratch storage for the environment, in megabytes.",
);
static QOS: ElementDecl = ElementDecl {
    name: "QoS",
    doc: "Quality of service: resources the session is guaranteed while it runs.",
    attributes: &[],
    content: Content::Sequence(&[
        optional(&CPU_MSPS),
        optional(&CPU_PEAK_MSPS),
        optional(&CPU_BURST_MS),
        optional(&NET_MBPS),
        optional(&NET_PEAK_MBPS),
        optional(&MEMORY_MB),
        optional(&DISK_MB),
    ]),
};

pub(crate) static MAX_SPEND: ElementDecl = ElementDecl {
    name: "MaxSpend",
    doc: "The most the client will pay for this session.",
    attributes: &[required_attribute(
        "currency",
        &CURRENCY_TYPE,
        "The currency of the amount.",
    )],
    content: Content::Simple(&AMOUNT_TYPE),
};
static MAX_DURATION: ElementDecl = leaf(
    "MaxDurationSeconds",
    &SECONDS_TYPE,
    "The longest the session may live, in seconds of real time.",
);
static CONSTRAINTS: ElementDecl = ElementDecl {
    name: "Constraints",
    doc: "General limits on the session.",
    attributes: &[],
    content: Content::Sequence(&[optional(&MAX_SPEND), optional(&MAX_DURATION)]),
};

static ROOT: ElementDecl = ElementDecl {
    name: "EnvironmentalRequirements",
    doc: "A client's requirements for a session on a XenoServer (paper, section II-A.3).",
    attributes: &[],
    content: Content::Sequence(&[
        one(&BASIC),
        optional(&NETWORK),
        optional(&QOS),
        optional(&CONSTRAINTS),
        optional(&EXTENSIONS),
    ]),
};

/// The schema of [`EnvironmentalRequirements`].
pub static SCHEMA: DocumentSchema = DocumentSchema {
    root: &ROOT,
    limits: Limits::DEFAULT,
    xsd_file: "EnvironmentalRequirements.xsd",
};

/// Which version the environment must offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvVersion {
    /// `EnvKernel`: an operating-system kernel or ABI version.
    Kernel(String),
    /// `EnvRuntime`: a language runtime version.
    Runtime(String),
}

/// Resources guaranteed while the session runs. Every field is optional: a server applies its
/// own defaults to what the client leaves out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QoS {
    /// Mean CPU milliseconds per second.
    pub cpu_msps: Option<u64>,
    /// Peak CPU milliseconds per second (at least `cpu_msps`).
    pub cpu_peak_msps: Option<u64>,
    /// Burst credit in CPU milliseconds.
    pub cpu_burst_ms: Option<u64>,
    /// Peak network rate in kilobits per second.
    pub net_peak_kbps: Option<u64>,
    /// Memory in megabytes.
    pub memory_mb: Option<u64>,
    /// Scratch disk in megabytes.
    pub disk_mb: Option<u64>,
}

/// A parsed `EnvironmentalRequirements` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentalRequirements {
    /// `Basic/EnvName`.
    pub name: String,
    /// `Basic/EnvType`.
    pub env_type: String,
    /// `Basic/EnvKernel` or `Basic/EnvRuntime`.
    pub version: Option<EnvVersion>,
    /// `Basic/EnvImage`: the root file system image asked for.
    pub image: Option<String>,
    /// `Network/EnvIPAddresses`.
    pub ip_addresses: Option<u64>,
    /// `NetMbps` (under `Network` or `QoS`), in kilobits per second.
    pub net_kbps: Option<u64>,
    /// `QoS`.
    pub qos: QoS,
    /// `Constraints/MaxSpend`.
    pub max_spend: Option<Money>,
    /// `Constraints/MaxDurationSeconds`.
    pub max_duration_seconds: Option<u64>,
    /// `Extensions`: elements for the task manager plugin.
    pub extensions: Vec<Element>,
}

impl EnvironmentalRequirements {
    /// Requirements with only the mandatory `Basic` part.
    pub fn new(name: impl Into<String>, env_type: impl Into<String>) -> Self {
        EnvironmentalRequirements {
            name: name.into(),
            env_type: env_type.into(),
            version: None,
            image: None,
            ip_addresses: None,
            net_kbps: None,
            qos: QoS::default(),
            max_spend: None,
            max_duration_seconds: None,
            extensions: Vec::new(),
        }
    }
}

/// Megabits per second (three decimals at most) to kilobits per second.
pub(crate) fn mbps_to_kbps(reader: &Reader<'_, '_>) -> Result<u64, Problem> {
    let decimal = reader.decimal()?;
    decimal
        .to_scaled(3)
        .and_then(|kbps| u64::try_from(kbps).ok())
        .ok_or_else(|| reader.problem("bandwidth out of range"))
}

/// Kilobits per second back to the megabit text `mbps_to_kbps` reads.
pub(crate) fn kbps_to_mbps_text(kbps: u64) -> String {
    let decimal = crate::schema::Decimal {
        mantissa: i128::from(kbps),
        scale: 3,
    };
    let text = decimal.to_plain();
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn optional_kbps(reader: &Reader<'_, '_>, name: &str) -> Result<Option<u64>, Problem> {
    reader
        .child(name)
        .map(|child| mbps_to_kbps(&child))
        .transpose()
}

fn read(root: &Reader<'_, '_>) -> Result<EnvironmentalRequirements, Problem> {
    let basic = root.required_child("Basic")?;
    let version = match (
        basic.child_text("EnvKernel")?,
        basic.child_text("EnvRuntime")?,
    ) {
        (Some(kernel), _) => Some(EnvVersion::Kernel(kernel)),
        (None, Some(runtime)) => Some(EnvVersion::Runtime(runtime)),
        (None, None) => None,
    };
    let network = root.child("Network");
    let qos_reader = root.child("QoS");
    let network_kbps = match &network {
        Some(network) => optional_kbps(network, "NetMbps")?,
        None => None,
    };
    let qos_kbps = match &qos_reader {
        Some(qos) => optional_kbps(qos, "NetMbps")?,
        None => None,
    };
    if let (Some(_), Some(_), Some(qos)) = (network_kbps, qos_kbps, &qos_reader) {
        let net = qos.required_child("NetMbps")?;
        return Err(net.problem("NetMbps is given under both Network and QoS; give it once"));
    }
    let net_kbps = network_kbps.or(qos_kbps);
    let mut qos = QoS::default();
    if let Some(reader) = &qos_reader {
        qos = QoS {
            cpu_msps: reader.child_unsigned("CPUmsps")?,
            cpu_peak_msps: reader.child_unsigned("CPUPeakmsps")?,
            cpu_burst_ms: reader.child_unsigned("CPUBurstms")?,
            net_peak_kbps: optional_kbps(reader, "NetPeakMbps")?,
            memory_mb: reader.child_unsigned("MemoryMB")?,
            disk_mb: reader.child_unsigned("DiskMB")?,
        };
        if let Some(peak) = qos.cpu_peak_msps {
            let peak_reader = reader.required_child("CPUPeakmsps")?;
            match qos.cpu_msps {
                None => {
                    return Err(peak_reader.problem("a peak CPU rate needs a mean rate (CPUmsps)"));
                }
                Some(mean) if peak < mean => {
                    return Err(peak_reader
                        .problem(format!("peak rate {peak} is below the mean rate {mean}")));
                }
                Some(_) => {}
            }
        }
        if let Some(peak) = qos.net_peak_kbps {
            let peak_reader = reader.required_child("NetPeakMbps")?;
            match net_kbps {
                None => {
                    return Err(
                        peak_reader.problem("a peak network rate needs a mean rate (NetMbps)")
                    );
                }
                Some(mean) if peak < mean => {
                    return Err(
                        peak_reader.problem("peak network rate is below the mean rate NetMbps")
                    );
                }
                Some(_) => {}
            }
        }
    }
    let constraints = root.child("Constraints");
    Ok(EnvironmentalRequirements {
        name: basic.required_text("EnvName")?,
        env_type: basic.required_text("EnvType")?,
        version,
        image: basic.child_text("EnvImage")?,
        ip_addresses: network
            .as_ref()
            .map(|n| n.child_unsigned("EnvIPAddresses"))
            .transpose()?
            .flatten(),
        net_kbps,
        qos,
        max_spend: constraints
            .as_ref()
            .map(|c| c.child_money("MaxSpend"))
            .transpose()?
            .flatten(),
        max_duration_seconds: constraints
            .as_ref()
            .map(|c| c.child_unsigned("MaxDurationSeconds"))
            .transpose()?
            .flatten(),
        extensions: root.extensions(),
    })
}

fn write(requirements: &EnvironmentalRequirements) -> Element {
    let mut basic = Element::new("Basic")
        .with_leaf("EnvName", requirements.name.clone())
        .with_leaf("EnvType", requirements.env_type.clone());
    basic = match &requirements.version {
        Some(EnvVersion::Kernel(kernel)) => basic.with_leaf("EnvKernel", kernel.clone()),
        Some(EnvVersion::Runtime(runtime)) => basic.with_leaf("EnvRuntime", runtime.clone()),
        None => basic,
    };
    let basic = basic.with_optional_leaf("EnvImage", requirements.image.clone());
    let mut root = Element::new("EnvironmentalRequirements").with_child(basic);
    if let Some(addresses) = requirements.ip_addresses {
        root = root
            .with_child(Element::new("Network").with_leaf("EnvIPAddresses", addresses.to_string()));
    }
    // NetMbps goes under QoS, where the paper's example puts it.
    let qos = &requirements.qos;
    let qos_element = Element::new("QoS")
        .with_optional_leaf("CPUmsps", qos.cpu_msps.map(|v| v.to_string()))
        .with_optional_leaf("CPUPeakmsps", qos.cpu_peak_msps.map(|v| v.to_string()))
        .with_optional_leaf("CPUBurstms", qos.cpu_burst_ms.map(|v| v.to_string()))
        .with_optional_leaf("NetMbps", requirements.net_kbps.map(kbps_to_mbps_text))
        .with_optional_leaf("NetPeakMbps", qos.net_peak_kbps.map(kbps_to_mbps_text))
        .with_optional_leaf("MemoryMB", qos.memory_mb.map(|v| v.to_string()))
        .with_optional_leaf("DiskMB", qos.disk_mb.map(|v| v.to_string()));
    if !qos_element.children.is_empty() {
        root = root.with_child(qos_element);
    }
    let mut constraints = Element::new("Constraints");
    if let Some(max_spend) = &requirements.max_spend {
        constraints = constraints.with_child(money_element("MaxSpend", max_spend));
    }
    constraints = constraints.with_optional_leaf(
        "MaxDurationSeconds",
        requirements.max_duration_seconds.map(|v| v.to_string()),
    );
    if !constraints.children.is_empty() {
        root = root.with_child(constraints);
    }
    if let Some(extensions) = extensions_element(&requirements.extensions) {
        root = root.with_child(extensions);
    }
    root
}

impl_document!(EnvironmentalRequirements, SCHEMA, read, write);
