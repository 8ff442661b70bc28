//! The content filter: refuses messages containing any configured word.
//!
//! One Aho-Corasick automaton over all the words scans a message once,
//! whatever the number of words (a loop of `contains` would scan it once
//! per word). Matching is on bytes, ASCII case-insensitive.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder};

pub struct ContentFilter {
    automaton: Option<AhoCorasick>,
}

impl ContentFilter {
    pub fn new(words: &[String]) -> Result<ContentFilter, String> {
        let words: Vec<&str> = words
            .iter()
            .map(|w| w.as_str())
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            return Ok(ContentFilter { automaton: None });
        }
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .build(&words)
            .map_err(|e| format!("cannot build the content filter: {e}"))?;
        Ok(ContentFilter {
            automaton: Some(automaton),
        })
    }

    /// Whether `content` contains a filtered word.
    pub fn rejects(&self, content: &[u8]) -> bool {
        self.automaton.as_ref().is_some_and(|a| a.is_match(content))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_any_word_case_insensitively() {
        let filter = ContentFilter::new(&["spam".into(), "Buy Now".into()]).unwrap();
        assert!(filter.rejects(b"this is SPAM"));
        assert!(filter.rejects(b"please buy now!"));
        assert!(!filter.rejects(b"a normal message"));
        assert!(!ContentFilter::new(&[]).unwrap().rejects(b"spam"));
    }
}
