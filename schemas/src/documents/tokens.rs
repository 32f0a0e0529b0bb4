//! Which tokens an advertisement yields: the rows of the paper's inverted file (section III-A.1,
//! "a mapping from each token that can occur in the XML specification onto a list of
//! XenoServers which contained it").
//!
//! Every leaf element is a token named by its element name. Numeric leaves are indexed by value
//! (range lookups); the others by their text (exact lookups). Leaves that only mean something
//! together with a parent's attribute or a sibling are qualified with `@`:
//!
//! | Token | From | Kind |
//! |---|---|---|
//! | `ServerId` | `ServerId` | text |
//! | `Version` | `Version` (the advertisement's version) | number |
//! | `Endpoint` | `Endpoint` | text |
//! | `Corp` | each `Corps/Corp` | text |
//! | `Country`, `Region`, `City` | `Location/*` | text |
//! | `Latitude`, `Longitude` | `Location/*`, degrees | number |
//! | `CPUUtilisation`, `LoadAverage`, `ConnectedClients`, `Sessions`, `AvailableCPUmsps`, `AvailableMemoryMB`, `BandwidthMbps`, `AvailableNetMbps` | `Load/*` (bandwidths in Mbps) | number |
//! | `EnvType` | each `Environments/Environment/EnvType` | text |
//! | `Version@<EnvType>` | each `Version` of that environment (`Version@Linux` = `2.4.18`) | text |
//! | `Image` | each `Environments/Environment/Image`: a root file system image offered (`Image` = `debian-12-python`) | text |
//! | `Currency` | each `PriceSheet/@currency` | text |
//! | `CPUSecond@<currency>`, `MemoryMBSecond@…`, `NetworkGB@…`, `MillionFuel@…`, `SessionStart@…` | `PriceSheet[@currency]/*`, in major units (`CPUSecond@GBP` = `0.00002`) | number |
//! | `Coordinate@<i>` (from 0), `Height`, `Error` | `NetworkCoordinates/*`, ms | number |
//! | `Path` | each `Paths/Path/@toward` | text |
//! | `<name>` | each `Tokens/Token[@name]`: a number if the value is one (`-?digits[.digits]`), else text | either |
//! | `Received` | not in the document: when this XIS accepted it, Unix ms | number |
//!
//! Not indexed: `Issued` and `Expiry` (the lookup reports each record's age instead), the
//! signature, and the hops of paths (up to 2,048 per advertisement; they are in the signed
//! document a client or RD system reads). A free-form token may not take the name of a known
//! one, so a reader of `Country` only ever sees `Location/Country` values.
//!
//! Lookups accept aliases for the canonical names: the element path (`Load/AvailableCPUmsps`,
//! with or without the leading `ServerAdvertisement/`), and the requirement-side names of the
//! paper's example query (`CPUmsps`, `MemoryMB`, `NetMbps` mean the available amounts).
//!
//! ```
//! use xeno_schemas::documents::tokens::{TokenValue, resolve_token};
//! assert_eq!(resolve_token("CPUmsps"), "AvailableCPUmsps");
//! assert_eq!(resolve_token("Location/Country"), "Country");
//! assert_eq!(resolve_token("gpu"), "gpu");
//! assert_eq!(TokenValue::parse_free("12000"), TokenValue::Number(12000.0));
//! assert_eq!(TokenValue::parse_free("none"), TokenValue::Text("none".into()));
//! ```

use crate::documents::ServerAdvertisement;
use crate::documents::advertisement::{
    COORDINATE_DIMENSIONS_MAX, CORPS_MAX, ENVIRONMENTS_MAX, IMAGES_PER_ENVIRONMENT_MAX, PATHS_MAX,
    TOKENS_MAX,
};
use crate::schema::Decimal;

