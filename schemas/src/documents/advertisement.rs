//! `ServerAdvertisement`: what a XenoServer publishes in the XenoServer Information Service
//! (paper, section III-A): who it is, which corps it works with, where it is, how loaded, what
//! environments it runs and at what prices, its network coordinates, and free-form tokens. The
//! XIS indexes every token of it. The server signs it with the key whose fingerprint is its id,
//! so names are self-certifying: the signature covers the canonical form of the advertisement
//! without its `Signature` element.

use super::common::{
    COUNT_TYPE, CURRENCY_TYPE, Currency, IDENTIFIER_TYPE, NAME, OBJECT_ID_TYPE, Reader,
    SHA256_TYPE, TIMESTAMP_TYPE, VERSION_TYPE,
};
use super::document::impl_document;
use super::requirements::{MBPS_TYPE, MEGABYTES_TYPE, kbps_to_mbps_text, mbps_to_kbps};
use super::signature::{SIGNATURE_CONTENT, Signature, read_signature, signature_element};
use crate::schema::Decimal;
use crate::schema::model::{
    Content, DocumentSchema, ElementDecl, Pattern, SimpleKind, SimpleType, leaf, one, optional,
    repeated, required_attribute,
};
use crate::schema::types::format_date_time;
use crate::schema::validate::Problem;
use crate::xml::{Element, Limits};
use time::OffsetDateTime;

/// Most corps one server advertises.
pub const CORPS_MAX: u32 = 16;
/// Most environment types one server advertises.
pub const ENVIRONMENTS_MAX: u32 = 32;
/// Most root file system images one environment advertises (a task manager offers at most
/// as many).
pub const IMAGES_PER_ENVIRONMENT_MAX: u32 = 16;
/// Most free-form tokens in one advertisement.
pub const TOKENS_MAX: u32 = 128;
/// Most network paths in one advertisement.
pub const PATHS_MAX: u32 = 32;
/// Most hops in one path.
pub const HOPS_MAX: u32 = 64;
/// Most dimensions of a network coordinate.
pub const COORDINATE_DIMENSIONS_MAX: u32 = 8;
/// Decimal places of prices: picounits, so that a megabyte-second can be priced.
pub const PRICE_SCALE: u8 = 12;

static ENDPOINT_TYPE: SimpleType = SimpleType {
    name: "Endpoint",
    doc: "Where clients reach the server's gRPC service: host:port or an https URL.",
    kind: SimpleKind::Token {
        min_chars: 1,
        max_chars: 256,
    },
};

static COUNTRY_PATTERN: Pattern = Pattern {
    xsd: "[A-Z]{2}",
    max_chars: 2,
    matches: |v| v.len() == 2 && v.bytes().all(|b| b.is_ascii_uppercase()),
    description: "a two-letter ISO 3166 country code such as GB",
};
static COUNTRY_TYPE: SimpleType = SimpleType {
    name: "Country",
    doc: "An ISO 3166-1 alpha-2 country code.",
    kind: SimpleKind::Pattern(&COUNTRY_PATTERN),
};
static DEGREES_TYPE: SimpleType = SimpleType {
    name: "Degrees",
    doc: "Latitude (-90 to 90) or longitude (-180 to 180) in decimal degrees.",
    kind: SimpleKind::Decimal {
        signed: true,
        integer_digits: 3,
        fraction_digits: 6,
    },
};
static PERCENT_TYPE: SimpleType = SimpleType {
    name: "Percent",
    doc: "A percentage from 0 to 100 with up to two decimals.",
    kind: SimpleKind::Decimal {
        signed: false,
        integer_digits: 3,
        fraction_digits: 2,
    },
};
static LOAD_AVERAGE_TYPE: SimpleType = SimpleType {
    name: "LoadAverage",
    doc: "Run-queue length averaged over a minute.",
    kind: SimpleKind::Decimal {
        signed: false,
        integer_digits: 6,
        fraction_digits: 2,
    },
};
static CPU_MSPS_AVAILABLE_TYPE: SimpleType = SimpleType {
    name: "CPUmspsAvailable",
    doc: "CPU milliseconds per second not yet promised to sessions, across all cores.",
    kind: SimpleKind::Unsigned { max: 1_000_000 },
};
static PRICE_TYPE: SimpleType = SimpleType {
    name: "Price",
    doc: "A unit price in major units of the sheet's currency, with up to 12 decimals.",
    kind: SimpleKind::Decimal {
        signed: false,
        integer_digits: 6,
        fraction_digits: 12,
    },
};
static MILLISECONDS_DECIMAL_TYPE: SimpleType = SimpleType {
    name: "CoordinateMilliseconds",
    doc: "A network coordinate component in milliseconds of round-trip time.",
    kind: SimpleKind::Decimal {
        signed: true,
        integer_digits: 6,
        fraction_digits: 3,
    },
};
static ERROR_TYPE: SimpleType = SimpleType {
    name: "CoordinateError",
    doc: "The coordinate's estimated relative error (0 is perfect, 1 is no confidence).",
    kind: SimpleKind::Decimal {
        signed: false,
        integer_digits: 3,
        fraction_digits: 4,
    },
};
static HOP_TYPE: SimpleType = SimpleType {
    name: "Hop",
    doc: "A router or link identifier on a network path (an address or a name).",
    kind: SimpleKind::Token {
        min_chars: 1,
        max_chars: 256,
    },
};
static TOKEN_VALUE_TYPE: SimpleType = SimpleType {
    name: "TokenValue",
    doc: "The value of a free-form token: a number (range lookups) or a string (exact lookups).",
    kind: SimpleKind::Token {
        min_chars: 0,
        max_chars: 256,
    },
};

