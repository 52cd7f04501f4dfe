//! Small text helpers for strings we did not produce (error bodies from the network, proxies).
//!
//! Rust strings index by byte, and cutting inside a multi-byte UTF-8 character panics: every
//! shortening of foreign text goes through [`truncate_on_char_boundary`].

/// Shortens `text` to at most `max_bytes` bytes, cutting at the last character boundary at or
/// before that byte, and appends `…` when something was cut. Never panics.
pub fn truncate_on_char_boundary(text: &mut String, max_bytes: usize) {
    if text.len() <= max_bytes {
        return;
    }
    let mut cut = max_bytes;
    while !text.is_char_boundary(cut) {
        cut -= 1; // 0 is always a boundary, so this ends
    }
    text.truncate(cut);
    text.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_before_a_character_that_straddles_the_limit() {
        let mut text = format!("{}é tail", "a".repeat(199));
        truncate_on_char_boundary(&mut text, 200);
        assert_eq!(text, format!("{}…", "a".repeat(199)));
    }

    #[test]
    fn short_text_is_unchanged_and_exact_fits_are_kept() {
        let mut text = "héllo".to_string();
        truncate_on_char_boundary(&mut text, 6);
        assert_eq!(text, "héllo");
        let mut text = "日本語".to_string();
        truncate_on_char_boundary(&mut text, 4);
        assert_eq!(text, "日…");
        let mut text = "日本語".to_string();
        truncate_on_char_boundary(&mut text, 0);
        assert_eq!(text, "…");
    }
}
