//! Decoding one raw log line (without its `\n`) into a [`Piece`]: a message
//! fragment with its stream, timestamp and whether more pieces follow. Two
//! container runtime formats ([`cri`], [`docker`]) and plain text. Joining
//! pieces into records, and deciding what a record's offsets are, is
//! `assemble`'s job, not this module's.

pub mod cri;
pub mod docker;

use std::borrow::Cow;

/// The container stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// How a file's lines are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `<RFC3339Nano> <stdout|stderr> <P|F> <message>` (kubelet's runtimes, Podman k8s-file).
    Cri,
    /// Docker json-file: `{"log":"…\n","stream":"stdout","time":"…"}`.
    Docker,
    /// Anything else: one line is one record, stamped with the time it was read.
    Plain,
}

impl Format {
    /// Guesses the format of a file from its first line (used for files found
    /// by user globs; the runtimes' own folders have a known format).
    pub fn detect(first_line: &[u8]) -> Format {
        if cri::parse(first_line).is_ok() {
            Format::Cri
        } else if docker::parse(first_line).is_ok() {
            Format::Docker
        } else {
            Format::Plain
        }
    }
}

/// One decoded line: a whole message, or a fragment of one when `partial`.
#[derive(Debug, PartialEq)]
pub struct Piece<'a> {
    pub timestamp_ns: i64,
    pub stream: Stream,
    /// More pieces of the same message follow (CRI `P`, Docker's 16 KiB splits).
    pub partial: bool,
    pub msg: Cow<'a, [u8]>,
}

/// Why a line could not be decoded; the line is counted as garbage and skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no timestamp field")]
    MissingTimestamp,
    #[error("bad timestamp {0:?}")]
    BadTimestamp(String),
    #[error("bad stream {0:?} (want stdout or stderr)")]
    BadStream(String),
    #[error("bad tag {0:?} (want P or F)")]
    BadTag(String),
    #[error("bad json: {0}")]
    Json(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_detection() {
        assert_eq!(
            Format::detect(b"2026-11-22T10:48:32.523200041+00:00 stdout F hello"),
            Format::Cri
        );
        assert_eq!(
            Format::detect(br#"{"log":"hi\n","stream":"stderr","time":"2026-11-22T10:48:32.5Z"}"#),
            Format::Docker
        );
        assert_eq!(Format::detect(b"just text"), Format::Plain);
    }
}