/// Most tokens one advertisement can yield: the fixed leaves, every repeated element at its
/// schema maximum (16 versions and 16 images per environment, 8 price sheets of 5 prices),
/// and `Received`. Stores size their batches from it.
pub const TOKENS_PER_ADVERTISEMENT_MAX: usize = 32
    + CORPS_MAX as usize
    + ENVIRONMENTS_MAX as usize * (1 + 16 + IMAGES_PER_ENVIRONMENT_MAX as usize)
    + 8 * 6
    + COORDINATE_DIMENSIONS_MAX as usize
    + PATHS_MAX as usize
    + TOKENS_MAX as usize;
const _: () = assert!(TOKENS_PER_ADVERTISEMENT_MAX < 2048);

/// Longest token name a lookup may give: qualified names are an identifier (64), `@` and a
/// qualifier of at most 64 characters; paths add the element names before it.
pub const TOKEN_NAME_BYTES_MAX: usize = 256;

/// Longest exact value a lookup may give: token values are at most 256 characters.
pub const TOKEN_VALUE_BYTES_MAX: usize = 256;

/// The synthetic token carrying the XIS's receipt time (Unix ms). Resource discovery systems
/// use it to fetch only what changed since their last look.
pub const RECEIVED_TOKEN: &str = "Received";

/// A token's value in one advertisement.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenValue {
    /// A number: range lookups; exact lookups of the same number.
    Number(f64),
    /// Text: exact lookups.
    Text(String),
}

impl TokenValue {
    /// A free-form token's value: a number if it is written as one, else text.
    pub fn parse_free(text: &str) -> TokenValue {
        match parse_plain_number(text) {
            Some(number) => TokenValue::Number(number),
            None => TokenValue::Text(text.to_owned()),
        }
    }

    /// The value as lookups report it: text as is; numbers in their shortest exact decimal
    /// form (`750.5`, `0.00002`, `1700`).
    pub fn display(&self) -> String {
        match self {
            TokenValue::Number(number) => format_number(*number),
            TokenValue::Text(text) => text.clone(),
        }
    }
}

/// A number in plain decimal notation (`-12`, `0.5`), no exponent, no sign on zero needed.
pub fn parse_plain_number(text: &str) -> Option<f64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|fraction| !all_digits(fraction)) {
        return None;
    }
    text.parse::<f64>().ok().filter(|number| number.is_finite())
}

/// A number in its shortest decimal form that reads back to the same `f64`.
pub fn format_number(number: f64) -> String {
    if number == 0.0 {
        // Covers -0.0 too, so that both index and display as `0`.
        return "0".to_owned();
    }
    format!("{number}")
}

/// One entry of an advertisement in the inverted file.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The canonical token name (`AvailableCPUmsps`, `CPUSecond@GBP`, `gpu`).
    pub name: String,
    /// Its value.
    pub value: TokenValue,
}

/// Canonical names of the tokens taken from known elements, with their element paths (relative
/// to the root). Qualified families (`Version@…`, prices, coordinates) are matched by prefix.
const KNOWN_TOKENS: &[(&str, &str)] = &[
    ("ServerId", "ServerId"),
    ("Version", "Version"),
    ("Endpoint", "Endpoint"),
    ("Corp", "Corps/Corp"),
    ("Country", "Location/Country"),
    ("Region", "Location/Region"),
    ("City", "Location/City"),
    ("Latitude", "Location/Latitude"),
    ("Longitude", "Location/Longitude"),
    ("CPUUtilisation", "Load/CPUUtilisation"),
    ("LoadAverage", "Load/LoadAverage"),
    ("ConnectedClients", "Load/ConnectedClients"),
    ("Sessions", "Load/Sessions"),
    ("AvailableCPUmsps", "Load/AvailableCPUmsps"),
    ("AvailableMemoryMB", "Load/AvailableMemoryMB"),
    ("BandwidthMbps", "Load/BandwidthMbps"),
    ("AvailableNetMbps", "Load/AvailableNetMbps"),
    ("EnvType", "Environments/Environment/EnvType"),
    ("Image", "Environments/Environment/Image"),
    ("Currency", "PriceSheet/@currency"),
    ("Height", "NetworkCoordinates/Height"),
    ("Error", "NetworkCoordinates/Error"),
    ("Path", "Paths/Path/@toward"),
    (RECEIVED_TOKEN, ""),
];

