//! Shell-style glob matching for `list_account` wildcards, over characters (Unicode scalar
//! values), not bytes.
//!
//! Syntax: `*` matches any run of characters, including the empty one; `?` matches exactly one
//! character; `[...]` matches one character from a class of single characters and ranges `a-z`,
//! negated by a leading `!` or `^`; a `]` first in a class (after any negation) is a literal; a
//! `-` first or last in a class is a literal; a `[` with no closing `]` is a literal `[`. A
//! backslash makes the next character literal, inside a class too; a trailing backslash is a
//! literal backslash. Every other character matches itself.
//!
//! Invariant: after parsing, every token but `*` consumes exactly one character, so matching is
//! the classic two-pointer walk that remembers only the most recent `*`. That takes
//! O(pattern × text) steps in the worst case, never exponential time, whatever the pattern.
//! The module is pure: no allocation beyond the parsed pattern and the text's characters.

/// One element of a parsed pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// Matches exactly this character.
    Literal(char),
    /// `?`: matches any one character.
    AnyChar,
    /// `*`: matches any run of characters, including none.
    AnyRun,
    /// `[...]`: matches one character inside (or, negated, outside) the inclusive ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    /// Whether this single-character token accepts `character`; `AnyRun` never does here, since
    /// the matcher handles it before asking.
    fn accepts(&self, character: char) -> bool {
        match self {
            Token::Literal(literal) => *literal == character,
            Token::AnyChar => true,
            Token::AnyRun => false,
            Token::Class { negated, ranges } => {
                let inside = ranges
                    .iter()
                    .any(|&(low, high)| low <= character && character <= high);
                inside != *negated
            }
        }
    }
}

/// A parsed glob pattern, to match many texts against one pattern without parsing it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Parses `pattern`. Every string is a valid pattern, so this cannot fail.
    pub fn new(pattern: &str) -> Pattern {
        let characters: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::with_capacity(characters.len());
        let mut position = 0;
        while position < characters.len() {
            let (token, consumed) = parse_token(&characters[position..]);
            assert!(
                consumed >= 1,
                "glob: a token consumes at least one character"
            );
            tokens.push(token);
            position += consumed;
        }
        Pattern { tokens }
    }

    /// Whether the whole of `text` matches this pattern.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        match_tokens(&self.tokens, &text)
    }
}

/// Whether the whole of `text` matches the shell glob `pattern` (see the module docs).
pub fn matches(pattern: &str, text: &str) -> bool {
    Pattern::new(pattern).matches(text)
}

/// Parses the token at the start of `characters` (never empty); returns it and how many
/// characters it used.
fn parse_token(characters: &[char]) -> (Token, usize) {
    match characters[0] {
        '*' => (Token::AnyRun, 1),
        '?' => (Token::AnyChar, 1),
        '\\' => match characters.get(1) {
            Some(&escaped) => (Token::Literal(escaped), 2),
            None => (Token::Literal('\\'), 1),
        },
        '[' => parse_class(characters).unwrap_or((Token::Literal('['), 1)),
        literal => (Token::Literal(literal), 1),
    }
}

/// Parses a class starting at `characters[0] == '['`; `None` if it has no closing `]`, in which
/// case the caller takes the `[` as a literal and parses on from the next character.
fn parse_class(characters: &[char]) -> Option<(Token, usize)> {
    let negated = matches!(characters.get(1), Some('!' | '^'));
    let mut position = if negated { 2 } else { 1 };
    let mut ranges = Vec::new();
    loop {
        let next = *characters.get(position)?;
        if next == ']' && !ranges.is_empty() {
            return Some((Token::Class { negated, ranges }, position + 1));
        }
        let (low, after_low) = parse_class_character(characters, position)?;
        let range_follows = characters.get(after_low) == Some(&'-')
            && characters
                .get(after_low + 1)
                .is_some_and(|&high| high != ']');
        if range_follows {
            let (high, after_high) = parse_class_character(characters, after_low + 1)?;
            ranges.push((low, high));
            position = after_high;
        } else {
            ranges.push((low, low));
            position = after_low;
        }
    }
}

/// One class member at `position`, honouring a backslash escape; returns it and the position
/// after it, or `None` if the pattern ends first.
fn parse_class_character(characters: &[char], position: usize) -> Option<(char, usize)> {
    match *characters.get(position)? {
        '\\' => characters
            .get(position + 1)
            .map(|&escaped| (escaped, position + 2)),
        member => Some((member, position + 1)),
    }
}

/// Matches the whole of `text` against `tokens`. On a mismatch it retries from the most recent
/// `*`, letting that star absorb one more character; earlier stars never need revisiting,
/// because the latest star can absorb anything an earlier one could.
fn match_tokens(tokens: &[Token], text: &[char]) -> bool {
    walk(tokens, text).0
}