static SERVER_ID: ElementDecl = leaf(
    "ServerId",
    &SHA256_TYPE,
    "SHA-256 of the server's public key (its self-certifying name); the key in Signature must match.",
);
static VERSION: ElementDecl = leaf(
    "Version",
    &COUNT_TYPE,
    "Increases with every advertisement the server publishes; an older version never replaces a newer one.",
);
static ISSUED: ElementDecl = leaf(
    "Issued",
    &TIMESTAMP_TYPE,
    "When the server produced this advertisement.",
);
static EXPIRY: ElementDecl = leaf(
    "Expiry",
    &TIMESTAMP_TYPE,
    "After this instant the advertisement is not to be believed.",
);
static ENDPOINT: ElementDecl = leaf(
    "Endpoint",
    &ENDPOINT_TYPE,
    "Where clients reach the server.",
);
static CORP: ElementDecl = leaf(
    "Corp",
    &OBJECT_ID_TYPE,
    "A XenoCorp the server is registered with.",
);
static CORPS: ElementDecl = ElementDecl {
    name: "Corps",
    doc: "The XenoCorps whose purchase orders the server accepts.",
    attributes: &[],
    content: Content::Sequence(&[repeated(&CORP, 1, CORPS_MAX)]),
};
static COUNTRY: ElementDecl = leaf("Country", &COUNTRY_TYPE, "Country.");
static REGION: ElementDecl = leaf("Region", &NAME, "Region, state or province.");
static CITY: ElementDecl = leaf("City", &NAME, "City.");
static LATITUDE: ElementDecl = leaf("Latitude", &DEGREES_TYPE, "Latitude in degrees.");
static LONGITUDE: ElementDecl = leaf("Longitude", &DEGREES_TYPE, "Longitude in degrees.");
static LOCATION: ElementDecl = ElementDecl {
    name: "Location",
    doc: "Where the server is.",
    attributes: &[],
    content: Content::Sequence(&[
        optional(&COUNTRY),
        optional(&REGION),
        optional(&CITY),
        optional(&LATITUDE),
        optional(&LONGITUDE),
    ]),
};
static CPU_UTILISATION: ElementDecl = leaf(
    "CPUUtilisation",
    &PERCENT_TYPE,
    "Average CPU utilisation, percent.",
);
static LOAD_AVERAGE: ElementDecl = leaf(
    "LoadAverage",
    &LOAD_AVERAGE_TYPE,
    "One-minute load average.",
);
static CONNECTED_CLIENTS: ElementDecl = leaf(
    "ConnectedClients",
    &COUNT_TYPE,
    "Clients with live sessions.",
);
static SESSIONS: ElementDecl = leaf("Sessions", &COUNT_TYPE, "Live sessions.");
static AVAILABLE_CPU: ElementDecl = leaf(
    "AvailableCPUmsps",
    &CPU_MSPS_AVAILABLE_TYPE,
    "CPU not yet promised.",
);
static AVAILABLE_MEMORY: ElementDecl = leaf(
    "AvailableMemoryMB",
    &MEGABYTES_TYPE,
    "Memory not yet promised, MB.",
);
static BANDWIDTH: ElementDecl = leaf(
    "BandwidthMbps",
    &MBPS_TYPE,
    "Total network bandwidth, Mbps.",
);
static AVAILABLE_BANDWIDTH: ElementDecl = leaf(
    "AvailableNetMbps",
    &MBPS_TYPE,
    "Bandwidth not yet promised, Mbps.",
);
static LOAD: ElementDecl = ElementDecl {
    name: "Load",
    doc: "How busy the server is.",
    attributes: &[],
    content: Content::Sequence(&[
        optional(&CPU_UTILISATION),
        optional(&LOAD_AVERAGE),
        optional(&CONNECTED_CLIENTS),
        optional(&SESSIONS),
        optional(&AVAILABLE_CPU),
        optional(&AVAILABLE_MEMORY),
        optional(&BANDWIDTH),
        optional(&AVAILABLE_BANDWIDTH),
    ]),
};
static ENV_TYPE: ElementDecl = leaf(
    "EnvType",
    &IDENTIFIER_TYPE,
    "An environment type the server runs.",
);
static ENV_VERSION: ElementDecl = leaf(
    "Version",
    &VERSION_TYPE,
    "A kernel ABI or runtime version offered for this type.",
);
static ENV_IMAGE: ElementDecl = leaf(
    "Image",
    &IDENTIFIER_TYPE,
    "A root file system image offered for this type, by the name requirements give in EnvImage.",
);
static ENVIRONMENT: ElementDecl = ElementDecl {
    name: "Environment",
    doc: "One environment type, the versions offered and its root file system images.",
    attributes: &[],
    content: Content::Sequence(&[
        one(&ENV_TYPE),
        repeated(&ENV_VERSION, 0, 16),
        repeated(&ENV_IMAGE, 0, IMAGES_PER_ENVIRONMENT_MAX),
    ]),
};
static ENVIRONMENTS: ElementDecl = ElementDecl {
    name: "Environments",
    doc: "The execution environments the server supports.",
    attributes: &[],
    content: Content::Sequence(&[repeated(&ENVIRONMENT, 1, ENVIRONMENTS_MAX)]),
};
static CPU_SECOND: ElementDecl = leaf("CPUSecond", &PRICE_TYPE, "Price of one second of CPU time.");
static MEMORY_MB_SECOND: ElementDecl = leaf(
    "MemoryMBSecond",
    &PRICE_TYPE,
    "Price of one megabyte held for one second.",
);
static NETWORK_GB: ElementDecl = leaf(
    "NetworkGB",
    &PRICE_TYPE,
    "Price of one gigabyte (10^9 bytes) of network traffic.",
);
static MILLION_FUEL: ElementDecl = leaf(
    "MillionFuel",
    &PRICE_TYPE,
    "Price of one million units of Wasm fuel: a reproducible bill (same input, same fuel, same price).",
);
static SESSION_START: ElementDecl = leaf(
    "SessionStart",
    &PRICE_TYPE,
    "Price charged once per session.",
);
static PRICE_SHEET: ElementDecl = ElementDecl {
    name: "PriceSheet",
    doc: "Unit prices in one currency. A resource without a price is free.",
    attributes: &[required_attribute(
        "currency",
        &CURRENCY_TYPE,
        "The currency of every price in the sheet.",
    )],
    content: Content::Sequence(&[
        optional(&CPU_SECOND),
        optional(&MEMORY_MB_SECOND),
        optional(&NETWORK_GB),
        optional(&MILLION_FUEL),
        optional(&SESSION_START),
    ]),
};
static COORDINATE: ElementDecl = leaf(
    "Coordinate",
    &MILLISECONDS_DECIMAL_TYPE,
    "One dimension of the coordinate.",
);
static HEIGHT: ElementDecl = leaf(
    "Height",
    &MILLISECONDS_DECIMAL_TYPE,
    "The height term: latency of the access link, added to every distance.",
);
static COORDINATE_ERROR: ElementDecl = leaf("Error", &ERROR_TYPE, "Estimated relative error.");
static COORDINATES: ElementDecl = ElementDecl {
    name: "NetworkCoordinates",
    doc: "Vivaldi network coordinates: the distance between two servers' coordinates estimates their round-trip time in ms.",
    attributes: &[],
    content: Content::Sequence(&[
        repeated(&COORDINATE, 2, COORDINATE_DIMENSIONS_MAX),
        optional(&HEIGHT),
        optional(&COORDINATE_ERROR),
    ]),
};
static HOP: ElementDecl = leaf("Hop", &HOP_TYPE, "One hop, nearest first.");
static PATH: ElementDecl = ElementDecl {
    name: "Path",
    doc: "The route from this server toward a destination, as measured by the server.",
    attributes: &[required_attribute(
        "toward",
        &HOP_TYPE,
        "The destination (an address or a name).",
    )],
    content: Content::Sequence(&[repeated(&HOP, 1, HOPS_MAX)]),
};
static PATHS: ElementDecl = ElementDecl {
    name: "Paths",
    doc: "Measured network paths, for finding servers with disjoint links.",
    attributes: &[],
    content: Content::Sequence(&[repeated(&PATH, 1, PATHS_MAX)]),
};
static TOKEN: ElementDecl = ElementDecl {
    name: "Token",
    doc: "A free-form token the XIS indexes like any other.",
    attributes: &[required_attribute(
        "name",
        &IDENTIFIER_TYPE,
        "The token's name.",
    )],
    content: Content::Simple(&TOKEN_VALUE_TYPE),
};
static TOKENS: ElementDecl = ElementDecl {
    name: "Tokens",
    doc: "Extension tokens: the XIS is agnostic about what it holds.",
    attributes: &[],
    content: Content::Sequence(&[repeated(&TOKEN, 1, TOKENS_MAX)]),
};
static SIGNATURE: ElementDecl = ElementDecl {
    name: "Signature",
    doc: "The server's signature over the canonical form of everything before it; its key's SHA-256 is ServerId.",
    attributes: &[],
    content: SIGNATURE_CONTENT,
};

