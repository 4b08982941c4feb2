//! `--config agentq.toml` (or `AGENTQ_CONFIG`): a settings file whose keys are the flags'
//! names (`database-url = "postgres://…"`, `lease = "15s"`, `http-allow = ["a.com", "b.com"]`).
//! The file's values become the flags' defaults, so a flag wins, then its environment
//! variable, then the file, then the built-in default, and every value is checked by the
//! same parser as on the command line. `agentq config check` prints what resolved, and
//! from where, with secrets hidden.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use super::Cli;
use crate::telemetry::redacted;

/// The variable naming the settings file when `--config` is not given.
pub const CONFIG_ENV: &str = "AGENTQ_CONFIG";

/// Settings whose values are secrets: `config check` shows that they are set, not what.
const SECRET_SETTINGS: [&str; 3] = ["signal-secret", "webhook-secret", "token-secret"];
/// Settings holding a URL that may carry a password.
const URL_SETTINGS: [&str; 2] = ["database-url", "queue-url"];

/// The parsed command line, and what `config check` shows of it.
pub struct Parsed {
    pub cli: Cli,
    matches: ArgMatches,
    /// The settings file and the keys it set.
    file: Option<(PathBuf, BTreeSet<String>)>,
}

/// Why the command line could not be parsed.
pub enum ParseError {
    /// clap's own (including `--help` and `--version`, which are not errors).
    Clap(clap::Error),
    /// The settings file: unreadable, not TOML, or a key no flag has.
    File(String),
}

/// Parses `args` (the program name first) with the settings file's values under the
/// environment and the flags.
pub fn parse(args: impl IntoIterator<Item = impl Into<OsString>>) -> Result<Parsed, ParseError> {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = Cli::command();
    let mut file = None;
    if let Some(path) = config_path(&args) {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ParseError::File(format!("--config {shown}: {e}")))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e
                .span()
                .map(|span| format!(" (line {})", text[..span.start].lines().count().max(1)))
                .unwrap_or_default();
            ParseError::File(format!("--config {shown}{at}: {}", e.message()))
        })?;
        let mut keys = BTreeSet::new();
        for (key, value) in table {
            let values = values_of(&value)
                .map_err(|why| ParseError::File(format!("--config {shown}: `{key}` {why}")))?;
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
                .ok_or_else(|| {
                    ParseError::File(format!(
                        "--config {shown}: no setting is named `{key}` (the keys are the flags' names, like `database-url`)"
                    ))
                })?;
            if values.len() != 1 && !takes_many(arg) {
                return Err(ParseError::File(format!(
                    "--config {shown}: `{key}` takes one value"
                )));
            }
            let id = arg.get_id().clone();
            // the file may hold secrets: `--help` must not print them as defaults
            command = command.mut_arg(id, |a| a.default_values(values).hide_default_value(true));
            keys.insert(key);
        }
        file = Some((path, keys));
    }
    let matches = command
        .try_get_matches_from(args)
        .map_err(ParseError::Clap)?;
    let cli = Cli::from_arg_matches(&matches).map_err(ParseError::Clap)?;
    Ok(Parsed { cli, matches, file })
}

/// `--config PATH` or `--config=PATH` on the command line, else `AGENTQ_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A TOML value as the command line would give it: a string, number or boolean as one
/// value, an array of them as several.
fn values_of(value: &toml::Value) -> Result<Vec<String>, &'static str> {
    let one = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err("must be a string, a number, a boolean or an array of them"),
    };
    match value {
        toml::Value::Array(items) => items.iter().map(one).collect(),
        other => one(other).map(|v| vec![v]),
    }
}

impl Parsed {
    /// The resolved settings as a settings file would hold them, each with where it came
    /// from; secrets hidden, URLs without their passwords.
    pub fn describe(&self, secret_names: &[String]) -> String {
        let mut out = String::new();
        if let Some((path, _)) = &self.file {
            out += &format!("# settings file: {}\n", path.display());
        }
        let command = Cli::command();
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["config", "help", "version"].contains(&long) {
                continue;
            }
            let id = arg.get_id().as_str();
            let Some(raw) = self.matches.get_raw(id) else {
                continue;
            };
            let values: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
            let shown: Vec<String> = values
                .iter()
                .map(|v| {
                    if SECRET_SETTINGS.contains(&long) {
                        "***".to_owned()
                    } else if long == "secret" {
                        format!("{}=***", v.split('=').next().unwrap_or_default())
                    } else if URL_SETTINGS.contains(&long) {
                        redacted(v)
                    } else {
                        v.clone()
                    }
                })
                .collect();
            let from = match self.matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag",
                Some(ValueSource::EnvVariable) => "environment",
                _ if self
                    .file
                    .as_ref()
                    .is_some_and(|(_, keys)| keys.contains(long)) =>
                {
                    "file"
                }
                _ => "default",
            };
            let value = if takes_many(arg) {
                let quoted: Vec<String> = shown.iter().map(|v| toml_string(v)).collect();
                format!("[{}]", quoted.join(", "))
            } else {
                toml_string(shown.first().map(String::as_str).unwrap_or_default())
            };
            out += &format!("{long} = {value}  # {from}\n");
        }
        if !secret_names.is_empty() {
            out += &format!(
                "# named secrets: {} (values hidden)\n",
                secret_names.join(", ")
            );
        }
        out
    }
}

/// Whether a setting takes a list (repeated, or delimited): an array in the file.
fn takes_many(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append) || arg.get_value_delimiter().is_some()
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}
