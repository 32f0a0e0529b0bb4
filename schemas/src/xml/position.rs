//! Byte offsets into line:column positions, for error messages people can act on.

use std::fmt;

/// A place in a document: 1-based line and column, the column counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// 1-based line number.
    pub line: u32,
    /// 1-based column, in Unicode scalar values from the start of the line.
    pub column: u32,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Maps byte offsets of one document to positions. Built once per document; each lookup is a
/// binary search over line starts, so errors cost nothing until they happen.
#[derive(Debug, Clone)]
pub struct LineIndex {
    line_starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes `text`. A line ends at `\n`; a `\r\n` pair ends one line, as XML's end-of-line
    /// handling treats it.
    pub fn new(text: &[u8]) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(
            text.iter()
                .enumerate()
                .filter(|(_, byte)| **byte == b'\n')
                .map(|(offset, _)| offset + 1),
        );
        LineIndex { line_starts }
    }

    /// The position of byte `offset` in `text` (the same bytes given to [`LineIndex::new`]).
    /// Offsets past the end map to the end; an offset inside a multi-byte character maps to
    /// that character.
    pub fn position(&self, text: &[u8], offset: usize) -> Position {
        let offset = offset.min(text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(exact) => exact,
            Err(next) => next - 1,
        };
        let start = self.line_starts[line];
        // Columns count characters, so count the bytes that start one (non-continuation bytes).
        let column = text[start..offset]
            .iter()
            .filter(|byte| (**byte & 0xC0) != 0x80)
            .count();
        Position {
            line: u32::try_from(line + 1).unwrap_or(u32::MAX),
            column: u32::try_from(column + 1).unwrap_or(u32::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "ab\ncé\r\nxyz".as_bytes();
        let index = LineIndex::new(text);
        assert_eq!(index.position(text, 0), Position { line: 1, column: 1 });
        assert_eq!(index.position(text, 3), Position { line: 2, column: 1 });
        // 'é' is two bytes; the '\r' after it is the third character of line 2.
        assert_eq!(index.position(text, 6), Position { line: 2, column: 3 });
        assert_eq!(index.position(text, 8), Position { line: 3, column: 1 });
        assert_eq!(index.position(text, 999), Position { line: 3, column: 4 });
    }
}
