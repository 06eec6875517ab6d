//! The node's configuration as `serve` assembles it: defaults, then the TOML file,
//! then `DYNSCALE_*` environment variables, then flags, each overriding the last.
//! The environment is passed in as a lookup function so the precedence is tested
//! without touching the process environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use dynscale_core::snapshot::DefaultDecision;
use dynscale_server::ServerConfig;
use dynscale_server::config::AuditDurability;

use crate::cli::{AuditDurabilityArg, DefaultDecisionArg, ServeArgs};

/// The variable naming the configuration file when `--config` does not.
pub const CONFIG_ENV: &str = "DYNSCALE_CONFIG";

/// Settings that the environment or flags may override; `None` leaves the value
/// from the layer below.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub max_body_bytes: Option<usize>,
    pub default_namespace: Option<String>,
    pub default_decision: Option<DefaultDecision>,
    pub cedar_schema: Option<PathBuf>,
    pub audit_durability: Option<AuditDurability>,
}

impl Overrides {
    /// The overrides given as `serve` flags.
    pub fn from_flags(args: &ServeArgs) -> Self {
        Self {
            listen: args.listen,
            data_dir: args.data_dir.clone(),
            max_body_bytes: args.max_body_bytes,
            default_namespace: args.default_namespace.clone(),
            default_decision: args.default_decision.map(|d| match d {
                DefaultDecisionArg::Allow => DefaultDecision::Allow,
                DefaultDecisionArg::Deny => DefaultDecision::Deny,
            }),
            cedar_schema: args.cedar_schema.clone(),
            audit_durability: args.audit_durability.map(|d| match d {
                AuditDurabilityArg::Sync => AuditDurability::Sync,
                AuditDurabilityArg::Batch => AuditDurability::Batch,
                AuditDurabilityArg::Async => AuditDurability::Async,
            }),
        }
    }

    /// The overrides set in the environment. An empty variable counts as unset; a
    /// value that does not parse is an error naming the variable.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        Ok(Self {
            listen: var("DYNSCALE_LISTEN")
                .map(|v| {
                    v.trim().parse::<SocketAddr>().with_context(|| {
                        format!("DYNSCALE_LISTEN=`{v}` is not an address like 127.0.0.1:8470")
                    })
                })
                .transpose()?,
            data_dir: var("DYNSCALE_DATA_DIR").map(PathBuf::from),
            max_body_bytes: var("DYNSCALE_MAX_BODY_BYTES")
                .map(|v| {
                    v.trim().parse::<usize>().with_context(|| {
                        format!("DYNSCALE_MAX_BODY_BYTES=`{v}` is not a number of bytes")
                    })
                })
                .transpose()?,
            default_namespace: var("DYNSCALE_DEFAULT_NAMESPACE"),
            default_decision: var("DYNSCALE_DEFAULT_DECISION")
                .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                    "allow" => Ok(DefaultDecision::Allow),
                    "deny" => Ok(DefaultDecision::Deny),
                    _ => Err(anyhow!(
                        "DYNSCALE_DEFAULT_DECISION=`{v}` is not `allow` or `deny`"
                    )),
                })
                .transpose()?,
            cedar_schema: var("DYNSCALE_CEDAR_SCHEMA").map(PathBuf::from),
            audit_durability: var("DYNSCALE_AUDIT_DURABILITY")
                .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                    "sync" => Ok(AuditDurability::Sync),
                    "batch" => Ok(AuditDurability::Batch),
                    "async" => Ok(AuditDurability::Async),
                    _ => Err(anyhow!(
                        "DYNSCALE_AUDIT_DURABILITY=`{v}` is not `sync`, `batch` or `async`"
                    )),
                })
                .transpose()?,
        })
    }

    /// Writes every set value over `config`.
    pub fn apply(self, config: &mut ServerConfig) {
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.max_body_bytes {
            config.max_body_bytes = v;
        }
        if let Some(v) = self.default_namespace {
            config.default_namespace = Some(v);
        }
        if let Some(v) = self.default_decision {
            config.default_decision = v;
        }
        if let Some(v) = self.cedar_schema {
            config.cedar_schema = Some(v);
        }
        if let Some(v) = self.audit_durability {
            config.audit.durability = v;
        }
    }
}

/// Parses a TOML configuration. Unknown keys are errors that name the key and line.
/// Relative paths in the file are taken relative to the working directory.
pub fn parse_toml(origin: &Path, text: &str) -> Result<ServerConfig> {
    toml::from_str(text).with_context(|| format!("in the configuration file {}", origin.display()))
}

