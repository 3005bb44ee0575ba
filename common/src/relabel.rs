//! Prometheus's relabeling: the `relabel_configs` / `metric_relabel_configs` /
//! `write_relabel_configs` rule in Prometheus's YAML shape, validated as
//! Prometheus validates it, and applied to a [`Labels`] as Prometheus applies it
//! (model/relabel/relabel.go: same actions, defaults, regex anchoring, `$1` /
//! `${name}` expansion, MD5 `hashmod`, empty value = label removed).
//!
//! Use: deserialize [`RelabelConfig`]s, [`compile`] them once (that is where a
//! bad rule is refused, with the rule's index and Prometheus's wording), then
//! [`process`] each label set.
//!
//! Regexes are Go (RE2) syntax, compiled by [`crate::re2`] as Prometheus 3 does:
//! `^(?s:regex)$`. Label names are checked with the [`NameValidation`] the caller
//! picks (Prometheus 2's legacy charset, or Prometheus 3's UTF-8).
//!
//! Not here: what a scraper does with `__address__`, `__param_*` or the `__`
//! labels after relabeling — that is the caller's.

use crate::labels::{Labels, LabelsBuilder};
use crate::re2::{self, Re2Error};
use md5::{Digest, Md5};
use regex::{Captures, Regex};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::sync::LazyLock;

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Action {
    /// Writes `replacement` (expanded with the regex's groups) to `target_label`
    /// when the regex matches the joined source values.
    #[default]
    Replace,
    /// Drops the label set when the regex does not match.
    Keep,
    /// Drops the label set when the regex matches.
    Drop,
    /// Drops the label set unless the joined source values equal `target_label`'s value.
    KeepEqual,
    /// Drops the label set when the joined source values equal `target_label`'s value.
    DropEqual,
    /// Sets `target_label` to MD5(joined values) mod `modulus`.
    HashMod,
    /// Copies every label whose name matches to the name `replacement` expands to.
    LabelMap,
    /// Removes every label whose name matches.
    LabelDrop,
    /// Removes every label whose name does not match.
    LabelKeep,
    /// Sets `target_label` to the joined values in lower case.
    Lowercase,
    /// Sets `target_label` to the joined values in upper case.
    Uppercase,
}

impl Action {
    const ALL: [Action; 11] = [
        Action::Replace,
        Action::Keep,
        Action::Drop,
        Action::KeepEqual,
        Action::DropEqual,
        Action::HashMod,
        Action::LabelMap,
        Action::LabelDrop,
        Action::LabelKeep,
        Action::Lowercase,
        Action::Uppercase,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    /// Case-insensitive, as Prometheus reads it.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let lower = s.to_lowercase();
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == lower)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown relabel action {s:?}")))
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Which label names are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameValidation {
    /// `[a-zA-Z_][a-zA-Z0-9_]*`: Prometheus 2, and what the text format 0.0.4 can carry.
    #[default]
    Legacy,
    /// Any non-empty UTF-8 string: Prometheus 3's default.
    Utf8,
}

impl NameValidation {
    pub fn is_valid_label_name(self, name: &str) -> bool {
        match self {
            NameValidation::Legacy => is_legacy_label_name(name),
            NameValidation::Utf8 => !name.is_empty(),
        }
    }

    /// A `target_label` / `replacement` that may hold `$1`, `${name}`.
    fn is_valid_template(self, s: &str) -> bool {
        match self {
            NameValidation::Legacy => LEGACY_TEMPLATE.is_match(s),
            NameValidation::Utf8 => !s.is_empty(),
        }
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_legacy_label_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Prometheus's `relabelTargetLegacy` (`\w` being ASCII in Go).
// A constant pattern: compiled by every test that relabels, cannot fail at run time.
#[allow(clippy::expect_used)]
static LEGACY_TEMPLATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{[0-9A-Za-z_]+\}|[0-9A-Za-z_]+))+[0-9A-Za-z_]*)+$")
        .expect("constant regex")
});

/// The `regex` key: absent (Prometheus's default `(.*)`) or given. A YAML
/// `null` is the empty regex, as in Prometheus.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RegexSetting {
    #[default]
    Default,
    Set(String),
}

