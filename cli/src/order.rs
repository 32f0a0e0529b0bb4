//! `xeno order`: buy a purchase order, narrow and sign it, and inspect one; `xeno account` and
//! `xeno audit` read back what the corp holds.

use crate::profile::Profile;
use crate::refusal::{Refused, from_status};
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use time::OffsetDateTime;
use xeno_schemas::Document;
use xeno_schemas::documents::{Money, PurchaseOrder, Restrictions, UsageRecord, format_minor};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::corp::v1 as pb;
use xeno_schemas::proto::corp::v1::xeno_corp_client::XenoCorpClient;
use xeno_schemas::schema::types::{format_date_time, parse_date_time};

#[derive(Subcommand)]
pub enum OrderCommand {
    /// Buy a purchase order: the corp ring-fences the amount and signs the order.
    Create {
        /// The most that may be charged, in major units (10.50).
        #[arg(long)]
        amount: String,
        /// Currency.
        #[arg(long, default_value = "GBP")]
        currency: String,
        /// Lifetime in seconds (0: the corp's default).
        #[arg(long, default_value_t = 0)]
        lifetime: u64,
        /// Where to write the order (default: the profile's orders directory).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Add your restrictions (which may only narrow the corp's) and sign the order. An order
    /// must be signed before a server can use it, even with no restrictions.
    Restrict {
        /// The order file.
        file: PathBuf,
        /// Only this server (by id) may use the order; repeat for several.
        #[arg(long = "server")]
        servers: Vec<String>,
        /// Only sessions of this environment type; repeat for several.
        #[arg(long = "env-type")]
        env_types: Vec<String>,
        /// Cap on the session's CPUmsps.
        #[arg(long)]
        max_cpu_msps: Option<u64>,
        /// Cap on the session's MemoryMB.
        #[arg(long)]
        max_memory_mb: Option<u64>,
        /// An earlier expiry: a UTC time (2026-11-24T18:00:00Z) or +SECONDS from now.
        #[arg(long)]
        not_after: Option<String>,
        /// A lower cap on the amount, in major units.
        #[arg(long)]
        max_amount: Option<String>,
        /// Where to write the signed order (default: over the input).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Show an order and check its signatures.
    Show {
        /// The order file.
        file: PathBuf,
    },
}

/// Parses a major-unit amount exactly.
pub fn parse_amount(text: &str) -> Result<u64> {
    xeno_schemas::documents::common::parse_major_amount(text).ok_or_else(|| {
        anyhow::Error::new(Refused(format!(
            "{text:?} is not an amount like 10.50 (at most 12 digits before the point and 6 after)"
        )))
    })
}

/// An mTLS connection to the profile's corp.
pub async fn corp(profile: &Profile) -> Result<XenoCorpClient<tonic::transport::Channel>> {
    let channel = xeno_clients::transport::connect(
        &profile.file.corp,
        &profile.corp_ca_pem,
        Some(&profile.credentials),
        &xeno_clients::transport::Peer::Corp(None),
    )
    .await?;
    Ok(XenoCorpClient::new(channel))
}

fn read_order(file: &PathBuf) -> Result<PurchaseOrder> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    PurchaseOrder::parse(&bytes)
        .map_err(|errors| anyhow::Error::new(Refused(format!("{}: {errors}", file.display()))))
}

pub async fn run(command: OrderCommand, profile: &Profile) -> Result<()> {
    match command {
        OrderCommand::Create {
            amount,
            currency,
            lifetime,
            out,
        } => {
            let minor = parse_amount(&amount)?;
            let response = corp(profile)
                .await?
                .create_purchase_order(pb::CreatePurchaseOrderRequest {
                    amount: Some(common::Money {
                        currency,
                        amount_minor: minor,
                    }),
                    lifetime_seconds: lifetime,
                })
                .await
                .map_err(|status| from_status("order refused", status))?
                .into_inner();
            let order = PurchaseOrder::parse(response.purchase_order_xml.as_bytes())
                .map_err(|e| anyhow::anyhow!("the corp sent a bad order: {e}"))?;
            let path = match out {
                Some(path) => path,
                None => {
                    std::fs::create_dir_all(profile.orders_dir())?;
                    profile
                        .orders_dir()
                        .join(format!("{}.xml", order.issued.order_id.replace(':', "_")))
                }
            };
            std::fs::write(&path, &response.purchase_order_xml)
                .with_context(|| format!("writing {}", path.display()))?;
            let available = response.available.unwrap_or_default();
            println!(
                "order {} for {} written to {} (available now {} {})",
                order.issued.order_id,
                order.issued.amount,
                path.display(),
                format_minor(available.amount_minor),
                available.currency
            );
        }
        OrderCommand::Restrict {
            file,
            servers,
            env_types,
            max_cpu_msps,
            max_memory_mb,
            not_after,
            max_amount,
            out,
        } => {
            let mut order = read_order(&file)?;
            let not_after = match not_after {
                None => None,
                Some(text) => Some(match text.strip_prefix('+') {
                    Some(seconds) => {
                        let seconds: i64 = seconds.parse().map_err(|_| {
                            Refused(format!("--not-after {text:?}: expected +SECONDS"))
                        })?;
                        OffsetDateTime::now_utc() + time::Duration::seconds(seconds)
                    }
                    None => parse_date_time(&text).ok_or_else(|| {
                        Refused(format!(
                            "--not-after {text:?}: expected 2026-11-24T18:00:00Z or +SECONDS"
                        ))
                    })?,
                }),
            };
            let max_amount = max_amount
                .map(|text| parse_amount(&text))
                .transpose()?
                .map(|minor| Money {
                    currency: order.issued.amount.currency,
                    minor,
                });
            order.client_restrictions = Some(Restrictions {
                must_validate: None,
                servers: (!servers.is_empty()).then_some(servers),
                env_types: (!env_types.is_empty()).then_some(env_types),
                max_cpu_msps,
                max_memory_mb,
                not_after,
                max_amount,
            });
            order.client_signature = None;
            order.client_signature =
                Some(profile.signing_key()?.sign(&order.client_signed_bytes())?);
            let path = out.unwrap_or(file);
            std::fs::write(&path, order.to_xml())
                .with_context(|| format!("writing {}", path.display()))?;
            println!(
                "order {} restricted and signed: {}",
                order.issued.order_id,
                path.display()
            );
        }
        OrderCommand::Show { file } => show(&read_order(&file)?, profile)?,
    }
    Ok(())
}

/// The DER SubjectPublicKeyInfo of a PEM certificate.
fn certificate_key(pem: &str) -> Option<Vec<u8>> {
    let der = xeno_schemas::signing::pem_to_der(pem, "CERTIFICATE")?;
    let (_, certificate) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(certificate.tbs_certificate.subject_pki.raw.to_vec())
}

fn show(order: &PurchaseOrder, profile: &Profile) -> Result<()> {
    let issued = &order.issued;
    println!("order      {}", issued.order_id);
    println!("corp       {}", issued.corp);
    println!("client     {}", issued.client);
    println!("amount     {}", issued.amount);
    println!("issued     {}", format_date_time(issued.issued_at));
    println!("expires    {}", format_date_time(issued.expires_at));
    let describe = |restrictions: &Restrictions| {
        let mut parts = Vec::new();
        if let Some(v) = restrictions.must_validate {
            parts.push(format!("must validate: {v}"));
        }
        if let Some(v) = &restrictions.servers {
            parts.push(format!("servers: {}", v.join(", ")));
        }
        if let Some(v) = &restrictions.env_types {
            parts.push(format!("environment types: {}", v.join(", ")));
        }
        if let Some(v) = restrictions.max_cpu_msps {
            parts.push(format!("CPUmsps at most {v}"));
        }
        if let Some(v) = restrictions.max_memory_mb {
            parts.push(format!("MemoryMB at most {v}"));
        }
        if let Some(v) = restrictions.not_after {
            parts.push(format!("not after {}", format_date_time(v)));
        }
        if let Some(v) = restrictions.max_amount {
            parts.push(format!("at most {v}"));
        }
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join("; ")
        }
    };
    println!("corp restrictions    {}", describe(&issued.restrictions));
    if let Some(restrictions) = &order.client_restrictions {
        println!("client restrictions  {}", describe(restrictions));
    }
    let corp_key_ok = certificate_key(&profile.corp_ca_pem)
        .is_some_and(|key| key == order.corp_signature.public_key);
    let corp_valid = corp_key_ok
        && xeno_schemas::signing::verify(
            &order.corp_signature,
            &PurchaseOrder::corp_signed_bytes(issued),
        )
        .is_ok();
    println!(
        "corp signature       {}",
        if corp_valid { "valid" } else { "INVALID" }
    );
    let client_valid = order.client_signature.as_ref().map(|signature| {
        xeno_schemas::signing::verify(signature, &order.client_signed_bytes()).is_ok()
    });
    println!(
        "client signature     {}",
        match client_valid {
            None => "not signed yet (run `xeno order restrict`)",
            Some(true) => "valid",
            Some(false) => "INVALID",
        }
    );
    if !corp_valid || client_valid == Some(false) {
        return Err(anyhow::Error::new(Refused(
            "the order's signatures do not verify".to_owned(),
        )));
    }
    Ok(())
}