/// Builds the node's configuration from the file, the environment and the flags.
pub fn load(args: &ServeArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<ServerConfig> {
    let path = args.config.clone().or_else(|| {
        env(CONFIG_ENV)
            .filter(|v| !v.trim().is_empty())
            .map(PathBuf::from)
    });
    let mut config = match &path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the configuration file {}", path.display()))?;
            parse_toml(path, &text)?
        }
        None => ServerConfig::default(),
    };
    Overrides::from_env(env)?.apply(&mut config);
    Overrides::from_flags(args).apply(&mut config);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use super::*;

    fn serve_args(flags: &[&str]) -> ServeArgs {
        use clap::Parser;
        let mut argv = vec!["dynscale", "serve"];
        argv.extend_from_slice(flags);
        match crate::cli::Cli::try_parse_from(argv) {
            Ok(crate::cli::Cli {
                command: crate::cli::Command::Serve(args),
            }) => args,
            other => panic!("not a serve command line: {other:?}"),
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn config_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write config");
        f
    }

    #[test]
    fn defaults_work_with_no_file() {
        let config = load(&serve_args(&[]), &env_of(&[])).expect("defaults");
        assert_eq!(config, ServerConfig::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:8470");
        assert_eq!(config.data_dir, PathBuf::from("dynscale-data"));
    }

    #[test]
    fn file_then_env_then_flags() {
        let file = config_file(
            "listen = \"127.0.0.1:9001\"\n\
             data_dir = \"from-file\"\n\
             max_body_bytes = 1000\n\
             default_decision = \"allow\"\n\
             default_namespace = \"a.b.c.d.file\"\n",
        );
        let path = file.path().to_string_lossy().into_owned();

        // The file alone.
        let config = load(&serve_args(&["--config", &path]), &env_of(&[])).expect("file");
        assert_eq!(config.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(config.data_dir, PathBuf::from("from-file"));
        assert_eq!(config.max_body_bytes, 1000);
        assert_eq!(config.default_decision, DefaultDecision::Allow);

        // The environment overrides the file; what it leaves unset stays.
        let env = env_of(&[
            ("DYNSCALE_LISTEN", "127.0.0.1:9002"),
            ("DYNSCALE_DATA_DIR", "from-env"),
            ("DYNSCALE_DEFAULT_DECISION", "deny"),
            ("DYNSCALE_CEDAR_SCHEMA", "env.cedarschema"),
        ]);
        let config = load(&serve_args(&["--config", &path]), &env).expect("file+env");
        assert_eq!(config.listen.to_string(), "127.0.0.1:9002");
        assert_eq!(config.data_dir, PathBuf::from("from-env"));
        assert_eq!(config.default_decision, DefaultDecision::Deny);
        assert_eq!(config.max_body_bytes, 1000);
        assert_eq!(config.default_namespace.as_deref(), Some("a.b.c.d.file"));
        assert_eq!(config.cedar_schema, Some(PathBuf::from("env.cedarschema")));

        // Flags override both.
        let args = serve_args(&[
            "--config",
            &path,
            "--listen",
            "127.0.0.1:9003",
            "--default-decision",
            "allow",
        ]);
        let config = load(&args, &env).expect("file+env+flags");
        assert_eq!(config.listen.to_string(), "127.0.0.1:9003");
        assert_eq!(config.default_decision, DefaultDecision::Allow);
        assert_eq!(config.data_dir, PathBuf::from("from-env"));
    }

    #[test]
    fn the_config_file_may_come_from_the_environment_and_the_flag_wins() {
        let from_env = config_file("data_dir = \"env-file\"\n");
        let from_flag = config_file("data_dir = \"flag-file\"\n");
        let env_path = from_env.path().to_string_lossy().into_owned();
        let flag_path = from_flag.path().to_string_lossy().into_owned();
        let pairs = [(CONFIG_ENV, env_path.as_str())];
        let env = env_of(&pairs);

        let config = load(&serve_args(&[]), &env).expect("env file");
        assert_eq!(config.data_dir, PathBuf::from("env-file"));
        let config = load(&serve_args(&["--config", &flag_path]), &env).expect("flag file");
        assert_eq!(config.data_dir, PathBuf::from("flag-file"));
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key_and_line() {
        let text = "listen = \"127.0.0.1:8470\"\nlisten_adress = \"x\"\n";
        let err = parse_toml(Path::new("node.toml"), text).expect_err("unknown key");
        let message = format!("{err:#}");
        assert!(message.contains("listen_adress"), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("node.toml"), "{message}");
    }

    #[test]
    fn the_readme_configuration_example_is_a_valid_configuration() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## Configuration")
            .nth(1)
            .expect("a Configuration section");
        let example = section
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a TOML example");
        let config = parse_toml(Path::new("README.md"), example).expect("the example parses");
        assert_eq!(config.admission.max_in_flight, 1024);
        assert_eq!(config.scale.rules.len(), 1);
        dynscale_core::scale::ScaleMonitor::new(config.scale, 0).expect("valid [scale]");
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        for (name, value) in [
            ("DYNSCALE_LISTEN", "localhost"),
            ("DYNSCALE_MAX_BODY_BYTES", "1MB"),
            ("DYNSCALE_DEFAULT_DECISION", "maybe"),
        ] {
            let err = Overrides::from_env(&env_of(&[(name, value)])).expect_err(name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn empty_environment_values_are_unset() {
        let o = Overrides::from_env(&env_of(&[
            ("DYNSCALE_LISTEN", ""),
            ("DYNSCALE_DATA_DIR", " "),
        ]))
        .expect("empty is unset");
        assert_eq!(o, Overrides::default());
    }
}
