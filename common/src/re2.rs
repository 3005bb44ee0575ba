//! Go's regular-expression syntax (RE2, as Prometheus compiles it) run by Rust's
//! `regex` crate, so a pattern from a Prometheus configuration means here what it
//! means there.
//!
//! The engines agree on semantics (leftmost-first, no backreferences, no
//! lookaround); the syntax differs in ways a user would meet, so a Go pattern is
//! parsed and written out again in Rust's syntax:
//! - `\d \w \s \b` are ASCII in Go (`[0-9]`, `[0-9A-Za-z_]`, `[\t\n\f\r ]`), Unicode in Rust;
//! - in a Go character class `[` is a literal unless it opens `[:name:]`, and
//!   `&&`, `--`, `~~` are literals (Rust: nested classes and set operators);
//! - a `{` that does not open a valid repetition is a literal in Go (an error in
//!   Rust), `{01}` included; repetition counts above 1000 are refused as in Go;
//! - `\Q…\E` quoting, octal `\123`, `\p{^Greek}` exist only in Go's syntax;
//!   `\<`, `\>`, `\u`, `\e`, flags `x`, `u`, `R` only in Rust's (refused here, as Go does).
//!
//! Not handled: Go's limits on nesting depth and program size (Rust's own size
//! limit applies), and `\C`. Matching itself is Rust's; case folding is simple
//! Unicode folding in both.

use regex::Regex;
use std::fmt::Write as _;

/// Why a Go pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Re2Error {
    #[error("invalid regex {pattern:?}: {message} at offset {offset}")]
    Syntax {
        pattern: String,
        offset: usize,
        message: &'static str,
    },
    #[error("invalid regex {pattern:?}: {message}")]
    Compile { pattern: String, message: String },
}

/// Compiles `pattern` as Prometheus compiles relabeling regexes and label
/// matchers since 3.0: anchored at both ends, `.` matching newline
/// (`^(?s:pattern)$`). The wrapper is added before parsing, as Prometheus does,
/// so `a)|(b` behaves as it does there.
pub fn compile_anchored(pattern: &str) -> Result<Regex, Re2Error> {
    let wrapped = format!("^(?s:{pattern})$");
    let rust = translate_inner(&wrapped).map_err(|(offset, message)| Re2Error::Syntax {
        pattern: pattern.to_string(),
        offset: offset.saturating_sub(5),
        message,
    })?;
    Regex::new(&rust).map_err(|e| Re2Error::Compile {
        pattern: pattern.to_string(),
        message: e.to_string(),
    })
}

/// Compiles `pattern` unanchored (Go's `regexp.Compile`).
pub fn compile(pattern: &str) -> Result<Regex, Re2Error> {
    let rust = translate(pattern)?;
    Regex::new(&rust).map_err(|e| Re2Error::Compile {
        pattern: pattern.to_string(),
        message: e.to_string(),
    })
}

/// Rewrites a Go pattern in Rust's syntax (same meaning), or says why Go
/// would refuse it.
pub fn translate(pattern: &str) -> Result<String, Re2Error> {
    translate_inner(pattern).map_err(|(offset, message)| Re2Error::Syntax {
        pattern: pattern.to_string(),
        offset,
        message,
    })
}

type PResult<T> = Result<T, (usize, &'static str)>;

const POSIX_CLASSES: [&str; 14] = [
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
];

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    out: String,
}

