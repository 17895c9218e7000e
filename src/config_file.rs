//! `--config FILE`: a long-running command's flags from a TOML file.
//!
//! The file holds the same settings as the command line, under the same
//! names (a flag `--data-dir` is the key `data-dir` or `data_dir`), at the
//! top level:
//!
//! ```toml
//! id = 1
//! listen = "10.0.0.1:7000"
//! data-dir = "/var/lib/ramcoord"
//! http = "127.0.0.1:9100"
//! insecure = false          # a switch: true gives it, false leaves it out
//! [peers]                   # ID = "HOST:PORT", or one string "1=A,2=B"
//! 1 = "10.0.0.1:7000"
//! 2 = "10.0.0.2:7000"
//! ```
//!
//! Values are strings, numbers or booleans; a list is joined with commas
//! (`pin-cpus = [2, 3]`); a table is `KEY=VALUE` pairs joined with commas
//! (`--peers`). The file is turned into flags placed before the command
//! line's, and a flag given on the command line wins over the file's
//! (the file's is left out). A key that is not a flag of the command is
//! refused, naming the file, the key and the flags there are: a typo is
//! never silently ignored. Every value is then checked exactly as on the
//! command line, by the same parser.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// It could not be read.
    #[error("--config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not TOML.
    #[error("--config {path}: not TOML: {why}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message (line and column).
        why: String,
    },
    /// A key that is not a flag of the command.
    #[error("--config {path}: `{key}` is not a setting of `{command}` (settings: {known})")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The command.
        command: String,
        /// Its flags.
        known: String,
    },
    /// A value of a kind a flag cannot take (a nested table, a date).
    #[error("--config {path}: `{key}`: {why}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// Why.
        why: String,
    },
    /// `--config` without a file.
    #[error("--config needs a FILE")]
    Missing,
}

/// If `args` (the whole command line, program name first) runs one of
/// `commands` with `--config FILE`, returns it with the file's settings
/// as flags (see the module docs); else returns it unchanged. `cli` is the
/// program's command, whose subcommands' flags are the valid keys.
pub fn expand(
    args: Vec<OsString>,
    cli: &clap::Command,
    commands: &[&str],
) -> Result<Vec<OsString>, ConfigFileError> {
    let Some(sub_at) = args.iter().position(|a| {
        a.to_str()
            .is_some_and(|s| commands.contains(&s) || cli.find_subcommand(s).is_some())
    }) else {
        return Ok(args);
    };
    let sub_name = args[sub_at].to_string_lossy().into_owned();
    if !commands.contains(&sub_name.as_str()) {
        return Ok(args);
    }
    let Some(sub) = cli.find_subcommand(&sub_name) else {
        return Ok(args);
    };
    // Find --config FILE / --config=FILE after the subcommand.
    let mut file = None;
    let mut rest: Vec<OsString> = Vec::new();
    let mut i = sub_at + 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--config" {
            file = Some(PathBuf::from(
                args.get(i + 1).ok_or(ConfigFileError::Missing)?,
            ));
            i += 2;
            continue;
        }
        if let Some(f) = a.strip_prefix("--config=") {
            file = Some(PathBuf::from(f));
            i += 1;
            continue;
        }
        rest.push(args[i].clone());
        i += 1;
    }
    let Some(path) = file else {
        return Ok(args);
    };
    let from_file = flags_from(&path, sub, cli)?;
    let given: Vec<String> = rest
        .iter()
        .chain(args[..sub_at].iter())
        .filter_map(|a| a.to_str())
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .collect();
    let mut out: Vec<OsString> = args[..=sub_at].to_vec();
    for (flag, value) in from_file {
        if given.contains(&flag) {
            continue; // the command line wins
        }
        // `--flag=value`: a value that starts with `-` stays a value.
        out.push(match value {
            Some(v) => format!("--{flag}={v}").into(),
            None => format!("--{flag}").into(),
        });
    }
    out.extend(rest);
    Ok(out)
}

/// The file's settings as (flag, value; none for a switch given), by key.
fn flags_from(
    path: &Path,
    sub: &clap::Command,
    cli: &clap::Command,
) -> Result<Vec<(String, Option<String>)>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigFileError::Toml {
            path: path.to_owned(),
            why: e.to_string().trim().replace('\n', " "),
        })?;
    // The command's own flags, and the program's global ones.
    let args: Vec<&clap::Arg> = sub
        .get_arguments()
        .chain(cli.get_arguments().filter(|a| a.is_global_set()))
        // Not in a file: --config (no nesting), --check-config (a service
        // that exits 0 without starting), --help.
        .filter(|a| {
            a.get_long()
                .is_some_and(|l| !matches!(l, "config" | "check-config" | "help"))
        })
        .collect();
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let Some(arg) = args.iter().find(|a| a.get_long() == Some(flag.as_str())) else {
            let mut known: Vec<&str> = args.iter().filter_map(|a| a.get_long()).collect();
            known.sort_unstable();
            return Err(ConfigFileError::UnknownKey {
                path: path.to_owned(),
                key,
                command: sub.get_name().to_string(),
                known: known.join(", "),
            });
        };
        let bad = |why: String| ConfigFileError::BadValue {
            path: path.to_owned(),
            key: key.clone(),
            why,
        };
        let switch = !arg.get_action().takes_values();
        match (&value, switch) {
            (toml::Value::Boolean(true), true) => out.push((flag, None)),
            (toml::Value::Boolean(false), true) => {}
            (_, true) => return Err(bad(format!("a switch: give true or false, not {value}"))),
            (v, false) => out.push((flag, Some(scalar_list(v).map_err(bad)?))),
        }
    }
    Ok(out)
}