impl RegexSetting {
    pub fn as_str(&self) -> &str {
        match self {
            RegexSetting::Default => DEFAULT_REGEX,
            RegexSetting::Set(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for RegexSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RegexSetting::Set(
            Option::<String>::deserialize(d)?.unwrap_or_default(),
        ))
    }
}

impl Serialize for RegexSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_SEPARATOR: &str = ";";
const DEFAULT_REPLACEMENT: &str = "$1";

fn default_separator() -> String {
    DEFAULT_SEPARATOR.to_string()
}
fn default_replacement() -> String {
    DEFAULT_REPLACEMENT.to_string()
}
fn is_default_regex(r: &RegexSetting) -> bool {
    *r == RegexSetting::Default
}
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// YAML `null` reads as the type's zero value, as Go's YAML decoder does.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One relabeling rule, as written in Prometheus's YAML.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator` and matched against `regex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_labels: Option<Vec<String>>,
    /// Default `;`.
    #[serde(default = "default_separator", deserialize_with = "null_as_default")]
    pub separator: String,
    /// Go RE2 syntax, anchored at both ends; default `(.*)`.
    #[serde(default, skip_serializing_if = "is_default_regex")]
    pub regex: RegexSetting,
    /// For `hashmod`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub modulus: u64,
    /// For `replace` it may use `$1`, `${name}`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub target_label: String,
    /// Default `$1`.
    #[serde(default = "default_replacement", deserialize_with = "null_as_default")]
    pub replacement: String,
    /// Default `replace`.
    #[serde(default)]
    pub action: Action,
}

impl Default for RelabelConfig {
    fn default() -> Self {
        RelabelConfig {
            source_labels: None,
            separator: default_separator(),
            regex: RegexSetting::Default,
            modulus: 0,
            target_label: String::new(),
            replacement: default_replacement(),
            action: Action::Replace,
        }
    }
}

/// Why a rule was refused (Prometheus's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelabelError {
    #[error("relabel configuration for hashmod requires non-zero modulus")]
    ZeroModulus,
    #[error("relabel configuration for {0} action requires 'target_label' value")]
    MissingTargetLabel(Action),
    #[error("{label:?} is invalid 'target_label' for {action} action")]
    InvalidTargetLabel { label: String, action: Action },
    #[error("'replacement' can not be set for {0} action")]
    ReplacementNotAllowed(Action),
    #[error("{0:?} is invalid 'replacement' for labelmap action")]
    InvalidReplacement(String),
    #[error("{0} action requires only 'source_labels' and `target_label`, and no other fields")]
    OnlySourceAndTarget(Action),
    #[error("{0} action requires only 'regex', and no other fields")]
    OnlyRegex(Action),
    #[error("{0:?} is not a valid label name in 'source_labels'")]
    InvalidSourceLabel(String),
    #[error(transparent)]
    Regex(#[from] Re2Error),
    #[error("rule {index}: {source}")]
    Rule {
        index: usize,
        source: Box<RelabelError>,
    },
}

/// A validated rule, ready to apply.
#[derive(Debug, Clone)]
pub struct Relabel {
    config: RelabelConfig,
    source_labels: Vec<String>,
    regex: Regex,
    scheme: NameValidation,
}

