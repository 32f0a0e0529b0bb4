//! Pricing usage by the server's price sheet, exactly. Prices are integer picounits (10^-12 of
//! the major unit) per unit; a period's cost is computed in a finer unit still and the fraction
//! of a minor unit left over is carried to the next charge, so rounding never loses or invents
//! money however the usage is split into periods.

use crate::config;
use xeno_schemas::documents::{Currency, PriceSheet as AdvertisedSheet};
use xeno_schemas::proto::common::v1::Usage;

/// What a session is billed on: its CPU time, or its Wasm fuel (reproducible: the same input
/// costs the same whatever the machine). Memory and network are billed either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// CPU time (the default).
    Time,
    /// Wasm fuel.
    Fuel,
}

impl Basis {
    /// The name used in requirements and usage records.
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Time => "time",
            Basis::Fuel => "fuel",
        }
    }
}

/// The namespace of the requirements extension element that chooses the basis:
/// `<Billing xmlns="urn:xenoserve:billing">fuel</Billing>` inside `Extensions`.
pub const BILLING_NAMESPACE: &str = "urn:xenoserve:billing";

/// The billing basis a session's requirements ask for (time when they say nothing).
pub fn basis_from(extensions: &[xeno_schemas::xml::Element]) -> Result<Basis, String> {
    for element in extensions {
        let (prefix, local) = match element.name.split_once(':') {
            Some((prefix, local)) => (Some(prefix), local),
            None => (None, element.name.as_str()),
        };
        let declaration =
            prefix.map_or_else(|| "xmlns".to_owned(), |prefix| format!("xmlns:{prefix}"));
        let namespace = element
            .attribute(&declaration)
            .map(|attribute| attribute.value.as_str());
        if local == "Billing" && namespace == Some(BILLING_NAMESPACE) {
            return match element.text().0.trim() {
                "time" => Ok(Basis::Time),
                "fuel" => Ok(Basis::Fuel),
                other => Err(format!(
                    "Extensions/Billing: expected time or fuel, got {other:?}"
                )),
            };
        }
    }
    Ok(Basis::Time)
}

/// Picounits per minor unit (10^-6 major).
const PICO_PER_MINOR: u128 = 1_000_000;
/// The unit costs are computed in: 10^-9 picounits, so every price × usage product is exact.
const FINE_PER_PICO: u128 = 1_000_000_000;
const FINE_PER_MINOR: u128 = PICO_PER_MINOR * FINE_PER_PICO;

/// The server's prices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceSheet {
    /// Currency of every price.
    pub currency: Currency,
    /// Per CPU second.
    pub cpu_second_pico: u64,
    /// Per MB-second.
    pub memory_mb_second_pico: u64,
    /// Per gigabyte.
    pub network_gb_pico: u64,
    /// Per million fuel.
    pub million_fuel_pico: u64,
    /// Per session.
    pub session_start_pico: u64,
}

fn pico(field: &str, text: &str) -> anyhow::Result<u64> {
    use xeno_schemas::schema::model::SimpleKind;
    use xeno_schemas::schema::types::{Value, check};
    let kind = SimpleKind::Decimal {
        signed: false,
        integer_digits: 6,
        fraction_digits: 12,
    };
    match check(&kind, text) {
        Ok(Value::Decimal(decimal)) => decimal
            .to_scaled(12)
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| anyhow::anyhow!("pricing.{field}: {text:?} is out of range")),
        Err(expected) => anyhow::bail!("pricing.{field}: expected {expected}, got {text:?}"),
        Ok(_) => anyhow::bail!("pricing.{field}: not a decimal"),
    }
}

impl PriceSheet {
    /// The sheet a configuration describes.
    pub fn from_config(pricing: &config::Pricing) -> anyhow::Result<PriceSheet> {
        Ok(PriceSheet {
            currency: pricing
                .currency
                .parse()
                .map_err(|message: String| anyhow::anyhow!("pricing.currency: {message}"))?,
            cpu_second_pico: pico("cpu_second", &pricing.cpu_second)?,
            memory_mb_second_pico: pico("memory_mb_second", &pricing.memory_mb_second)?,
            network_gb_pico: pico("network_gb", &pricing.network_gb)?,
            million_fuel_pico: pico("million_fuel", &pricing.million_fuel)?,
            session_start_pico: pico("session_start", &pricing.session_start)?,
        })
    }

    /// The sheet as advertised.
    pub fn advertised(&self) -> AdvertisedSheet {
        AdvertisedSheet {
            currency: self.currency,
            cpu_second_pico: Some(self.cpu_second_pico),
            memory_mb_second_pico: Some(self.memory_mb_second_pico),
            network_gb_pico: Some(self.network_gb_pico),
            million_fuel_pico: Some(self.million_fuel_pico),
            session_start_pico: Some(self.session_start_pico),
        }
    }

