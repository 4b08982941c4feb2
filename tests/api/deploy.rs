//! `deploy/` stays true to the binary: every flag and `AGENTQ_*` variable it names exists,
//! its units start real subcommands, its stop timeouts outlast the shutdown timeout, and
//! the example settings are accepted.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn agentq_help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_agentq"))
        .arg("--help")
        .output()
        .expect("the agentq binary runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The subcommands listed under `Commands:` in the help.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

/// Every file in `deploy/`, by name.
fn deploy_files() -> BTreeMap<String, String> {
    let files: BTreeMap<String, String> = std::fs::read_dir("deploy")
        .expect("deploy/ exists")
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).expect("a text file"))
        })
        .collect();
    for expected in [
        "agentq.service",
        "agentq-worker@.service",
        "agentq.env.example",
        "Dockerfile",
    ] {
        assert!(files.contains_key(expected), "deploy/{expected} is missing");
    }
    files
}

/// The words of a line, without the quotes, brackets and commas of JSON-array syntax.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace()
        .map(|w| w.trim_matches(|c| matches!(c, '"' | '[' | ']' | ',')))
        .collect()
}

/// The arguments after each `agentq` (or `…/bin/agentq`) a line runs, up to a shell
/// operator. An `agentq` that is the value of another program's option (`--gid agentq`,
/// `-t agentq`) is not a run of agentq.
fn agentq_arguments(line: &str) -> Vec<Vec<&str>> {
    let words = words(line);
    let runs_agentq = |i: usize| {
        let w = words[i].trim_start_matches("ExecStart=");
        let option_value = i > 0 && words[i - 1].starts_with('-') && !words[i - 1].contains('=');
        (w == "agentq" || w.ends_with("/bin/agentq")) && !option_value
    };
    (0..words.len())
        .filter(|&i| runs_agentq(i))
        .map(|i| {
            words[i + 1..]
                .iter()
                .copied()
                .take_while(|w| !matches!(*w, "&&" | "||" | "|" | ";" | "\\"))
                .collect()
        })
        .collect()
}

#[test]
fn every_flag_and_variable_named_in_deploy_exists_in_agentq_help() {
    let help = agentq_help();
    for (file, text) in deploy_files() {
        for line in text.lines() {
            for args in agentq_arguments(line) {
                for flag in args.iter().filter(|a| a.starts_with("--")) {
                    let flag = flag.split('=').next().unwrap_or(flag);
                    assert!(
                        help.contains(&format!("{flag} ")),
                        "deploy/{file} names {flag}, which `agentq --help` does not list: {line}"
                    );
                }
            }
            for (at, _) in line.match_indices("AGENTQ_") {
                let name: String = line[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                // a named secret's variable is one of a family
                if let Some(secret) = name.strip_prefix("AGENTQ_SECRET_") {
                    assert!(
                        help.contains("AGENTQ_SECRET_<NAME>") && !secret.is_empty(),
                        "deploy/{file} names {name}, a named secret `agentq --help` does not document"
                    );
                } else if name.len() > "AGENTQ_".len() {
                    assert!(
                        help.contains(&format!("[env: {name}")),
                        "deploy/{file} names {name}, which `agentq --help` does not list"
                    );
                }
            }
        }
    }
}

#[test]
fn the_units_and_the_image_start_real_subcommands() {
    let commands = subcommands(&agentq_help());
    assert!(commands.contains(&"serve".to_owned()), "{commands:?}");
    let files = deploy_files();
    let mut started = Vec::new();
    for (file, text) in &files {
        let starts = text.lines().filter(|l| {
            (file.ends_with(".service") && l.starts_with("ExecStart="))
                || (file == "Dockerfile" && l.starts_with("CMD "))
        });
        for line in starts {
            let args = match agentq_arguments(line).pop() {
                Some(args) => args,
                None => words(line).into_iter().skip(1).collect(), // CMD ["serve"]
            };
            let command = args.first().copied().unwrap_or_default();
            assert!(
                commands.iter().any(|c| c == command),
                "deploy/{file} starts `{command}`, not one of {commands:?}: {line}"
            );
            started.push((file.clone(), command.to_owned()));
        }
    }
    for (file, command) in [
        ("agentq.service", "serve"),
        ("agentq-worker@.service", "worker"),
        ("Dockerfile", "serve"),
    ] {
        assert!(
            started.contains(&(file.to_owned(), command.to_owned())),
            "deploy/{file} should start `agentq {command}`: {started:?}"
        );
    }
}

#[test]
fn the_units_give_shutdown_more_time_than_the_default_shutdown_timeout() {
    let help = agentq_help();
    let block = &help[help.find("--shutdown-timeout").expect("the flag is listed")..];
    let default = block
        .split("[default: ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("a default");
    let shutdown = humantime::parse_duration(default).expect("a duration");
    // after the timeout, unfinished attempts get a second to stop, then runs are handed back
    let needed = shutdown + Duration::from_secs(2);
    for (file, text) in deploy_files() {
        if !file.ends_with(".service") {
            continue;
        }
        assert!(text.contains("KillSignal=SIGTERM"), "deploy/{file}");
        let stop = text
            .lines()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .unwrap_or_else(|| panic!("deploy/{file} sets no TimeoutStopSec"));
        let stop = humantime::parse_duration(stop).expect("TimeoutStopSec is a duration");
        assert!(
            stop >= needed,
            "deploy/{file}: TimeoutStopSec={stop:?} is not above --shutdown-timeout {default}"
        );
    }
}

#[test]
fn the_example_settings_are_accepted_by_agentq() {
    let example = &deploy_files()["agentq.env.example"];
    let settings: BTreeMap<&str, &str> = example
        .lines()
        .map(|l| l.trim_start_matches('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(name, value)| name.starts_with("AGENTQ_") && !value.is_empty())
        .collect();
    assert!(settings.contains_key("AGENTQ_HTTP_ALLOW"), "{settings:?}");
    // the TLS files it names (/etc/agentq/…pem, …key) are read at start: made here
    let files = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let settings: BTreeMap<&str, String> = settings
        .into_iter()
        .map(|(name, value)| {
            let mut value = value.to_owned();
            while let Some(at) = value.find("/etc/agentq/") {
                let end = value[at..].find('&').map_or(value.len(), |e| at + e);
                let file = files.path().join(&value[at + "/etc/agentq/".len()..end]);
                let pem = if file.extension().is_some_and(|e| e == "key") {
                    made.signing_key.serialize_pem()
                } else {
                    made.cert.pem()
                };
                std::fs::write(&file, pem).unwrap();
                value.replace_range(at..end, &file.display().to_string());
            }
            (name, value)
        })
        .collect();
    assert!(
        settings["AGENTQ_QUEUE_CA_FILE"].starts_with(files.path().to_str().unwrap()),
        "{settings:?}"
    );
    // `openapi` parses and checks every setting, then prints without touching a database
    let out = Command::new(env!("CARGO_BIN_EXE_agentq"))
        .arg("openapi")
        .envs(&settings)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("the agentq binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