/// A value as the command line writes it.
fn scalar_list(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) => Ok(items
            .iter()
            .map(scalar)
            .collect::<Result<Vec<_>, _>>()?
            .join(",")),
        toml::Value::Table(t) => Ok(t
            .iter()
            .map(|(k, v)| scalar(v).map(|v| format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()?
            .join(",")),
        toml::Value::Datetime(_) => Err("a date is not a setting".into()),
    }
}

fn scalar(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::Array(_) | toml::Value::Table(_) => {
            Err("lists and tables may hold only strings, numbers and booleans".into())
        }
        v => scalar_list(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("prog")
            .arg(clap::Arg::new("log-level").long("log-level").global(true))
            .subcommand(
                clap::Command::new("run")
                    .arg(clap::Arg::new("id").long("id"))
                    .arg(clap::Arg::new("peers").long("peers"))
                    .arg(clap::Arg::new("cpus").long("cpus"))
                    .arg(
                        clap::Arg::new("insecure")
                            .long("insecure")
                            .action(clap::ArgAction::SetTrue),
                    )
                    .arg(clap::Arg::new("config").long("config"))
                    .arg(
                        clap::Arg::new("check-config")
                            .long("check-config")
                            .action(clap::ArgAction::SetTrue),
                    ),
            )
    }

    fn expand_with(file: &str, line: &[&str]) -> Result<Vec<String>, ConfigFileError> {
        let dir = std::env::temp_dir().join(format!("ramcoord-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!(
            "{:x}.toml",
            xxhash_rust::xxh3::xxh3_64(file.as_bytes())
        ));
        std::fs::write(&path, file).unwrap();
        let mut args: Vec<OsString> = vec!["prog".into(), "run".into()];
        args.extend(
            line.iter()
                .map(|s| s.replace("FILE", &path.display().to_string()).into()),
        );
        let out = expand(args, &cli(), &["run"])?;
        Ok(out.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn the_file_becomes_flags_and_the_command_line_wins() {
        let file = "id = 1\ninsecure = true\ncpus = [2, 3]\nlog_level = \"debug\"\n[peers]\n1 = \"a:1\"\n2 = \"b:2\"\n";
        let out = expand_with(file, &["--config", "FILE", "--id", "7"]).unwrap();
        assert_eq!(
            out,
            [
                "prog",
                "run",
                "--cpus=2,3",
                "--insecure",
                "--log-level=debug",
                "--peers=1=a:1,2=b:2",
                "--id",
                "7"
            ]
        );
        let out = expand_with("insecure = false\n", &["--config=FILE"]).unwrap();
        assert_eq!(out, ["prog", "run"]);
    }

    #[test]
    fn unknown_keys_bad_values_and_bad_toml_are_refused() {
        let e = expand_with("idd = 1\n", &["--config", "FILE"]).unwrap_err();
        assert!(
            e.to_string().contains("`idd` is not a setting of `run`"),
            "{e}"
        );
        assert!(e.to_string().contains("id, insecure"), "{e}");
        let e = expand_with("insecure = \"yes\"\n", &["--config", "FILE"]).unwrap_err();
        assert!(e.to_string().contains("a switch"), "{e}");
        let e = expand_with("id = [[1]]\n", &["--config", "FILE"]).unwrap_err();
        assert!(e.to_string().contains("lists and tables"), "{e}");
        let e = expand_with("id = \n", &["--config", "FILE"]).unwrap_err();
        assert!(e.to_string().contains("not TOML"), "{e}");
        let e = expand_with("", &["--config"]).unwrap_err();
        assert!(matches!(e, ConfigFileError::Missing), "{e}");
        let e = expand_with("check-config = true\n", &["--config", "FILE"]).unwrap_err();
        assert!(
            e.to_string().contains("`check-config` is not a setting"),
            "{e}"
        );
        // A value that starts with a dash stays a value.
        let out = expand_with("id = \"-3\"\n", &["--config", "FILE"]).unwrap();
        assert_eq!(out, ["prog", "run", "--id=-3"]);
        // No --config: untouched.
        assert_eq!(
            expand_with("", &["--id", "3"]).unwrap(),
            ["prog", "run", "--id", "3"]
        );
    }
}
