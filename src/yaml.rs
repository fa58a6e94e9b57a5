//! The one way into the YAML parser. libyaml's scanner re-checks every open
//! flow collection (`[`, `{`) on each token, so 100,000 nested `[` cost
//! seconds of depth² work before serde_yaml_ng's recursion limit refuses them.
//! A linear pre-scan refuses them first, with the same limit. And the walk
//! of files and directories of YAML and JSON, for manifests and policies.

use std::path::{Path, PathBuf};

/// serde_yaml_ng's own recursion limit: nothing deeper parses anyway.
pub const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "flow collections ([ or {{) nested more than {MAX_DEPTH} levels deep at line {line} column {column}"
)]
pub struct TooDeep {
    pub line: usize,
    pub column: usize,
}

/// The documents of a YAML text, once its flow nesting is known to be
/// within [`MAX_DEPTH`].
pub fn documents(text: &str) -> Result<serde_yaml_ng::Deserializer<'_>, TooDeep> {
    check_flow_depth(text)?;
    Ok(serde_yaml_ng::Deserializer::from_str(text))
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Plain,
    Single,
    Double,
    Comment,
    /// Inside a `|` or `>` block scalar whose key line is indented this much.
    Block(usize),
}

/// Counts flow nesting outside quoted scalars, comments and block scalars.
/// A bracket inside a plain scalar (`image: x[1]`) opens nothing: only one at
/// the start of a token, or inside a flow collection, counts.
pub fn check_flow_depth(text: &str) -> Result<(), TooDeep> {
    let bytes = text.as_bytes();
    let (mut state, mut depth) = (State::Plain, 0usize);
    let (mut line, mut column, mut indent, mut at_indent) = (1usize, 0usize, 0usize, true);
    let mut prev = b'\n';
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            if state == State::Comment {
                state = State::Plain;
            }
            (line, column, indent, at_indent, prev) = (line + 1, 0, 0, true, b);
            i += 1;
            if let State::Block(parent) = state {
                i = skip_block_lines(bytes, i, parent, &mut line);
                state = State::Plain;
            }
            continue;
        }
        // Columns count characters, not UTF-8 continuation bytes.
        if b & 0xC0 != 0x80 {
            column += 1;
        }
        if at_indent && b == b' ' {
            indent += 1;
        } else {
            at_indent = false;
        }
        let token_start = matches!(prev, b' ' | b'\t' | b'\n')
            || (depth > 0 && matches!(prev, b'[' | b'{' | b',' | b':'));
        match state {
            State::Comment | State::Block(_) => {}
            State::Single if b == b'\'' => {
                if bytes.get(i + 1) == Some(&b'\'') {
                    i += 1;
                    column += 1;
                } else {
                    state = State::Plain;
                }
            }
            // An escaped newline is still a new line: left to the top.
            State::Double if b == b'\\' && bytes.get(i + 1) != Some(&b'\n') => {
                i += 1;
                column += 1;
            }
            State::Double if b == b'"' => state = State::Plain,
            State::Single | State::Double => {}
            State::Plain => match b {
                b'#' if matches!(prev, b' ' | b'\t' | b'\n') => state = State::Comment,
                b'\'' if token_start => state = State::Single,
                b'"' if token_start => state = State::Double,
                b'[' | b'{' if token_start => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(TooDeep { line, column });
                    }
                }
                b']' | b'}' if depth > 0 => depth -= 1,
                b'|' | b'>'
                    if depth == 0
                        && matches!(prev, b' ' | b'\t')
                        && block_header(&bytes[i + 1..]) =>
                {
                    state = State::Block(indent);
                }
                _ => {}
            },
        }
        prev = b;
        i += 1;
    }
    Ok(())
}

