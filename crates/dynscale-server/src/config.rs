//! The node's configuration: what `serve` reads from its TOML file, environment
//! (`DYNSCALE_*`) and flags. Defaults work with no file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use dynscale_core::audit_entry::PrivacyRule;
use dynscale_core::snapshot::{DefaultDecision, EngineConfig};
use serde::{Deserialize, Serialize};

pub use crate::admission::AdmissionSettings;
pub use crate::monitor::AlertingSettings;
pub use crate::quotas::QuotaSettings;
pub use crate::rollouts::RolloutSettings;
pub use dynscale_core::scale::ScaleConfig;

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
    /// Evaluate the rules in the subset the built-in evaluator implements without
    /// calling Cedar (Cedar still decides every other case); `false` sends every
    /// decision through Cedar.
    pub fast_path: bool,
    /// The verifiable audit log.
    pub audit: AuditSettings,
    /// Quota and concurrency enforcement.
    pub quotas: QuotaSettings,
    /// Bounded in-flight requests and load shedding.
    pub admission: AdmissionSettings,
    /// Scale signals, their levels and the alert rules.
    pub scale: ScaleConfig,
    /// Where alert notifications go.
    pub alerting: AlertingSettings,
    /// Progressive delivery: the rollout loop, agent feedback, the analysis.
    pub rollouts: RolloutSettings,
}

/// When an appended entry counts as acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDurability {
    /// After fsync: an acknowledged decision survives power loss.
    Sync,
    /// After the write; fsync follows within `batch_window_ms`.
    Batch,
    /// On enqueue; written and fsynced in the background.
    Async,
}

/// Settings of the audit log (`[audit]` in the TOML file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    pub durability: AuditDurability,
    /// Longest time between a `batch` acknowledgement and its fsync.
    pub batch_window_ms: u64,
    /// Segment files roll over at this size.
    pub segment_bytes: u64,
    /// A cap on the audit directory's bytes; at the cap, writes halt with 503.
    pub max_bytes: Option<u64>,
    /// Signed checkpoints are written this often (when the log grew) and at shutdown.
    pub checkpoint_interval_secs: u64,
    /// The origin line of checkpoints, naming this log.
    pub origin: String,
    /// Ed25519 signing key file; created (mode 0600) in the data directory when absent.
    pub signing_key: Option<PathBuf>,
    /// Sealed segments older than this many hours are zstd-compressed.
    pub compress_after_hours: Option<u64>,
    /// When the log cannot take an entry: `false` refuses decisions with 503 (fail
    /// closed), `true` answers them unaudited.
    pub fail_open: bool,
    /// Context fields hashed or dropped before they are logged, per namespace scope.
    pub privacy: Vec<PrivacyRule>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            durability: AuditDurability::Batch,
            batch_window_ms: 5,
            segment_bytes: 64 * 1024 * 1024,
            max_bytes: None,
            checkpoint_interval_secs: 10,
            origin: "dynscale.local/audit".into(),
            signing_key: None,
            compress_after_hours: None,
            fail_open: false,
            privacy: Vec::new(),
        }
    }
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
            fast_path: true,
            audit: AuditSettings::default(),
            quotas: QuotaSettings::default(),
            admission: AdmissionSettings::default(),
            scale: ScaleConfig::default(),
            alerting: AlertingSettings::default(),
            rollouts: RolloutSettings::default(),
        }
    }
}

impl ServerConfig {
    /// The engine's share of the settings.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            default_decision: self.default_decision,
            namespace_defaults: self.namespace_defaults.clone(),
            fast_path: self.fast_path,
        }
    }
}
