//! Showing what other parties wrote (reasons, names, notes): characters that could disguise
//! the text around them are escaped.

/// `text` as it may be printed.
pub fn safe(text: &str) -> std::borrow::Cow<'_, str> {
    xeno_schemas::text::escape_for_display(text)
}