fn money_text(money: Option<&common::Money>) -> String {
    money
        .map(|m| format!("{} {}", format_minor(m.amount_minor), m.currency))
        .unwrap_or_default()
}

/// `xeno account`.
pub async fn account(profile: &Profile) -> Result<()> {
    let account = corp(profile)
        .await?
        .get_account(pb::GetAccountRequest {})
        .await
        .map_err(|s| from_status("account", s))?
        .into_inner();
    println!("account {} ({})", account.account_id, account.role);
    for balance in &account.balances {
        println!(
            "  available {}   reserved {}",
            money_text(balance.available.as_ref()),
            money_text(balance.reserved.as_ref())
        );
    }
    for order in &account.orders {
        let state = pb::OrderState::try_from(order.state).map_or("unknown", |s| s.as_str_name());
        println!(
            "  {}  {}  charged {} of {}",
            order.order_id,
            state,
            money_text(order.charged.as_ref()),
            money_text(order.amount.as_ref())
        );
    }
    Ok(())
}

/// `xeno audit ORDER`: every charge on an order with its annotation.
pub async fn audit(profile: &Profile, order_id: String) -> Result<()> {
    let audit = whole_audit(&mut corp(profile).await?, &order_id)
        .await
        .map_err(|s| from_status("audit", s))?;
    print_audit(&audit);
    Ok(())
}