impl RelabelConfig {
    /// Validates the rule as Prometheus's `Config.Validate` does and compiles its regex.
    pub fn compile(&self, scheme: NameValidation) -> Result<Relabel, RelabelError> {
        use Action::*;
        let c = self;
        let a = c.action;
        let invalid_target = || RelabelError::InvalidTargetLabel {
            label: c.target_label.clone(),
            action: a,
        };
        if a == HashMod && c.modulus == 0 {
            return Err(RelabelError::ZeroModulus);
        }
        let needs_target = matches!(
            a,
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
        );
        if needs_target && c.target_label.is_empty() {
            return Err(RelabelError::MissingTargetLabel(a));
        }
        let has_var = c.target_label.contains('$');
        if a == Replace && !has_var && !scheme.is_valid_label_name(&c.target_label) {
            return Err(invalid_target());
        }
        if a == Replace && has_var && !scheme.is_valid_template(&c.target_label) {
            return Err(invalid_target());
        }
        let plain_target = matches!(a, Lowercase | Uppercase | KeepEqual | DropEqual);
        if plain_target && !scheme.is_valid_label_name(&c.target_label) {
            return Err(invalid_target());
        }
        if plain_target && c.replacement != DEFAULT_REPLACEMENT {
            return Err(RelabelError::ReplacementNotAllowed(a));
        }
        if a == LabelMap && !scheme.is_valid_template(&c.replacement) {
            return Err(RelabelError::InvalidReplacement(c.replacement.clone()));
        }
        if a == HashMod && !scheme.is_valid_label_name(&c.target_label) {
            return Err(invalid_target());
        }
        if matches!(a, KeepEqual | DropEqual)
            && (c.regex != RegexSetting::Default
                || c.modulus != 0
                || c.separator != DEFAULT_SEPARATOR
                || c.replacement != DEFAULT_REPLACEMENT)
        {
            return Err(RelabelError::OnlySourceAndTarget(a));
        }
        if matches!(a, LabelDrop | LabelKeep)
            && (c.source_labels.is_some()
                || !c.target_label.is_empty()
                || c.modulus != 0
                || c.separator != DEFAULT_SEPARATOR
                || c.replacement != DEFAULT_REPLACEMENT)
        {
            return Err(RelabelError::OnlyRegex(a));
        }
        let source_labels = c.source_labels.clone().unwrap_or_default();
        if let Some(bad) = source_labels
            .iter()
            .find(|n| !scheme.is_valid_label_name(n))
        {
            return Err(RelabelError::InvalidSourceLabel(bad.clone()));
        }
        let regex = re2::compile_anchored(c.regex.as_str())?;
        Ok(Relabel {
            config: c.clone(),
            source_labels,
            regex,
            scheme,
        })
    }
}

/// Compiles a list of rules; an error names the rule by its index (from 0).
pub fn compile(
    configs: &[RelabelConfig],
    scheme: NameValidation,
) -> Result<Vec<Relabel>, RelabelError> {
    configs
        .iter()
        .enumerate()
        .map(|(index, c)| {
            c.compile(scheme).map_err(|e| RelabelError::Rule {
                index,
                source: Box::new(e),
            })
        })
        .collect()
}

impl Relabel {
    /// The rule as written.
    pub fn config(&self) -> &RelabelConfig {
        &self.config
    }

    /// Applies this rule; `false` means the label set is dropped.
    pub fn apply(&self, b: &mut LabelsBuilder) -> bool {
        let c = &self.config;
        let val = match self.source_labels.as_slice() {
            [] => String::new(),
            [one] => b.get(one).to_string(),
            many => {
                let mut v = String::new();
                for (i, n) in many.iter().enumerate() {
                    if i > 0 {
                        v.push_str(&c.separator);
                    }
                    v.push_str(b.get(n));
                }
                v
            }
        };
        match c.action {
            Action::Drop => {
                if self.regex.is_match(&val) {
                    return false;
                }
            }
            Action::Keep => {
                if !self.regex.is_match(&val) {
                    return false;
                }
            }
            Action::DropEqual => {
                if b.get(&c.target_label) == val {
                    return false;
                }
            }
            Action::KeepEqual => {
                if b.get(&c.target_label) != val {
                    return false;
                }
            }
            Action::Replace => {
                // No match: no replacement.
                if let Some(caps) = self.regex.captures(&val) {
                    let target = expand(&c.target_label, &caps);
                    if self.scheme.is_valid_label_name(&target) {
                        let res = expand(&c.replacement, &caps);
                        b.set(&target, &res);
                    }
                }
            }
            Action::Lowercase => b.set(&c.target_label, &go_lowercase(&val)),
            Action::Uppercase => b.set(&c.target_label, &go_uppercase(&val)),
            Action::HashMod => {
                let sum = Md5::digest(val.as_bytes());
                let mut last = [0u8; 8];
                last.copy_from_slice(&sum[8..16]);
                let m = u64::from_be_bytes(last) % c.modulus;
                b.set(&c.target_label, &m.to_string());
            }
            Action::LabelMap => {
                for (name, value) in b.snapshot() {
                    if let Some(caps) = self.regex.captures(&name) {
                        let res = expand(&c.replacement, &caps);
                        b.set(&res, &value);
                    }
                }
            }
            Action::LabelDrop => {
                for (name, _) in b.snapshot() {
                    if self.regex.is_match(&name) {
                        b.del(&name);
                    }
                }
            }
            Action::LabelKeep => {
                for (name, _) in b.snapshot() {
                    if !self.regex.is_match(&name) {
                        b.del(&name);
                    }
                }
            }
        }
        true
    }
}