static ROOT: ElementDecl = ElementDecl {
    name: "ServerAdvertisement",
    doc: "A XenoServer's advertisement in the XenoServer Information Service (paper, section III-A).",
    attributes: &[],
    content: Content::Sequence(&[
        one(&SERVER_ID),
        one(&VERSION),
        one(&ISSUED),
        one(&EXPIRY),
        one(&ENDPOINT),
        one(&CORPS),
        optional(&LOCATION),
        optional(&LOAD),
        one(&ENVIRONMENTS),
        repeated(&PRICE_SHEET, 0, 8),
        optional(&COORDINATES),
        optional(&PATHS),
        optional(&TOKENS),
        optional(&SIGNATURE),
    ]),
};

/// The schema of [`ServerAdvertisement`].
pub static SCHEMA: DocumentSchema = DocumentSchema {
    root: &ROOT,
    limits: Limits::DEFAULT,
    xsd_file: "ServerAdvertisement.xsd",
};

/// Where a server is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// ISO country code.
    pub country: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// City.
    pub city: Option<String>,
    /// Latitude in degrees.
    pub latitude: Option<Decimal>,
    /// Longitude in degrees.
    pub longitude: Option<Decimal>,
}

/// How busy a server is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    /// CPU utilisation in percent.
    pub cpu_utilisation_percent: Option<Decimal>,
    /// One-minute load average.
    pub load_average: Option<Decimal>,
    /// Clients with live sessions.
    pub connected_clients: Option<u64>,
    /// Live sessions.
    pub sessions: Option<u64>,
    /// CPU ms per second not yet promised.
    pub available_cpu_msps: Option<u64>,
    /// Memory not yet promised, MB.
    pub available_memory_mb: Option<u64>,
    /// Total bandwidth, kbps.
    pub bandwidth_kbps: Option<u64>,
    /// Bandwidth not yet promised, kbps.
    pub available_kbps: Option<u64>,
}