/// An order's whole audit trail: every page the corp serves, joined.
pub async fn whole_audit(
    corp: &mut XenoCorpClient<tonic::transport::Channel>,
    order_id: &str,
) -> Result<pb::AuditOrderResponse, tonic::Status> {
    let mut whole: Option<pb::AuditOrderResponse> = None;
    let mut after_sequence = 0;
    loop {
        let page = corp
            .audit_order(pb::AuditOrderRequest {
                order_id: order_id.to_owned(),
                after_sequence,
                limit: 0,
            })
            .await?
            .into_inner();
        let next = page.next_after_sequence;
        match whole.as_mut() {
            Some(whole) => whole.charges.extend(page.charges),
            None => whole = Some(page),
        }
        // The corp's cursor only moves forward; anything else would loop for ever.
        if next == 0 || next <= after_sequence {
            break;
        }
        after_sequence = next;
    }
    let mut whole = whole.unwrap_or_default();
    whole.next_after_sequence = 0;
    Ok(whole)
}

/// Prints an order's audit trail.
pub fn print_audit(audit: &pb::AuditOrderResponse) {
    let order = audit.order.clone().unwrap_or_default();
    println!(
        "order {} for {} (client {}): charged {}",
        order.order_id,
        money_text(order.amount.as_ref()),
        crate::display::safe(&audit.client_identity),
        money_text(order.charged.as_ref())
    );
    for charge in &audit.charges {
        let outcome =
            pb::ChargeOutcome::try_from(charge.outcome).map_or("unknown", |o| o.as_str_name());
        let usage = UsageRecord::parse(charge.usage_record_xml.as_bytes()).ok();
        let detail = usage.map_or_else(String::new, |u| {
            format!(
                "{} .. {}  cpu {} ms  fuel {}  memory {} MB·s  {}",
                format_date_time(u.period_start),
                format_date_time(u.period_end),
                u.cpu_ms,
                u.fuel.unwrap_or(0),
                format_minor(u.memory_mb_ms * 1000),
                crate::display::safe(&u.activity.unwrap_or_default())
            )
        });
        println!(
            "  #{:<5} {:>14}  {:<32} {detail}",
            charge.sequence,
            money_text(charge.amount.as_ref()),
            outcome
        );
    }
}
