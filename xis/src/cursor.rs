//! Lookup cursors: where the next page starts, opaque to clients.
//!
//! A lookup walks its posting sets in a fixed order (fresh numbers, fresh texts, then, with
//! `include_stale`, stale numbers and stale texts); a cursor names the set (its *phase*) and the
//! last entry returned in it. It is the URL-safe base64 of
//! `1|<query fingerprint>|<phase>|n|<value bits, hex>|<tie offset>|<member, hex>` for numeric
//! entries, `1|<fingerprint>|<phase>|t|<member, hex>` for text ones, and
//! `1|<fingerprint>|<phase>|-` for the start of a phase. The fingerprint (SHA-256 of the query's
//! token, values and staleness, first 8 bytes) makes a cursor useless with any other query.
//!
//! A cursor walks a live index: entries that change while a client pages may be missed or seen
//! again at their new place; each page is consistent on its own.

use crate::store::Position;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Longest cursor accepted: a member is at most a 256-byte value and a server id, hex-encoded.
pub const CURSOR_BYTES_MAX: usize = 2048;

/// A decoded cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// Index of the posting set to continue in.
    pub phase: usize,
    /// Where in it (none: from its start).
    pub after: Option<Position>,
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not a cursor this XIS wrote.
    #[error("cursor is malformed")]
    Malformed,
    /// A cursor of another query.
    #[error("cursor belongs to a different query")]
    OtherQuery,
}

/// The fingerprint of a query, as cursors carry it.
pub fn fingerprint(token: &str, values: &str, include_stale: bool) -> String {
    let mut hasher = Sha256::new();
    hasher.update(token.as_bytes());
    hasher.update([0]);
    hasher.update(values.as_bytes());
    hasher.update([u8::from(include_stale)]);
    hex::encode(&hasher.finalize()[..8])
}

/// Encodes a cursor for the query with `fingerprint`.
pub fn encode(fingerprint: &str, cursor: &Cursor) -> String {
    let text = match &cursor.after {
        None => format!("1|{fingerprint}|{}|-", cursor.phase),
        Some(Position::Number {
            value,
            member,
            tie_offset,
        }) => format!(
            "1|{fingerprint}|{}|n|{:016x}|{tie_offset}|{}",
            cursor.phase,
            value.to_bits(),
            hex::encode(member)
        ),
        Some(Position::Text(member)) => {
            format!("1|{fingerprint}|{}|t|{}", cursor.phase, hex::encode(member))
        }
    };
    URL_SAFE_NO_PAD.encode(text)
}

/// Decodes a cursor, checking it belongs to the query with `fingerprint`.
pub fn decode(fingerprint: &str, cursor: &str) -> Result<Cursor, CursorError> {
    if cursor.len() > CURSOR_BYTES_MAX {
        return Err(CursorError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| CursorError::Malformed)?;
    let text = String::from_utf8(bytes).map_err(|_| CursorError::Malformed)?;
    let fields: Vec<&str> = text.split('|').collect();
    let member = |hex_text: &str| {
        hex::decode(hex_text)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(CursorError::Malformed)
    };
    let (phase, after) = match fields.as_slice() {
        ["1", print, phase, rest @ ..] => {
            if *print != fingerprint {
                return Err(CursorError::OtherQuery);
            }
            let phase: usize = phase.parse().map_err(|_| CursorError::Malformed)?;
            let after = match rest {
                ["-"] => None,
                ["n", bits, tie, hex_member] => {
                    let bits = u64::from_str_radix(bits, 16).map_err(|_| CursorError::Malformed)?;
                    let value = f64::from_bits(bits);
                    if !value.is_finite() {
                        return Err(CursorError::Malformed);
                    }
                    Some(Position::Number {
                        value,
                        member: member(hex_member)?,
                        tie_offset: tie.parse().map_err(|_| CursorError::Malformed)?,
                    })
                }
                ["t", hex_member] => Some(Position::Text(member(hex_member)?)),
                _ => return Err(CursorError::Malformed),
            };
            (phase, after)
        }
        _ => return Err(CursorError::Malformed),
    };
    Ok(Cursor { phase, after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bind_to_their_query() {
        let print = fingerprint("AvailableCPUmsps", "100..150", false);
        for cursor in [
            Cursor {
                phase: 0,
                after: Some(Position::Number {
                    value: 120.5,
                    member: "ab:120.5".to_owned(),
                    tie_offset: 3,
                }),
            },
            Cursor {
                phase: 1,
                after: Some(Position::Text("Wasm\0ab".to_owned())),
            },
            Cursor {
                phase: 2,
                after: None,
            },
        ] {
            let text = encode(&print, &cursor);
            assert_eq!(decode(&print, &text), Ok(cursor));
            let other = fingerprint("AvailableCPUmsps", "100..151", false);
            assert_eq!(decode(&other, &text), Err(CursorError::OtherQuery));
        }
        assert_eq!(decode(&print, "not a cursor!"), Err(CursorError::Malformed));
    }
}