/// Prefixes of the qualified token families.
const QUALIFIED_FAMILIES: &[&str] = &[
    "Version@",
    "CPUSecond@",
    "MemoryMBSecond@",
    "NetworkGB@",
    "MillionFuel@",
    "SessionStart@",
    "Coordinate@",
];

/// The requirement-side names of the paper's example query, meaning the available amounts.
const REQUIREMENT_ALIASES: &[(&str, &str)] = &[
    ("CPUmsps", "AvailableCPUmsps"),
    ("MemoryMB", "AvailableMemoryMB"),
    ("NetMbps", "AvailableNetMbps"),
];

/// Whether `name` is (or belongs to a family of) the tokens taken from known elements, which
/// free-form tokens may not reuse.
pub fn is_reserved(name: &str) -> bool {
    KNOWN_TOKENS.iter().any(|(canonical, _)| *canonical == name)
        || QUALIFIED_FAMILIES
            .iter()
            .any(|family| name.starts_with(family))
        || REQUIREMENT_ALIASES.iter().any(|(alias, _)| *alias == name)
}

/// The canonical token a lookup names: aliases and element paths are mapped to canonical names;
/// anything else is taken as it is (a free-form token name, or a qualified one).
pub fn resolve_token(name: &str) -> &str {
    let name = name.strip_prefix("ServerAdvertisement/").unwrap_or(name);
    if let Some((_, canonical)) = REQUIREMENT_ALIASES.iter().find(|(alias, _)| *alias == name) {
        return canonical;
    }
    if let Some((canonical, _)) = KNOWN_TOKENS
        .iter()
        .find(|(canonical, path)| *canonical == name || (!path.is_empty() && *path == name))
    {
        return canonical;
    }
    name
}

fn number(name: impl Into<String>, value: f64) -> Token {
    Token {
        name: name.into(),
        value: TokenValue::Number(value),
    }
}

fn text(name: impl Into<String>, value: impl Into<String>) -> Token {
    Token {
        name: name.into(),
        value: TokenValue::Text(value.into()),
    }
}

#[allow(clippy::cast_precision_loss)] // Counts and sizes far below 2^53.
fn count(name: &str, value: Option<u64>, out: &mut Vec<Token>) {
    if let Some(value) = value {
        out.push(number(name, value as f64));
    }
}

fn decimal(name: &str, value: Option<Decimal>, out: &mut Vec<Token>) {
    if let Some(value) = value {
        out.push(number(name, value.to_f64()));
    }
}

#[allow(clippy::cast_precision_loss)] // kbps values fit f64 exactly.
fn mbps(name: &str, kbps: Option<u64>, out: &mut Vec<Token>) {
    if let Some(kbps) = kbps {
        out.push(number(name, kbps as f64 / 1000.0));
    }
}

#[allow(clippy::cast_precision_loss)] // Prices: 18 digits at most; f64 keeps ~16 (documented).
fn price(name: &str, currency: &str, pico: Option<u64>, out: &mut Vec<Token>) {
    if let Some(pico) = pico {
        out.push(number(format!("{name}@{currency}"), pico as f64 / 1e12));
    }
}

/// Why an advertisement's tokens cannot be indexed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// A free-form token takes the name of a known one.
    #[error("Tokens/Token name {0:?} is reserved for the element of that name")]
    Reserved(String),
}