    /// The cost of `usage` on `basis`, in units of 10^-21 of the major unit.
    pub fn cost_fine(&self, usage: &Usage, basis: Basis) -> u128 {
        let compute = match basis {
            // cpu µs × (pico per s) × 10^9 / 10^6 µs per s.
            Basis::Time => u128::from(usage.cpu_time_us) * u128::from(self.cpu_second_pico) * 1000,
            // fuel × (pico per 10^6 fuel) × 10^9 / 10^6.
            Basis::Fuel => u128::from(usage.fuel) * u128::from(self.million_fuel_pico) * 1000,
        };
        // MB·ms × (pico per MB·s) × 10^9 / 10^3 ms per s.
        let memory =
            u128::from(usage.memory_mb_ms) * u128::from(self.memory_mb_second_pico) * 1_000_000;
        // bytes × (pico per 10^9 bytes) × 10^9 / 10^9.
        let network = (u128::from(usage.net_rx_bytes) + u128::from(usage.net_tx_bytes))
            * u128::from(self.network_gb_pico);
        compute + memory + network
    }

    /// The once-per-session price, in the same fine units.
    pub fn session_start_fine(&self) -> u128 {
        u128::from(self.session_start_pico) * FINE_PER_PICO
    }
}

/// Splits an accumulated fine amount into whole minor units to charge now and the remainder to
/// carry forward.
pub fn split_minor(fine: u128) -> (u64, u128) {
    let minor = u64::try_from(fine / FINE_PER_MINOR).unwrap_or(u64::MAX);
    (minor, fine % FINE_PER_MINOR)
}

/// The componentwise growth from `before` to `after` (cumulative counters never shrink; if one
/// appears to, nothing is billed for it).
pub fn delta(before: &Usage, after: &Usage) -> Usage {
    Usage {
        cpu_time_us: after.cpu_time_us.saturating_sub(before.cpu_time_us),
        memory_mb_ms: after.memory_mb_ms.saturating_sub(before.memory_mb_ms),
        memory_peak_bytes: after.memory_peak_bytes.max(before.memory_peak_bytes),
        net_rx_bytes: after.net_rx_bytes.saturating_sub(before.net_rx_bytes),
        net_tx_bytes: after.net_tx_bytes.saturating_sub(before.net_tx_bytes),
        fuel: after.fuel.saturating_sub(before.fuel),
        syscalls: after.syscalls.saturating_sub(before.syscalls),
        output_bytes: after.output_bytes.saturating_sub(before.output_bytes),
        wall_time_ms: after.wall_time_ms.saturating_sub(before.wall_time_ms),
        compile_time_us: after.compile_time_us.saturating_sub(before.compile_time_us),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sheet() -> PriceSheet {
        PriceSheet::from_config(&config::Pricing::default()).expect("default prices")
    }

    #[test]
    fn a_cpu_second_costs_the_listed_price() {
        let usage = Usage {
            cpu_time_us: 1_000_000,
            ..Usage::default()
        };
        // 0.00002 GBP per CPU second = 20 minor units.
        assert_eq!(split_minor(sheet().cost_fine(&usage, Basis::Time)), (20, 0));
        assert_eq!(split_minor(sheet().cost_fine(&usage, Basis::Fuel)).0, 0);
    }

    #[test]
    fn splitting_usage_into_periods_never_changes_the_total() {
        let sheet = sheet();
        let whole = Usage {
            cpu_time_us: 1_234_567,
            memory_mb_ms: 9_876_543,
            fuel: 7_777_777,
            ..Usage::default()
        };
        let (expected, _) = split_minor(sheet.cost_fine(&whole, Basis::Time));
        let mut charged = 0;
        let mut carry = 0;
        for part in 0..7u64 {
            let slice = Usage {
                cpu_time_us: whole.cpu_time_us * (part + 1) / 7 - whole.cpu_time_us * part / 7,
                memory_mb_ms: whole.memory_mb_ms * (part + 1) / 7 - whole.memory_mb_ms * part / 7,
                ..Usage::default()
            };
            let (minor, rest) = split_minor(carry + sheet.cost_fine(&slice, Basis::Time));
            charged += minor;
            carry = rest;
        }
        assert_eq!(charged, expected);
    }

    #[test]
    fn billing_basis_comes_from_an_extension() {
        use xeno_schemas::Document;
        let requirements = xeno_schemas::documents::EnvironmentalRequirements::parse(
            b"<EnvironmentalRequirements><Basic><EnvName>x</EnvName><EnvType>Wasm</EnvType></Basic>\
              <Extensions><Billing xmlns=\"urn:xenoserve:billing\">fuel</Billing></Extensions></EnvironmentalRequirements>",
        )
        .expect("valid");
        assert_eq!(basis_from(&requirements.extensions), Ok(Basis::Fuel));
        assert_eq!(basis_from(&[]), Ok(Basis::Time));
    }
}
