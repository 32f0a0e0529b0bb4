//! Text from other parties, shown to people: names, addresses, reasons, task output notes.
//!
//! Some characters change how the text around them looks without being seen themselves:
//! control characters, and the Unicode bidirectional controls that reorder what follows them
//! (U+202E RIGHT-TO-LEFT OVERRIDE turns `exe.txt` into what reads as `txt.exe`). Registrations
//! refuse them in names ([`unsafe_char`]); whatever a client or web page shows of another
//! party's text is escaped ([`escape_for_display`]), so that nothing can disguise itself.
//!
//! ```
//! use xeno_schemas::text::{escape_for_display, unsafe_char};
//!
//! assert_eq!(unsafe_char("Mallory \u{202e}gnp.exe"), Some('\u{202e}'));
//! assert_eq!(unsafe_char("Zoë Ødegård"), None);
//! assert_eq!(escape_for_display("evil\u{202e}txt"), "evil\\u{202e}txt");
//! assert_eq!(escape_for_display("plain"), "plain");
//! ```

use std::borrow::Cow;

/// Whether `c` is a Unicode bidirectional formatting character: the embeddings, overrides and
/// isolates (U+202A–U+202E, U+2066–U+2069) and the marks (U+200E, U+200F, U+061C).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` cannot appear in text shown to people as it is: a control character other than
/// newline and tab, or a bidirectional control.
pub fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c)
}

/// The first character of `text` that cannot be shown as it is, if any.
pub fn unsafe_char(text: &str) -> Option<char> {
    text.chars().find(|c| is_unsafe(*c))
}

/// `text` with every character that cannot be shown as it is written as a `\u{…}` escape.
pub fn escape_for_display(text: &str) -> Cow<'_, str> {
    if unsafe_char(text).is_none() {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) {
            escaped.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}