/// Every token of `advertisement` as the XIS indexes it (without `Received`, which the store
/// adds), duplicates removed, in document order.
pub fn extract(advertisement: &ServerAdvertisement) -> Result<Vec<Token>, TokenError> {
    let mut out = Vec::new();
    out.push(text("ServerId", &advertisement.server_id));
    count("Version", Some(advertisement.version), &mut out);
    out.push(text("Endpoint", &advertisement.endpoint));
    for corp in &advertisement.corps {
        out.push(text("Corp", corp));
    }
    if let Some(location) = &advertisement.location {
        for (name, value) in [
            ("Country", &location.country),
            ("Region", &location.region),
            ("City", &location.city),
        ] {
            if let Some(value) = value {
                out.push(text(name, value));
            }
        }
        decimal("Latitude", location.latitude, &mut out);
        decimal("Longitude", location.longitude, &mut out);
    }
    if let Some(load) = &advertisement.load {
        decimal("CPUUtilisation", load.cpu_utilisation_percent, &mut out);
        decimal("LoadAverage", load.load_average, &mut out);
        count("ConnectedClients", load.connected_clients, &mut out);
        count("Sessions", load.sessions, &mut out);
        count("AvailableCPUmsps", load.available_cpu_msps, &mut out);
        count("AvailableMemoryMB", load.available_memory_mb, &mut out);
        mbps("BandwidthMbps", load.bandwidth_kbps, &mut out);
        mbps("AvailableNetMbps", load.available_kbps, &mut out);
    }
    for environment in &advertisement.environments {
        out.push(text("EnvType", &environment.env_type));
        for version in &environment.versions {
            out.push(text(format!("Version@{}", environment.env_type), version));
        }
        for image in &environment.images {
            out.push(text("Image", image));
        }
    }
    for sheet in &advertisement.price_sheets {
        let currency = sheet.currency.as_str();
        out.push(text("Currency", currency));
        price("CPUSecond", currency, sheet.cpu_second_pico, &mut out);
        price(
            "MemoryMBSecond",
            currency,
            sheet.memory_mb_second_pico,
            &mut out,
        );
        price("NetworkGB", currency, sheet.network_gb_pico, &mut out);
        price("MillionFuel", currency, sheet.million_fuel_pico, &mut out);
        price("SessionStart", currency, sheet.session_start_pico, &mut out);
    }
    if let Some(coordinates) = &advertisement.coordinates {
        for (index, component) in coordinates.components.iter().enumerate() {
            out.push(number(format!("Coordinate@{index}"), component.to_f64()));
        }
        decimal("Height", coordinates.height, &mut out);
        decimal("Error", coordinates.error, &mut out);
    }
    for path in &advertisement.paths {
        out.push(text("Path", &path.toward));
    }
    for (name, value) in &advertisement.tokens {
        if is_reserved(name) {
            return Err(TokenError::Reserved(name.clone()));
        }
        out.push(Token {
            name: name.clone(),
            value: TokenValue::parse_free(value),
        });
    }
    let mut unique: Vec<Token> = Vec::with_capacity(out.len());
    for token in out {
        if !unique.contains(&token) {
            unique.push(token);
        }
    }
    debug_assert!(unique.len() < TOKENS_PER_ADVERTISEMENT_MAX);
    Ok(unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_plain_decimals_only() {
        assert_eq!(parse_plain_number("750.5"), Some(750.5));
        assert_eq!(parse_plain_number("-3"), Some(-3.0));
        for text in ["", "1e5", "NaN", "inf", ".5", "5.", "+1", "1 ", "0x10"] {
            assert_eq!(parse_plain_number(text), None, "{text:?}");
        }
        assert_eq!(format_number(-0.0), "0");
        assert_eq!(format_number(0.000_000_001), "0.000000001");
        assert_eq!(format_number(1700.0), "1700");
    }

    #[test]
    fn aliases_resolve_to_canonical_names() {
        assert_eq!(
            resolve_token("ServerAdvertisement/Load/AvailableCPUmsps"),
            "AvailableCPUmsps"
        );
        assert_eq!(resolve_token("Environments/Environment/EnvType"), "EnvType");
        assert_eq!(resolve_token("CPUSecond@GBP"), "CPUSecond@GBP");
        assert!(is_reserved("Country") && is_reserved("Version@Linux") && !is_reserved("gpu"));
    }
}