fn translate_inner(s: &str) -> PResult<String> {
    let mut p = Parser {
        s,
        pos: 0,
        out: String::with_capacity(s.len() + 16),
    };
    p.run()?;
    Ok(p.out)
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn run(&mut self) -> PResult<()> {
        // Whether the previous token was a repetition operator: Go refuses `a**`.
        let mut last_repeat = false;
        while let Some(c) = self.peek() {
            let start = self.pos;
            let mut is_repeat = false;
            match c {
                '*' | '+' | '?' => {
                    if last_repeat {
                        return Err((start, "invalid nested repetition operator"));
                    }
                    self.bump();
                    self.out.push(c);
                    if self.peek() == Some('?') {
                        self.bump();
                        self.out.push('?');
                    }
                    is_repeat = true;
                }
                '{' => match parse_repeat(self.rest()) {
                    Some((min, max, len)) => {
                        if last_repeat {
                            return Err((start, "invalid nested repetition operator"));
                        }
                        let bad = |n: i64| !(0..=1000).contains(&n);
                        if bad(min) || max > 1000 || (max >= 0 && min > max) || max < -1 {
                            return Err((start, "invalid repeat count"));
                        }
                        self.out.push_str(&self.s[start..start + len]);
                        self.pos += len;
                        if self.peek() == Some('?') {
                            self.bump();
                            self.out.push('?');
                        }
                        is_repeat = true;
                    }
                    None => {
                        self.bump();
                        self.out.push_str(r"\{");
                    }
                },
                '(' => {
                    self.bump();
                    self.group_open(start)?;
                }
                ')' | '|' | '.' | '^' | '$' => {
                    self.bump();
                    self.out.push(c);
                }
                '[' => {
                    self.bump();
                    self.class(start)?;
                }
                '\\' => {
                    self.bump();
                    self.escape_outside(start)?;
                }
                _ => {
                    self.bump();
                    push_literal(&mut self.out, c);
                }
            }
            last_repeat = is_repeat;
        }
        Ok(())
    }

    /// After `(`: a plain group, a named group or a flag group.
    fn group_open(&mut self, start: usize) -> PResult<()> {
        if self.peek() != Some('?') {
            self.out.push('(');
            return Ok(());
        }
        let rest = self.rest();
        let name_start = if rest.starts_with("?P<") {
            Some(3)
        } else if rest.starts_with("?<") {
            Some(2)
        } else if rest.starts_with("?P") {
            return Err((start, "invalid or unsupported Perl syntax"));
        } else {
            None
        };
        if let Some(skip) = name_start {
            let after = &rest[skip..];
            let Some(end) = after.find('>') else {
                return Err((start, "invalid named capture"));
            };
            let name = &after[..end];
            if name.is_empty() || !name.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric()) {
                return Err((start, "invalid named capture"));
            }
            if name.as_bytes()[0].is_ascii_digit() {
                // Go accepts a name that starts with a digit; Rust does not. Such a
                // group can only be referred to by number, so it is kept unnamed.
                self.out.push('(');
            } else {
                let _ = write!(self.out, "(?P<{name}>");
            }
            self.pos += skip + end + 1;
            return Ok(());
        }
        // Flags: [imsU]* optionally `-` [imsU]+, then `:` or `)`.
        self.bump(); // '?'
        let mut flags = String::new();
        let mut negated = false;
        let mut saw_flag = false;
        loop {
            let Some(c) = self.bump() else {
                return Err((start, "missing closing )"));
            };
            match c {
                'i' | 'm' | 's' | 'U' => {
                    flags.push(c);
                    saw_flag = true;
                }
                '-' => {
                    if negated {
                        return Err((start, "invalid or unsupported Perl syntax"));
                    }
                    negated = true;
                    flags.push('-');
                    saw_flag = false;
                }
                ':' | ')' => {
                    if negated && !saw_flag {
                        return Err((start, "invalid or unsupported Perl syntax"));
                    }
                    if c == ':' {
                        let _ = write!(self.out, "(?{flags}:");
                    } else if !flags.is_empty() {
                        let _ = write!(self.out, "(?{flags})");
                    }
                    return Ok(());
                }
                _ => return Err((start, "invalid or unsupported Perl syntax")),
            }
        }
    }

    /// After a `\` outside a class.
    fn escape_outside(&mut self, start: usize) -> PResult<()> {
        let Some(c) = self.peek() else {
            return Err((start, "trailing backslash at end of expression"));
        };
        match c {
            'A' | 'z' => {
                self.bump();
                self.out.push('\\');
                self.out.push(c);
            }
            'b' | 'B' => {
                self.bump();
                let _ = write!(self.out, r"(?-u:\{c})");
            }
            'Q' => {
                self.bump();
                let rest = self.rest();
                let (lit, consumed) = match rest.find(r"\E") {
                    Some(i) => (&rest[..i], i + 2),
                    None => (rest, rest.len()),
                };
                let lit = lit.to_string();
                for ch in lit.chars() {
                    push_literal(&mut self.out, ch);
                }
                self.pos += consumed;
            }
            'p' | 'P' => {
                let class = self.unicode_class(start)?;
                self.out.push_str(&class);
            }
            'd' | 'D' | 'w' | 'W' | 's' | 'S' => {
                self.bump();
                let (set, negated) = perl_class(c);
                let _ = write!(self.out, "[{}{set}]", if negated { "^" } else { "" });
            }
            _ => {
                let ch = self.escape_char(start)?;
                push_literal(&mut self.out, ch);
            }
        }
        Ok(())
    }

    /// `\p{Name}`, `\pL`, `\P…`, `\p{^Name}` (the backslash already read).
    fn unicode_class(&mut self, start: usize) -> PResult<String> {
        let mut neg = self.bump() == Some('P');
        match self.bump() {
            Some('{') => {
                let rest = self.rest();
                let Some(end) = rest.find('}') else {
                    return Err((start, "invalid character class range"));
                };
                let mut name = &rest[..end];
                if let Some(n) = name.strip_prefix('^') {
                    neg = !neg;
                    name = n;
                }
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err((start, "invalid character class range"));
                }
                let name = name.to_string();
                self.pos += end + 1;
                Ok(format!(r"\{}{{{name}}}", if neg { 'P' } else { 'p' }))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                Ok(format!(r"\{}{c}", if neg { 'P' } else { 'p' }))
            }
            _ => Err((start, "invalid character class range")),
        }
    }

    /// Go's `parseEscape`: the character a `\…` escape stands for.
    fn escape_char(&mut self, start: usize) -> PResult<char> {
        let bad = Err((start, "invalid escape sequence"));
        let Some(c) = self.bump() else {
            return Err((start, "trailing backslash at end of expression"));
        };
        match c {
            '1'..='7' if !matches!(self.peek(), Some('0'..='7')) => bad,
            '0'..='7' => {
                let mut r = c as u32 - '0' as u32;
                for _ in 1..3 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            self.bump();
                            r = r * 8 + (d as u32 - '0' as u32);
                        }
                        _ => break,
                    }
                }
                char::from_u32(r).map_or(bad, Ok)
            }
            'x' => {
                let Some(first) = self.bump() else {
                    return bad;
                };
                if first == '{' {
                    let mut r: u32 = 0;
                    let mut n = 0;
                    loop {
                        let Some(d) = self.bump() else {
                            return bad;
                        };
                        if d == '}' {
                            break;
                        }
                        let Some(v) = d.to_digit(16) else {
                            return bad;
                        };
                        r = r * 16 + v;
                        if r > 0x10FFFF {
                            return bad;
                        }
                        n += 1;
                    }
                    if n == 0 {
                        return bad;
                    }
                    char::from_u32(r).map_or(bad, Ok)
                } else {
                    let hi = first.to_digit(16);
                    let lo = self.bump().and_then(|d| d.to_digit(16));
                    match (hi, lo) {
                        (Some(h), Some(l)) => char::from_u32(h * 16 + l).map_or(bad, Ok),
                        _ => bad,
                    }
                }
            }
            'a' => Ok('\x07'),
            'f' => Ok('\x0c'),
            'n' => Ok('\n'),
            'r' => Ok('\r'),
            't' => Ok('\t'),
            'v' => Ok('\x0b'),
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(c),
            _ => bad,
        }
    }

    /// A character class, the `[` already read; written out as a Rust class
    /// whose every item is unambiguous.
    fn class(&mut self, start: usize) -> PResult<()> {
        let mut out = String::from("[");
        if self.peek() == Some('^') {
            self.bump();
            out.push('^');
        }
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err((start, "missing closing ]"));
            };
            if c == ']' && !first {
                self.bump();
                break;
            }
            first = false;
            let rest = self.rest();
            if let Some(i) = rest
                .strip_prefix("[:")
                .filter(|r| !r.is_empty())
                .and_then(|r| r.find(":]"))
            {
                let name = &rest[2..2 + i];
                let bare = name.strip_prefix('^').unwrap_or(name);
                if !POSIX_CLASSES.contains(&bare) {
                    return Err((start, "invalid character class range"));
                }
                let _ = write!(out, "[:{name}:]");
                self.pos += i + 4;
                continue;
            }
            if c == '\\' {
                let after = rest[1..].chars().next();
                match after {
                    Some('p' | 'P') => {
                        self.bump();
                        let u = self.unicode_class(start)?;
                        out.push_str(&u);
                        continue;
                    }
                    Some(k @ ('d' | 'D' | 'w' | 'W' | 's' | 'S')) => {
                        self.pos += 2;
                        let (set, negated) = perl_class(k);
                        if negated {
                            let _ = write!(out, "[^{set}]");
                        } else {
                            out.push_str(set);
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            let lo = self.class_char(start)?;
            let rest = self.rest();
            if rest.len() >= 2 && rest.starts_with('-') && !rest[1..].starts_with(']') {
                self.bump();
                let hi = self.class_char(start)?;
                if hi < lo {
                    return Err((start, "invalid character class range"));
                }
                push_class_char(&mut out, lo);
                out.push('-');
                push_class_char(&mut out, hi);
            } else {
                push_class_char(&mut out, lo);
            }
        }
        out.push(']');
        self.out.push_str(&out);
        Ok(())
    }

    fn class_char(&mut self, start: usize) -> PResult<char> {
        match self.bump() {
            None => Err((start, "missing closing ]")),
            Some('\\') => self.escape_char(start),
            Some(c) => Ok(c),
        }
    }
}

/// Go's Perl classes: the ASCII set (for use inside `[…]`) and whether negated.
fn perl_class(c: char) -> (&'static str, bool) {
    match c {
        'd' => ("0-9", false),
        'D' => ("0-9", true),
        'w' => ("0-9A-Za-z_", false),
        'W' => ("0-9A-Za-z_", true),
        's' => (r"\t\n\x0C\r ", false),
        _ => (r"\t\n\x0C\r ", true),
    }
}

/// `{n}`, `{n,}`, `{n,m}` at the start of `s` (Go's `parseRepeat`): (min, max
/// or -1 for none, bytes). Numbers with a leading zero do not parse (Go).
fn parse_repeat(s: &str) -> Option<(i64, i64, usize)> {
    let b = s.as_bytes();
    let mut i = 1;
    let int = |i: &mut usize| -> Option<i64> {
        let st = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        if *i == st || (*i - st >= 2 && b[st] == b'0') {
            return None;
        }
        // Go marks overflow (> 1e8) as -1, which is then an invalid count.
        Some(
            s[st..*i]
                .parse::<i64>()
                .ok()
                .filter(|n| *n <= 100_000_000)
                .unwrap_or(-2),
        )
    };
    let min = int(&mut i)?;
    let max;
    if i >= b.len() {
        return None;
    }
    if b[i] == b',' {
        i += 1;
        if i >= b.len() {
            return None;
        }
        if b[i] == b'}' {
            max = -1;
        } else {
            max = int(&mut i)?;
        }
    } else {
        max = min;
    }
    if i >= b.len() || b[i] != b'}' {
        return None;
    }
    let min = if min == -2 { -1 } else { min };
    Some((min, max, i + 1))
}

fn push_literal(out: &mut String, c: char) {
    if c.is_control() {
        let _ = write!(out, r"\x{{{:X}}}", c as u32);
    } else {
        let mut buf = [0u8; 4];
        out.push_str(&regex::escape(c.encode_utf8(&mut buf)));
    }
}

fn push_class_char(out: &mut String, c: char) {
    if c.is_ascii_punctuation() && c != '<' && c != '>' {
        out.push('\\');
        out.push(c);
    } else if c.is_control() || c == ' ' {
        let _ = write!(out, r"\x{{{:X}}}", c as u32);
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        compile_anchored(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .is_match(text)
    }

    #[test]
    fn perl_classes_are_ascii_as_in_go() {
        assert!(m(r"\d+", "0123456789"));
        assert!(!m(r"\d", "٣")); // Arabic-Indic three: Unicode Nd, not Go's \d
        assert!(m(r"\D", "٣"));
        assert!(m(r"\w+", "abc_XYZ_09"));
        assert!(!m(r"\w", "é"));
        assert!(m(r"\W", "é"));
        assert!(m(r"\s", "\x0c"));
        assert!(!m(r"\s", "\x0b")); // Go's \s has no \v
        assert!(!m(r"\s", "\u{a0}"));
        assert!(m(r"[\d\s]+", "1 2\t3"));
        assert!(m(r"[^\D]", "7"));
        assert!(!m(r"[^\D]", "x"));
        assert!(m(r"[\D]", "x"));
    }

    #[test]
    fn word_boundary_is_ascii() {
        assert!(m(r".*\bfoo\b.*", "a foo b"));
        assert!(!m(r".*\bfoo\b.*", "afoo"));
        // é is not a word character for Go: a boundary sits between it and f.
        assert!(m(r".*é\bfoo", "éfoo"));
        assert!(m(r"a\Bb", "ab"));
    }

    #[test]
    fn class_brackets_and_set_operators_are_literal() {
        assert!(m(r"[[]", "["));
        assert!(m(r"[]a]+", "]a]"));
        assert!(m(r"[^]a]", "b"));
        assert!(!m(r"[^]a]", "]"));
        assert!(m(r"[a&&b]+", "a&b"));
        assert!(m(r"[a~~b]+", "~~"));
        assert!(m(r"[+--]", ","));
        assert!(m(r"[a-]+", "a-"));
        assert!(m(r"[-a]+", "-a"));
        assert!(m(r"[[:alpha:]]+", "abc"));
        assert!(m(r"[[:^digit:]]", "x"));
        assert!(m(r"[[:alpha]", "["));
        assert!(translate(r"[[:foo:]]").is_err());
        assert!(translate(r"[z-a]").is_err());
        assert!(translate(r"[abc").is_err());
        assert!(translate(r"[]").is_err());
    }

    #[test]
    fn braces_that_are_not_repetitions_are_literal() {
        assert!(m(r"a{", "a{"));
        assert!(m(r"a{,2}", "a{,2}"));
        assert!(m(r"a{01}", "a{01}"));
        assert!(m(r"{foo}", "{foo}"));
        assert!(m(r"a}", "a}"));
        assert!(m(r"a{2}", "aa"));
        assert!(m(r"a{2,}", "aaaa"));
        assert!(m(r"a{1,2}?b", "ab"));
        assert!(translate(r"a{1001}").is_err());
        assert!(translate(r"a{2,1}").is_err());
        assert!(translate(r"a{1000}").is_ok());
        assert!(translate(r"a{99999999999}").is_err());
        assert!(translate(r"a**").is_err());
        assert!(translate(r"a+*").is_err());
        assert!(translate(r"a{2}{3}").is_err());
        assert!(translate(r"a*?").is_ok());
    }

    #[test]
    fn escapes_as_in_go() {
        assert!(m(r"\Qa.b*c\E", "a.b*c"));
        assert!(!m(r"\Qa.b\E", "axb"));
        // Prometheus wraps before parsing: an unterminated \Q swallows the `)$`.
        assert!(compile_anchored(r"\Q(unclosed").is_err());
        assert!(translate(r"\Q(a").is_ok());
        assert!(m(r"\101\x42\x{43}", "ABC"));
        assert!(m(r"\0", "\0"));
        assert!(m(r"[\101-\103]+", "ABC"));
        assert!(m(r"\a\f\t\n\r\v", "\x07\x0c\t\n\r\x0b"));
        assert!(m(r"\<\>\!\-\#", "<>!-#"));
        assert!(m(r"\pL+\p{Greek}\P{L}\p{^Greek}", "aβ1x"));
        assert!(m(r"[\p{Lu}\d]+", "A1B2"));
        assert!(translate(r"\1").is_err()); // a backreference
        assert!(translate(r"\8").is_err());
        assert!(translate(r"\e").is_err());
        assert!(translate(r"\u0041").is_err());
        assert!(translate(r"\Z").is_err());
        assert!(translate(r"\x{110000}").is_err());
        assert!(translate(r"\xZZ").is_err());
        assert!(translate("\\").is_err());
        assert!(translate(r"\é").is_err());
        assert!(translate(r"[\b]").is_err());
    }

    #[test]
    fn groups_and_flags() {
        assert!(m(r"(?i)abc", "ABC"));
        assert!(m(r"(?i:a)b", "Ab"));
        assert!(!m(r"(?i:a)b", "AB"));
        assert!(m(r"(?U)a+", "a"));
        assert!(m(r"(?m)a$\nb", "a\nb"));
        assert!(m(r"(?P<x>a)(?<y>b)", "ab"));
        assert!(m(r"(?)a", "a"));
        assert!(m(r"x|(?P<1a>y)", "y"));
        let re = compile_anchored(r"(?P<first>a)(b)").unwrap();
        assert_eq!(
            re.captures("ab").unwrap().name("first").unwrap().as_str(),
            "a"
        );
        assert!(translate(r"(?x)a").is_err());
        assert!(translate(r"(?u)a").is_err());
        assert!(translate(r"(?-)a").is_err());
        assert!(translate(r"(?=a)").is_err());
        assert!(translate(r"(?P=x)").is_err());
        assert!(translate(r"(?P<a-b>x)").is_err());
        assert!(translate(r"(?<>x)").is_err());
    }

    #[test]
    fn anchoring_and_dot_all_as_prometheus() {
        assert!(m("foo", "foo"));
        assert!(!m("foo", "xfoo"));
        assert!(!m("foo", "foox"));
        assert!(m("a.b", "a\nb"));
        assert!(m("line1.*line2", "line1\nline2"));
        // Prometheus wraps before compiling, so this is `^(?s:a)|(b)$`.
        assert!(m("a)|(b", "a"));
        assert!(m("a)|(b", "b"));
        assert!(m("", ""));
        assert!(!m("", "x"));
        assert!(m("f|o", "o"));
    }

    #[test]
    fn leftmost_first_submatches() {
        let re = compile_anchored("(a|ab)(c|bcd)(d*)").unwrap();
        let c = re.captures("abcd").unwrap();
        assert_eq!(
            (&c[1], &c[2], &c[3]),
            ("a", "bcd", ""),
            "Perl/RE2 leftmost-first, not POSIX leftmost-longest"
        );
    }

    #[test]
    fn errors_name_the_pattern() {
        let e = compile_anchored("a{2,1}").unwrap_err().to_string();
        assert!(
            e.contains("a{2,1}") && e.contains("invalid repeat count"),
            "{e}"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = compile_anchored(&s);
        }

        #[test]
        fn never_panics_on_regex_alphabet(s in "[\\\\\\[\\](){}|*+?.^$:,0-9a-zA-Z&~-]{0,30}") {
            let _ = compile_anchored(&s);
        }

        #[test]
        fn literal_text_quoted_matches_itself(s in "\\PC{0,20}") {
            let q = format!(r"\Q{}\E", s.replace(r"\E", ""));
            let lit = s.replace(r"\E", "");
            let re = compile_anchored(&q).unwrap();
            proptest::prop_assert!(re.is_match(&lit));
        }
    }
}