/// An environment type and its offered versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// The `EnvType`.
    pub env_type: String,
    /// Kernel or runtime versions offered.
    pub versions: Vec<String>,
    /// Root file system images offered (`EnvImage`).
    pub images: Vec<String>,
}

/// Unit prices in one currency, in picounits (10^-12 of a major unit) per unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceSheet {
    /// Currency of every price.
    pub currency: Currency,
    /// Per CPU-second.
    pub cpu_second_pico: Option<u64>,
    /// Per megabyte-second of memory.
    pub memory_mb_second_pico: Option<u64>,
    /// Per gigabyte of network traffic.
    pub network_gb_pico: Option<u64>,
    /// Per million units of Wasm fuel.
    pub million_fuel_pico: Option<u64>,
    /// Once per session.
    pub session_start_pico: Option<u64>,
}

/// Vivaldi coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkCoordinates {
    /// The Euclidean part, ms.
    pub components: Vec<Decimal>,
    /// The height part, ms.
    pub height: Option<Decimal>,
    /// Estimated relative error.
    pub error: Option<Decimal>,
}

/// A measured route toward a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPath {
    /// The destination.
    pub toward: String,
    /// Hops, nearest first.
    pub hops: Vec<String>,
}

/// A parsed `ServerAdvertisement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAdvertisement {
    /// Fingerprint of the server's key.
    pub server_id: String,
    /// Increasing version.
    pub version: u64,
    /// When produced.
    pub issued_at: OffsetDateTime,
    /// When it stops being believable.
    pub expires_at: OffsetDateTime,
    /// Where clients reach the server.
    pub endpoint: String,
    /// Corps the server is registered with.
    pub corps: Vec<String>,
    /// Where it is.
    pub location: Option<Location>,
    /// How busy.
    pub load: Option<Load>,
    /// What it runs.
    pub environments: Vec<Environment>,
    /// Its prices.
    pub price_sheets: Vec<PriceSheet>,
    /// Network coordinates.
    pub coordinates: Option<NetworkCoordinates>,
    /// Measured paths.
    pub paths: Vec<NetworkPath>,
    /// Free-form tokens (name, value).
    pub tokens: Vec<(String, String)>,
    /// The server's signature.
    pub signature: Option<Signature>,
}

