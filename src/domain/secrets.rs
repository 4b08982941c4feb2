//! Named secrets: values an operator gives agentq (`--secret NAME=VALUE`,
//! `AGENTQ_SECRET_<NAME>`, `--secrets-file`) that runs refer to by name
//! (`{"secret": "NAME"}` in an `http` run's header) and agents read with
//! `ctx.secret(name)`. A value lives only in the process's memory: never in the database,
//! a response, a log line or `Debug` output.

use std::collections::BTreeMap;
use std::sync::Arc;

/// The environment variables whose suffix names a secret.
pub const SECRET_ENV_PREFIX: &str = "AGENTQ_SECRET_";

/// A process's named secrets, with the hosts each may be sent to. Cheap to clone.
#[derive(Clone, Default)]
pub struct NamedSecrets(
    Arc<BTreeMap<String, String>>,
    Arc<BTreeMap<String, Vec<String>>>,
);

impl std::fmt::Debug for NamedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the names only
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Whether `name` may name a secret: 1 to 64 of A-Z, a-z, 0-9 and `_`.
pub fn valid_secret_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl NamedSecrets {
    /// Gathers the secrets from their three sources; a name given in more than one takes
    /// the first of: `flags` (`NAME=VALUE`), the environment (`AGENTQ_SECRET_<NAME>`), the
    /// file's `NAME=VALUE` lines (blank lines and `#` comments skipped). The message of an
    /// error names the source and the line, never a value.
    pub fn gather(
        flags: &[String],
        env: impl IntoIterator<Item = (String, String)>,
        file: Option<(&str, &str)>,
    ) -> Result<Self, String> {
        let mut secrets = BTreeMap::new();
        let mut put = |name: &str, value: &str, source: &dyn Fn() -> String| {
            if !valid_secret_name(name) {
                return Err(format!(
                    "{}: a secret's name is 1 to 64 of A-Z, a-z, 0-9 and _, got `{name}`",
                    source()
                ));
            }
            if value.is_empty() {
                return Err(format!("{}: the secret `{name}` is empty", source()));
            }
            secrets
                .entry(name.to_owned())
                .or_insert_with(|| value.to_owned());
            Ok(())
        };
        for flag in flags {
            let (name, value) = flag
                .split_once('=')
                .ok_or_else(|| "--secret must be NAME=VALUE".to_owned())?;
            put(name, value, &|| "--secret".to_owned())?;
        }
        let mut from_env: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(SECRET_ENV_PREFIX)?.to_owned(), v)))
            .collect();
        from_env.sort();
        for (name, value) in from_env {
            put(&name, &value, &|| format!("{SECRET_ENV_PREFIX}{name}"))?;
        }
        if let Some((path, text)) = file {
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let at = || format!("--secrets-file {path}, line {}", i + 1);
                let (name, value) = line
                    .split_once('=')
                    .ok_or_else(|| format!("{}: not NAME=VALUE", at()))?;
                put(name.trim(), value.trim(), &at)?;
            }
        }
        Ok(Self(Arc::new(secrets), Arc::default()))
    }

    /// A set holding exactly these (for tests and embedders).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            Arc::new(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
            Arc::default(),
        )
    }

    /// These secrets, each bound to the hosts `bindings` give it (`NAME=pattern,pattern`,
    /// the patterns of `--http-allow`; checked by the caller). A binding of a name that is
    /// not set is an error.
    pub fn bound(self, bindings: &[String]) -> Result<Self, String> {
        let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for binding in bindings {
            let (name, patterns) = binding.split_once('=').ok_or_else(|| {
                format!("--secret-hosts must be NAME=HOST[,HOST…], got `{binding}`")
            })?;
            if !self.contains(name) {
                return Err(format!(
                    "--secret-hosts names `{name}`, which is no secret (--secret, AGENTQ_SECRET_{name} or --secrets-file)"
                ));
            }
            hosts.entry(name.to_owned()).or_default().extend(
                patterns
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            );
        }
        Ok(Self(self.0, Arc::new(hosts)))
    }

    /// The host patterns the secret may be sent to (none: no host).
    pub fn hosts(&self, name: &str) -> &[String] {
        self.1.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with every occurrence of the named secrets' values replaced by
    /// `[secret NAME]`: what a called service echoes back is not kept with the run.
    pub fn scrub(&self, text: &str, names: &[&str]) -> String {
        let mut text = text.to_owned();
        for name in names {
            if let Some(value) = self.get(name) {
                text = text.replace(value, &format!("[secret {name}]"));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flags_win_over_the_environment_which_wins_over_the_file() {
        let secrets = NamedSecrets::gather(
            &["A=flag".into()],
            env(&[
                ("AGENTQ_SECRET_A", "env"),
                ("AGENTQ_SECRET_B", "env"),
                ("AGENTQ_SECRETS_FILE", "/x"),
                ("PATH", "/bin"),
            ]),
            Some(("f", "# comment\n\nA=file\nB = file\nC=file=with=equals\n")),
        )
        .unwrap();
        assert_eq!(secrets.get("A"), Some("flag"));
        assert_eq!(secrets.get("B"), Some("env"));
        assert_eq!(secrets.get("C"), Some("file=with=equals"));
        assert_eq!(secrets.names().collect::<Vec<_>>(), ["A", "B", "C"]);
        // the names, never a value
        assert_eq!(format!("{secrets:?}"), r#"{"A", "B", "C"}"#);
    }

    #[test]
    fn a_bad_source_is_named_without_its_value() {
        let bad = |flags: &[&str], env_pairs: &[(&str, &str)], file: Option<&str>| {
            let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
            NamedSecrets::gather(&flags, env(env_pairs), file.map(|f| ("s.env", f))).unwrap_err()
        };
        assert_eq!(bad(&["novalue"], &[], None), "--secret must be NAME=VALUE");
        assert!(bad(&["a-b=hunter2"], &[], None).contains("got `a-b`"));
        assert!(bad(&[], &[("AGENTQ_SECRET_X", "")], None).contains("AGENTQ_SECRET_X"));
        let file = bad(&[], &[], Some("A=1\nhunter2\n"));
        assert_eq!(file, "--secrets-file s.env, line 2: not NAME=VALUE");
        assert!(!file.contains("hunter2"));
    }

    #[test]
    fn scrub_replaces_the_named_values_only() {
        let secrets = NamedSecrets::from_pairs([("TOKEN", "s3cr3t"), ("OTHER", "zzz")]);
        assert_eq!(
            secrets.scrub("Bearer s3cr3t and zzz", &["TOKEN"]),
            "Bearer [secret TOKEN] and zzz"
        );
    }
}
