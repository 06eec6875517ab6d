//! The node's configuration: what `serve` reads from its TOML file, environment
//! (`DYNSCALE_*`) and flags. Defaults work with no file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use dynscale_core::snapshot::{DefaultDecision, EngineConfig};
use serde::{Deserialize, Serialize};

/// Settings of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Without authentication (development mode) it must be a
    /// loopback address.
    pub listen: SocketAddr,
    /// Directory holding the embedded state store.
    pub data_dir: PathBuf,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest number of requests in one batch call.
    pub max_batch: usize,
    /// Namespace used when a request does not name one.
    pub default_namespace: Option<String>,
    /// Decision when no policy applies in a namespace whose root has no own default.
    pub default_decision: DefaultDecision,
    /// Default decision per namespace root (org segment). A root is known to the node
    /// when it has a default here or an active policy under it.
    pub namespace_defaults: BTreeMap<String, DefaultDecision>,
    /// A Cedar schema file (`.cedarschema` or JSON) to type-check policies against.
    pub cedar_schema: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8470)),
            data_dir: PathBuf::from("dynscale-data"),
            max_body_bytes: 1024 * 1024,
            max_batch: 10_000,
            default_namespace: None,
            default_decision: DefaultDecision::Deny,
            namespace_defaults: BTreeMap::new(),
            cedar_schema: None,
        }
    }
}

impl ServerConfig {
    /// The engine's share of the settings.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            default_decision: self.default_decision,
            namespace_defaults: self.namespace_defaults.clone(),
        }
    }
}