/// Whether what follows `|` or `>` on its line is only a block scalar's
/// indicators and perhaps a comment.
fn block_header(rest: &[u8]) -> bool {
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let line = &rest[..end];
    let indicators = line
        .iter()
        .take_while(|b| matches!(b, b'+' | b'-' | b'0'..=b'9'))
        .count();
    let after = &line[indicators..];
    let tail = after.trim_ascii_start();
    // A comment needs white space before it.
    tail.is_empty() || (tail[0] == b'#' && tail.len() < after.len())
}

/// Skips the lines of a block scalar: blank ones and those indented more than
/// its key line. Returns where the first line after it starts.
fn skip_block_lines(bytes: &[u8], mut i: usize, parent: usize, line: &mut usize) -> usize {
    while i < bytes.len() {
        let end = bytes[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |p| i + p);
        let text = &bytes[i..end];
        let spaces = text.iter().take_while(|&&b| b == b' ').count();
        let blank = text.trim_ascii().is_empty();
        if !blank && spaces <= parent {
            return i;
        }
        if end == bytes.len() {
            return end;
        }
        *line += 1;
        i = end + 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(text: &str) -> Option<(usize, usize)> {
        check_flow_depth(text).err().map(|e| (e.line, e.column))
    }

    #[test]
    fn nesting_past_the_limit_is_refused_where_it_happens() {
        let deep = format!("kind: X\nspec: {}{}\n", "[".repeat(200), "]".repeat(200));
        assert_eq!(depth_error(&deep), Some((2, 7 + MAX_DEPTH)));
        assert_eq!(
            check_flow_depth(&deep).unwrap_err().to_string(),
            "flow collections ([ or {) nested more than 128 levels deep at line 2 column 135"
        );
        let maps = format!("a: {}1{}\n", "{b: ".repeat(129), "}".repeat(129));
        assert_eq!(depth_error(&maps), Some((1, 4 + 4 * 128)));
    }

    #[test]
    fn nesting_up_to_the_limit_is_left_to_the_parser() {
        let ok = format!("a: {}{}\n", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(depth_error(&ok), None);
    }

    #[test]
    fn brackets_in_scalars_comments_and_block_scalars_open_nothing() {
        let many = "[".repeat(300);
        let texts = [
            format!("a: x{many}\n"),
            format!("a: '{many}'\nb: 'it''s {many}'\n"),
            format!("a: \"\\\"{many}\"\n"),
            format!("a: 1 # {many}\n"),
            format!("script: |\n  {many}\n\n  {many}\nb: [1]\n"),
            format!("- >-\n  {many}\n- x\n"),
        ];
        for text in &texts {
            assert_eq!(depth_error(text), None, "{text:.60}");
        }
        // A quote inside a plain scalar starts nothing either.
        let quote = format!("a: don't\nb: {many}\n");
        assert_eq!(depth_error(&quote), Some((2, 4 + MAX_DEPTH)));
        // An escaped line break inside a double-quoted scalar is a line.
        let escaped = format!("a: \"x\\\ny\"\nb: {many}\n");
        assert_eq!(depth_error(&escaped), Some((3, 4 + MAX_DEPTH)));
        // After the block scalar ends, brackets count again.
        let after = format!("s: |\n  x\nb: {}\n", many);
        assert_eq!(depth_error(&after), Some((3, 4 + MAX_DEPTH)));
    }
}

/// A file or directory that cannot be read, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct Unreadable {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

impl Unreadable {
    fn at(path: &Path, source: std::io::Error) -> Unreadable {
        Unreadable {
            path: path.display().to_string(),
            source,
        }
    }
}

/// The file itself, or every `.yaml`/`.yml`/`.json` file below a
/// directory, subdirectories included, in path order.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, Unreadable> {
    let mut files = Vec::new();
    collect(path, &mut files)?;
    Ok(files)
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), Unreadable> {
    let meta = std::fs::metadata(path).map_err(|e| Unreadable::at(path, e))?;
    if !meta.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Unreadable::at(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect(&entry, files)?;
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            files.push(entry);
        }
    }
    Ok(())
}