/// Applies `rules` in order; `None` when one of them drops the label set.
/// As in Prometheus, labels with an empty value are gone from the result.
pub fn process(rules: &[Relabel], labels: Labels) -> Option<Labels> {
    let mut b = LabelsBuilder::new(labels);
    process_builder(rules, &mut b).then(|| b.labels())
}

/// [`process`] on a builder the caller owns (and may reuse).
pub fn process_builder(rules: &[Relabel], b: &mut LabelsBuilder) -> bool {
    rules.iter().all(|r| r.apply(b))
}

/// Go's `Regexp.ExpandString`: `$1`, `${1}`, `$name`, `${name}`, `$$`. A name is
/// the longest run of letters, digits and `_`; an unknown or unmatched group
/// expands to nothing; a malformed reference leaves the `$` as text.
fn expand(template: &str, caps: &Captures<'_>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut t = template;
    while let Some(i) = t.find('$') {
        out.push_str(&t[..i]);
        t = &t[i + 1..];
        if let Some(rest) = t.strip_prefix('$') {
            out.push('$');
            t = rest;
            continue;
        }
        match extract(t) {
            None => out.push('$'),
            Some((name, num, rest)) => {
                t = rest;
                let m = match num {
                    Some(n) => caps.get(n),
                    None => caps.name(name),
                };
                if let Some(m) = m {
                    out.push_str(m.as_str());
                }
            }
        }
    }
    out.push_str(t);
    out
}

/// Go's `extract`: the reference after a `$`: (name, its number if it is one, rest).
fn extract(s: &str) -> Option<(&str, Option<usize>, &str)> {
    let (brace, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|&(_, c)| !is_go_name_char(c))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    let rest = if brace {
        body[end..].strip_prefix('}')?
    } else {
        &body[end..]
    };
    // A number: ASCII digits, below 1e8, no leading zero.
    let num = if name.bytes().all(|b| b.is_ascii_digit())
        && name.len() <= 8
        && !(name.len() > 1 && name.starts_with('0'))
    {
        name.parse::<usize>().ok()
    } else {
        None
    };
    Some((name, num, rest))
}

/// Go's `unicode.IsLetter || unicode.IsDigit || '_'`.
fn is_go_name_char(c: char) -> bool {
    // A constant pattern, exercised by the unicode relabel tests.
    #[allow(clippy::expect_used)]
    static NON_ASCII: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[\p{L}\p{Nd}]$").expect("constant regex"));
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_'
    } else {
        let mut buf = [0u8; 4];
        NON_ASCII.is_match(c.encode_utf8(&mut buf))
    }
}

/// Go's `strings.ToLower`: Unicode simple (one-to-one) case mapping.
fn go_lowercase(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.chars()
        .map(|c| {
            let mut m = c.to_lowercase();
            match (m.next(), m.next()) {
                (Some(l), None) => l,
                // U+0130 (İ) is the only character whose full lower-case mapping is
                // longer; its simple mapping is `i`.
                _ if c == '\u{130}' => 'i',
                _ => c,
            }
        })
        .collect()
}

/// Go's `strings.ToUpper`, approximated by the full mapping where it is one
/// character and the character itself where it is longer (`ß` stays `ß`, as in Go).
fn go_uppercase(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_uppercase();
    }
    s.chars()
        .map(|c| {
            let mut m = c.to_uppercase();
            match (m.next(), m.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
