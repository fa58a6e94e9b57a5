//! Values a user controls, cut to a sane length before they are echoed in
//! a message, so that a megabyte-long tag never becomes a megabyte-long
//! reason or log line.

/// How much of a user's value is echoed.
pub const ECHO_BYTES: usize = 200;

/// How much of a whole message built around a user's input (a parser's
/// error, say) is echoed.
pub const MESSAGE_BYTES: usize = 1024;

/// `text` if it is short; otherwise its first [`ECHO_BYTES`] (at a
/// character boundary) and a marker saying how long it was.
pub fn bounded(text: &str) -> String {
    cut(text, ECHO_BYTES)
}

/// [`bounded`] for a whole message, at [`MESSAGE_BYTES`].
pub fn bounded_message(text: &str) -> String {
    cut(text, MESSAGE_BYTES)
}

/// `text` cut so that, marker included, it is at most `total` bytes (for
/// fields the API server limits, such as an Event's note).
pub fn bounded_within(text: &str, total: usize) -> String {
    if text.len() <= total {
        return text.to_string();
    }
    // The marker is at most 32 bytes ("…[cut: " + 20 digits + " bytes]").
    cut(text, total.saturating_sub(32))
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[cut: {} bytes]", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_value_is_echoed_whole() {
        assert_eq!(bounded("3.4.4"), "3.4.4");
    }

    #[test]
    fn a_long_value_is_cut_at_a_character_boundary_with_a_marker() {
        let long = "é".repeat(300);
        let cut = bounded(&long);
        assert!(cut.starts_with(&"é".repeat(100)));
        assert!(cut.ends_with("…[cut: 600 bytes]"), "{cut}");
        assert!(cut.len() < ECHO_BYTES + 30);
    }
}