/// The matcher's walk: whether `text` matches, and how many loop steps that took (the bound in
/// the module doc, which the tests check by counting rather than by timing).
fn walk(tokens: &[Token], text: &[char]) -> (bool, usize) {
    let mut steps = 0;
    let mut token_index = 0;
    let mut text_index = 0;
    // The token after the latest `*`, and the text position that `*` has absorbed up to.
    let mut latest_star: Option<(usize, usize)> = None;
    while text_index < text.len() {
        steps += 1;
        match tokens.get(token_index) {
            Some(Token::AnyRun) => {
                token_index += 1;
                latest_star = Some((token_index, text_index));
            }
            Some(token) if token.accepts(text[text_index]) => {
                token_index += 1;
                text_index += 1;
            }
            _ => match latest_star {
                Some((after_star, absorbed_until)) => {
                    token_index = after_star;
                    text_index = absorbed_until + 1;
                    latest_star = Some((after_star, text_index));
                }
                None => return (false, steps),
            },
        }
    }
    let matched = tokens[token_index..]
        .iter()
        .all(|token| *token == Token::AnyRun);
    (matched, steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a table of (pattern, text, expected) rows, naming the failing row.
    fn check_table(rows: &[(&str, &str, bool)]) {
        for &(pattern, text, expected) in rows {
            assert_eq!(
                matches(pattern, text),
                expected,
                "matches({pattern:?}, {text:?}) should be {expected}"
            );
        }
    }

    #[test]
    fn empty_pattern_matches_only_empty_text() {
        check_table(&[("", "", true), ("", "a", false), ("", " ", false)]);
    }

    #[test]
    fn literal_pattern_matches_only_itself() {
        check_table(&[
            ("alice", "alice", true),
            ("alice", "alic", false),
            ("alice", "alicee", false),
            ("alice", "Alice", false),
            ("", "alice", false),
        ]);
    }

    #[test]
    fn star_matches_any_run_including_empty() {
        check_table(&[
            ("*", "", true),
            ("*", "anything at all", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ba", false),
            ("*c", "abc", true),
            ("*c", "abcd", false),
            ("a*c", "ac", true),
            ("a*c", "abbbc", true),
            ("a*c", "abcb", false),
            ("**", "x", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXcYb", false),
        ]);
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        check_table(&[
            ("?", "a", true),
            ("?", "", false),
            ("?", "ab", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("??", "ab", true),
            ("?*", "", false),
            ("?*", "a", true),
        ]);
    }

    #[test]
    fn question_mark_counts_characters_not_bytes() {
        check_table(&[
            ("?", "é", true),
            ("?", "🙂", true),
            ("??", "🙂", false),
            ("a?", "añ", true),
        ]);
    }

    #[test]
    fn class_matches_one_listed_character() {
        check_table(&[
            ("[abc]", "a", true),
            ("[abc]", "c", true),
            ("[abc]", "d", false),
            ("[abc]", "", false),
            ("[abc]", "ab", false),
            ("x[yz]", "xz", true),
            ("[ñü]", "ü", true),
        ]);
    }

    #[test]
    fn class_range_matches_inclusive_bounds() {
        check_table(&[
            ("[a-c]", "a", true),
            ("[a-c]", "b", true),
            ("[a-c]", "c", true),
            ("[a-c]", "d", false),
            ("[a-cx-z]", "y", true),
            ("[0-9]*", "7up", true),
            ("[z-a]", "m", false),
        ]);
    }

    #[test]
    fn class_negation_with_bang_or_caret() {
        check_table(&[
            ("[!abc]", "d", true),
            ("[!abc]", "a", false),
            ("[^abc]", "d", true),
            ("[^abc]", "b", false),
            ("[!a-z]", "A", true),
            ("[!a-z]", "q", false),
            ("[!a]", "", false),
        ]);
    }

    #[test]
    fn class_close_bracket_first_is_literal() {
        check_table(&[
            ("[]]", "]", true),
            ("[]a]", "a", true),
            ("[]a]", "b", false),
            ("[!]]", "]", false),
            ("[!]]", "x", true),
            ("[^]a]", "a", false),
        ]);
    }

    #[test]
    fn class_dash_first_or_last_is_literal() {
        check_table(&[
            ("[-a]", "-", true),
            ("[a-]", "-", true),
            ("[a-]", "b", false),
            ("[!-]", "-", false),
        ]);
    }

    #[test]
    fn unterminated_bracket_is_literal() {
        check_table(&[
            ("[", "[", true),
            ("[abc", "[abc", true),
            ("[abc", "a", false),
            ("[a*", "[abc", true),
            ("[]", "[]", true),
            ("[!]", "[!]", true),
            ("a[", "a[", true),
        ]);
    }

    #[test]
    fn backslash_escapes_next_character() {
        check_table(&[
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("\\?", "?", true),
            ("\\?", "a", false),
            ("\\[a]", "[a]", true),
            ("\\[a]", "a", false),
            ("\\\\", "\\", true),
            ("\\a", "a", true),
            ("a\\", "a\\", true),
        ]);
    }

    #[test]
    fn backslash_escapes_inside_class() {
        check_table(&[
            ("[\\]]", "]", true),
            ("[\\]]", "\\", false),
            ("[a\\-z]", "-", true),
            ("[a\\-z]", "b", false),
            ("[\\!a]", "!", true),
        ]);
    }

    #[test]
    fn pathological_pattern_takes_at_most_pattern_times_text_steps() {
        let text: Vec<char> = "a".repeat(10_000).chars().collect();
        for (pattern, expected) in [
            ("*a".repeat(100) + "b", false),
            ("*a".repeat(100) + "*", true),
        ] {
            let tokens = Pattern::new(&pattern).tokens;
            let (matched, steps) = walk(&tokens, &text);
            assert_eq!(matched, expected, "{pattern}");
            assert!(
                steps <= (tokens.len() + 1) * (text.len() + 1),
                "{steps} steps for {pattern}"
            );
        }
    }

    #[test]
    fn star_backtracks_past_a_false_start() {
        check_table(&[
            ("*ab", "aab", true),
            ("*aab", "aaab", true),
            ("a*ab*c", "aXaYabZc", true),
            ("*a?c", "abcaxc", true),
            ("*[0-9]", "abc1", true),
            ("*[0-9]", "abc1x", false),
        ]);
    }

    #[test]
    fn parsed_pattern_matches_like_the_function() {
        let pattern = Pattern::new("a*[0-9]?");
        for text in ["a1x", "abc9z", "a1", "b1x", ""] {
            assert_eq!(pattern.matches(text), matches("a*[0-9]?", text), "{text:?}");
        }
    }
}