impl ServerAdvertisement {
    /// The bytes the signature covers: the canonical form without the `Signature` element.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let unsigned = ServerAdvertisement {
            signature: None,
            ..self.clone()
        };
        crate::xml::write_document(&write(&unsigned), crate::xml::Layout::Compact).into_bytes()
    }

    /// Checks that the advertisement certifies itself: it is signed, by the key its `ServerId`
    /// names (a server may only advertise itself), over its canonical form. Every reader of an
    /// advertisement (the XIS accepting one, a resource discovery system or client reading one)
    /// applies this same rule; the error says which part failed.
    pub fn check_self_certified(&self) -> Result<(), String> {
        let signature = self
            .signature
            .as_ref()
            .ok_or_else(|| "the advertisement is not signed (no Signature)".to_owned())?;
        let fingerprint = signature.key_fingerprint();
        if fingerprint != self.server_id {
            return Err(format!(
                "the advertisement for {} is signed by another key ({fingerprint}): a server may only advertise itself",
                self.server_id
            ));
        }
        crate::signing::verify(signature, &self.signed_bytes())
            .map_err(|error| format!("Signature: {error} over the advertisement"))
    }
}

fn price(reader: &Reader<'_, '_>, name: &str) -> Result<Option<u64>, Problem> {
    match reader.child(name) {
        None => Ok(None),
        Some(child) => child
            .decimal()?
            .to_scaled(PRICE_SCALE)
            .and_then(|pico| u64::try_from(pico).ok())
            .map(Some)
            .ok_or_else(|| child.problem("price out of range")),
    }
}

