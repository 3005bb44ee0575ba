//! Layered settings: flags win over `VIGIL_*` environment variables (clap does
//! that), and both win over the YAML file given with `--config`.
//!
//! Each binary declares one settings struct that derives `clap::Args`,
//! `Serialize` and `Deserialize` with every field optional; [`layer`] overlays
//! what the command line/environment set on top of the file. Validation into
//! the runtime config (defaults, ranges) is the binary's own, done once.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// Parses a YAML file into `T` (unknown keys are refused by `T`'s
/// `deny_unknown_fields`); errors name the file and, where the parser knows
/// them, the line and column.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_yaml(&text).map_err(|message| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses YAML text into `T`; an empty document is the all-default value.
pub fn parse_yaml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    if text.trim().is_empty() {
        return serde_json::from_value(serde_json::Value::Object(Default::default()))
            .map_err(|e| e.to_string());
    }
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

/// Overlays `cli` (flags and environment) on the file at `file`, if any.
/// Fields that are `None` (or empty lists) in `cli` keep the file's value.
pub fn layer<T: Serialize + DeserializeOwned>(
    cli: &T,
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    let Some(path) = file else {
        return roundtrip(cli);
    };
    let from_file: T = load_yaml(path)?;
    let mut base = to_json(&from_file)?;
    let over = to_json(cli)?;
    merge(&mut base, over);
    serde_json::from_value(base).map_err(|e| ConfigError::Invalid(e.to_string()))
}

fn roundtrip<T: Serialize + DeserializeOwned>(v: &T) -> Result<T, ConfigError> {
    serde_json::from_value(to_json(v)?).map_err(|e| ConfigError::Invalid(e.to_string()))
}

fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value, ConfigError> {
    serde_json::to_value(v).map_err(|e| ConfigError::Invalid(e.to_string()))
}

fn is_unset(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                if is_unset(&v) {
                    continue;
                }
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => {
            if !is_unset(&o) {
                *b = o;
            }
        }
    }
}

/// Reads a secret from a file (a token): surrounding whitespace is trimmed;
/// a missing or empty file is an error, never an empty secret.
pub fn read_token(p: &Path) -> Result<String, ConfigError> {
    let t = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
        path: p.to_path_buf(),
        source,
    })?;
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "token file {} is empty",
            p.display()
        )));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct S {
        a: Option<String>,
        b: Option<u32>,
        #[serde(default)]
        list: Vec<String>,
    }

    #[test]
    fn cli_wins_over_file_and_unset_keeps_file() {
        let dir = tempfile_dir();
        let p = dir.join("c.yml");
        std::fs::write(&p, "a: file\nb: 7\nlist: [x]\n").unwrap();
        let cli = S {
            a: Some("cli".into()),
            b: None,
            list: vec![],
        };
        let got: S = layer(&cli, Some(&p)).unwrap();
        assert_eq!(
            got,
            S {
                a: Some("cli".into()),
                b: Some(7),
                list: vec!["x".into()]
            }
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_yaml_are_errors_naming_the_file() {
        let dir = tempfile_dir();
        let p = dir.join("c.yml");
        std::fs::write(&p, "nope: 1\n").unwrap();
        let e = layer(&S::default(), Some(&p)).unwrap_err().to_string();
        assert!(e.contains("c.yml") && e.contains("nope"), "{e}");
        std::fs::write(&p, "a: [unclosed\n").unwrap();
        assert!(layer(&S::default(), Some(&p)).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "vigil-common-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
