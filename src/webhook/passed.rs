//! The texts that passed the quick read's type check lately, so that the
//! same text is not checked again.
//!
//! The API server sends a workload's pod template over and over: in every
//! update that leaves it alone (a scale, an annotation, a controller's
//! bookkeeping), as the new object and then as the old one. The check is a
//! function of the text and of the types it is read as, both written into
//! what is remembered, so what passed once passes again; only the very
//! same bytes count (no hash stands in for them).

use std::collections::VecDeque;

/// The texts that passed, the most recently used first, within a bound.
pub(super) struct Passed {
    texts: VecDeque<Box<[u8]>>,
    bytes: usize,
    most_texts: usize,
    most_bytes: usize,
}

impl Passed {
    /// Holds at most `most_texts` texts of at most `most_bytes` bytes in all.
    pub(super) fn new(most_texts: usize, most_bytes: usize) -> Self {
        Passed {
            texts: VecDeque::new(),
            bytes: 0,
            most_texts,
            most_bytes,
        }
    }

    /// Whether `text` passed lately; if so it becomes the newest.
    pub(super) fn seen(&mut self, text: &[u8]) -> bool {
        let Some(at) = self.texts.iter().position(|t| **t == *text) else {
            return false;
        };
        if let Some(found) = self.texts.remove(at) {
            self.texts.push_front(found);
        }
        true
    }

    /// Whether a text of `len` bytes would be kept: not one over a quarter
    /// of the bound, which would push out the others.
    pub(super) fn keeps(&self, len: usize) -> bool {
        len <= self.most_bytes / 4
    }

    /// Remembers that `text` passed, forgetting the least recently used
    /// past the bound.
    pub(super) fn remember(&mut self, text: &[u8]) {
        if !self.keeps(text.len()) {
            return;
        }
        self.bytes += text.len();
        self.texts.push_front(text.into());
        while self.texts.len() > self.most_texts || self.bytes > self.most_bytes {
            match self.texts.pop_back() {
                Some(oldest) => self.bytes -= oldest.len(),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_bytes_are_seen() {
        let mut passed = Passed::new(4, 1024);
        passed.remember(br#"{"env":[{"name":"A","value":"1"}]}"#);
        assert!(passed.seen(br#"{"env":[{"name":"A","value":"1"}]}"#));
        assert!(!passed.seen(br#"{"env":[{"name":"A","value":"2"}]}"#));
        assert!(!passed.seen(br#"{"env":[{"name":"A","value":"1"}]} "#));
        assert!(!passed.seen(br#"{"env":[{"name":"A","value":"1"}"#));
        assert!(!passed.seen(b""));
    }

    #[test]
    fn the_oldest_is_forgotten_past_the_count() {
        let mut passed = Passed::new(2, 1024);
        passed.remember(b"one");
        passed.remember(b"two");
        // Seeing "one" makes it the newest, so "two" is the oldest.
        assert!(passed.seen(b"one"));
        passed.remember(b"three");
        assert!(passed.seen(b"one"));
        assert!(passed.seen(b"three"));
        assert!(!passed.seen(b"two"));
    }

    #[test]
    fn the_oldest_is_forgotten_past_the_bytes_and_a_large_text_is_not_kept() {
        let mut passed = Passed::new(16, 40);
        passed.remember(&[b'a'; 10]);
        passed.remember(&[b'b'; 10]);
        passed.remember(&[b'c'; 10]);
        passed.remember(&[b'd'; 10]);
        passed.remember(&[b'e'; 10]);
        assert!(!passed.seen(&[b'a'; 10]));
        assert!(passed.seen(&[b'e'; 10]));
        assert!(passed.seen(&[b'b'; 10]));
        assert_eq!(passed.bytes, 40);
        passed.remember(&[b'f'; 11]);
        assert!(!passed.seen(&[b'f'; 11]));
        assert_eq!(passed.bytes, 40);
    }

    #[test]
    fn nothing_is_kept_with_no_room() {
        let mut passed = Passed::new(0, 1024);
        passed.remember(b"one");
        assert!(!passed.seen(b"one"));
    }
}