fn price_text(pico: u64) -> String {
    let text = Decimal {
        mantissa: i128::from(pico),
        scale: PRICE_SCALE,
    }
    .to_plain();
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Reads an optional decimal child that must lie within `min..=max`.
fn check_range(
    reader: &Reader<'_, '_>,
    name: &str,
    min: i128,
    max: i128,
) -> Result<Option<Decimal>, Problem> {
    let Some(child) = reader.child(name) else {
        return Ok(None);
    };
    let value = child.decimal()?;
    let unit = 10i128.pow(u32::from(value.scale));
    if (min * unit..=max * unit).contains(&value.mantissa) {
        Ok(Some(value))
    } else {
        Err(child.problem(format!("must be between {min} and {max}")))
    }
}

fn read(root: &Reader<'_, '_>) -> Result<ServerAdvertisement, Problem> {
    let issued_at = root.required_timestamp("Issued")?;
    let expires_at = root.required_timestamp("Expiry")?;
    if expires_at <= issued_at {
        return Err(root
            .required_child("Expiry")?
            .problem("expiry must be after the issue time"));
    }
    let location = match root.child("Location") {
        Some(location) => Some(Location {
            country: location.child_text("Country")?,
            region: location.child_text("Region")?,
            city: location.child_text("City")?,
            latitude: check_range(&location, "Latitude", -90, 90)?,
            longitude: check_range(&location, "Longitude", -180, 180)?,
        }),
        None => None,
    };
    let load = match root.child("Load") {
        Some(load) => {
            let utilisation = check_range(&load, "CPUUtilisation", 0, 100)?;
            let kbps = |name: &str| {
                load.child(name)
                    .map(|child| mbps_to_kbps(&child))
                    .transpose()
            };
            Some(Load {
                cpu_utilisation_percent: utilisation,
                load_average: load.child_decimal("LoadAverage")?,
                connected_clients: load.child_unsigned("ConnectedClients")?,
                sessions: load.child_unsigned("Sessions")?,
                available_cpu_msps: load.child_unsigned("AvailableCPUmsps")?,
                available_memory_mb: load.child_unsigned("AvailableMemoryMB")?,
                bandwidth_kbps: kbps("BandwidthMbps")?,
                available_kbps: kbps("AvailableNetMbps")?,
            })
        }
        None => None,
    };
    let mut environments: Vec<Environment> = Vec::new();
    for environment in root.required_child("Environments")?.children("Environment") {
        let env_type = environment.required_text("EnvType")?;
        if environments
            .iter()
            .any(|existing| existing.env_type == env_type)
        {
            return Err(environment.problem(format!("environment type {env_type} is listed twice")));
        }
        let versions = environment
            .children("Version")
            .iter()
            .map(Reader::text)
            .collect::<Result<_, _>>()?;
        let images = environment
            .children("Image")
            .iter()
            .map(Reader::text)
            .collect::<Result<_, _>>()?;
        environments.push(Environment {
            env_type,
            versions,
            images,
        });
    }
    let mut price_sheets: Vec<PriceSheet> = Vec::new();
    for sheet in root.children("PriceSheet") {
        let currency: Currency = sheet
            .required_attribute_text("currency")?
            .parse()
            .map_err(|message: String| sheet.problem(message))?;
        if price_sheets
            .iter()
            .any(|existing| existing.currency == currency)
        {
            return Err(sheet.problem(format!("two price sheets in {currency}")));
        }
        price_sheets.push(PriceSheet {
            currency,
            cpu_second_pico: price(&sheet, "CPUSecond")?,
            memory_mb_second_pico: price(&sheet, "MemoryMBSecond")?,
            network_gb_pico: price(&sheet, "NetworkGB")?,
            million_fuel_pico: price(&sheet, "MillionFuel")?,
            session_start_pico: price(&sheet, "SessionStart")?,
        });
    }
    let coordinates = match root.child("NetworkCoordinates") {
        Some(coordinates) => Some(NetworkCoordinates {
            components: coordinates
                .children("Coordinate")
                .iter()
                .map(Reader::decimal)
                .collect::<Result<_, _>>()?,
            height: coordinates.child_decimal("Height")?,
            error: coordinates.child_decimal("Error")?,
        }),
        None => None,
    };
    let mut paths = Vec::new();
    if let Some(paths_reader) = root.child("Paths") {
        for path in paths_reader.children("Path") {
            paths.push(NetworkPath {
                toward: path.required_attribute_text("toward")?,
                hops: path
                    .children("Hop")
                    .iter()
                    .map(Reader::text)
                    .collect::<Result<_, _>>()?,
            });
        }
    }
    let mut tokens = Vec::new();
    if let Some(tokens_reader) = root.child("Tokens") {
        for token in tokens_reader.children("Token") {
            tokens.push((token.required_attribute_text("name")?, token.text()?));
        }
    }
    let corps = root
        .required_child("Corps")?
        .children("Corp")
        .iter()
        .map(Reader::text)
        .collect::<Result<_, _>>()?;
    Ok(ServerAdvertisement {
        server_id: root.required_text("ServerId")?,
        version: root.required_unsigned("Version")?,
        issued_at,
        expires_at,
        endpoint: root.required_text("Endpoint")?,
        corps,
        location,
        load,
        environments,
        price_sheets,
        coordinates,
        paths,
        tokens,
        signature: root
            .child("Signature")
            .map(|s| read_signature(&s))
            .transpose()?,
    })
}

fn decimal_leaf(element: Element, name: &str, value: Option<Decimal>) -> Element {
    element.with_optional_leaf(name, value.map(Decimal::to_plain))
}

fn write(advertisement: &ServerAdvertisement) -> Element {
    let mut root = Element::new("ServerAdvertisement")
        .with_leaf("ServerId", advertisement.server_id.clone())
        .with_leaf("Version", advertisement.version.to_string())
        .with_leaf("Issued", format_date_time(advertisement.issued_at))
        .with_leaf("Expiry", format_date_time(advertisement.expires_at))
        .with_leaf("Endpoint", advertisement.endpoint.clone());
    let mut corps = Element::new("Corps");
    for corp in &advertisement.corps {
        corps = corps.with_leaf("Corp", corp.clone());
    }
    root = root.with_child(corps);
    if let Some(location) = &advertisement.location {
        let mut element = Element::new("Location")
            .with_optional_leaf("Country", location.country.clone())
            .with_optional_leaf("Region", location.region.clone())
            .with_optional_leaf("City", location.city.clone());
        element = decimal_leaf(element, "Latitude", location.latitude);
        element = decimal_leaf(element, "Longitude", location.longitude);
        root = root.with_child(element);
    }
    if let Some(load) = &advertisement.load {
        let mut element = decimal_leaf(
            Element::new("Load"),
            "CPUUtilisation",
            load.cpu_utilisation_percent,
        );
        element = decimal_leaf(element, "LoadAverage", load.load_average)
            .with_optional_leaf(
                "ConnectedClients",
                load.connected_clients.map(|v| v.to_string()),
            )
            .with_optional_leaf("Sessions", load.sessions.map(|v| v.to_string()))
            .with_optional_leaf(
                "AvailableCPUmsps",
                load.available_cpu_msps.map(|v| v.to_string()),
            )
            .with_optional_leaf(
                "AvailableMemoryMB",
                load.available_memory_mb.map(|v| v.to_string()),
            )
            .with_optional_leaf("BandwidthMbps", load.bandwidth_kbps.map(kbps_to_mbps_text))
            .with_optional_leaf(
                "AvailableNetMbps",
                load.available_kbps.map(kbps_to_mbps_text),
            );
        root = root.with_child(element);
    }
    let mut environments = Element::new("Environments");
    for environment in &advertisement.environments {
        let mut element =
            Element::new("Environment").with_leaf("EnvType", environment.env_type.clone());
        for version in &environment.versions {
            element = element.with_leaf("Version", version.clone());
        }
        for image in &environment.images {
            element = element.with_leaf("Image", image.clone());
        }
        environments = environments.with_child(element);
    }
    root = root.with_child(environments);
    for sheet in &advertisement.price_sheets {
        root = root.with_child(
            Element::new("PriceSheet")
                .with_attribute("currency", sheet.currency.as_str())
                .with_optional_leaf("CPUSecond", sheet.cpu_second_pico.map(price_text))
                .with_optional_leaf(
                    "MemoryMBSecond",
                    sheet.memory_mb_second_pico.map(price_text),
                )
                .with_optional_leaf("NetworkGB", sheet.network_gb_pico.map(price_text))
                .with_optional_leaf("MillionFuel", sheet.million_fuel_pico.map(price_text))
                .with_optional_leaf("SessionStart", sheet.session_start_pico.map(price_text)),
        );
    }
    if let Some(coordinates) = &advertisement.coordinates {
        let mut element = Element::new("NetworkCoordinates");
        for component in &coordinates.components {
            element = element.with_leaf("Coordinate", component.to_plain());
        }
        element = decimal_leaf(element, "Height", coordinates.height);
        element = decimal_leaf(element, "Error", coordinates.error);
        root = root.with_child(element);
    }
    if !advertisement.paths.is_empty() {
        let mut paths = Element::new("Paths");
        for path in &advertisement.paths {
            let mut element = Element::new("Path").with_attribute("toward", path.toward.clone());
            for hop in &path.hops {
                element = element.with_leaf("Hop", hop.clone());
            }
            paths = paths.with_child(element);
        }
        root = root.with_child(paths);
    }
    if !advertisement.tokens.is_empty() {
        let mut tokens = Element::new("Tokens");
        for (name, value) in &advertisement.tokens {
            tokens = tokens.with_child(
                Element::new("Token")
                    .with_attribute("name", name.clone())
                    .with_text(value.clone()),
            );
        }
        root = root.with_child(tokens);
    }
    if let Some(signature) = &advertisement.signature {
        root = root.with_child(signature_element("Signature", signature));
    }
    root
}

impl_document!(ServerAdvertisement, SCHEMA, read, write);
