//! Payloads: checking that each payload's bytes hash to the SHA-256 it claims, that the task
//! names exactly the payloads it was sent, and that they fit this task manager's limits.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use xeno_schemas::proto::common::v1::Payload;

/// A DeployTask's payloads do not match its task or the limits: the message says how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

/// Payloads by their (verified) SHA-256, lowercase hex.
pub type Payloads = HashMap<String, Bytes>;

/// Verifies every payload's hash and the total size. Blocking: hashing 256 MiB takes a while.
pub fn verify(payloads: Vec<Payload>, total_bytes_max: u64) -> Result<Payloads, PayloadError> {
    let total: u64 = payloads
        .iter()
        .map(|payload| payload.data.len() as u64)
        .sum();
    if total > total_bytes_max {
        return Err(PayloadError(format!(
            "payloads total {total} bytes; this task manager accepts at most {total_bytes_max} per task"
        )));
    }
    let mut verified = Payloads::new();
    for payload in payloads {
        let actual = hex::encode(Sha256::digest(&payload.data));
        if actual != payload.sha256 {
            return Err(PayloadError(format!(
                "payload declared as sha256 {:?} hashes to {actual}",
                payload.sha256
            )));
        }
        verified.insert(actual, Bytes::from(payload.data));
    }
    Ok(verified)
}

/// Checks that the task names exactly the payloads it came with.
pub fn check_named(named: &[&str], payloads: &Payloads) -> Result<(), PayloadError> {
    if let Some(missing) = named.iter().find(|hash| !payloads.contains_key(**hash)) {
        return Err(PayloadError(format!(
            "the task names payload {missing} but it was not sent"
        )));
    }
    if let Some(extra) = payloads.keys().find(|hash| !named.contains(&hash.as_str())) {
        return Err(PayloadError(format!(
            "payload {extra} was sent but the task does not name it"
        )));
    }
    Ok(())
}

/// What makes two DeployTask requests the same: the document and the payloads' hashes.
pub fn fingerprint(task_xml: &str, payloads: &Payloads) -> [u8; 32] {
    let mut hashes: Vec<&String> = payloads.keys().collect();
    hashes.sort();
    let mut digest = Sha256::new();
    digest.update((task_xml.len() as u64).to_le_bytes());
    digest.update(task_xml.as_bytes());
    for hash in hashes {
        digest.update(hash.as_bytes());
    }
    digest.finalize().into()
}
