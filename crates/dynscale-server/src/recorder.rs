//! The node's side of the audit log: opening it with the node's signing key, turning
//! decisions and events into entries (after the privacy transform), and what the node
//! does when the log cannot take an entry.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dynscale_core::audit_entry::{AuditEntry, DecisionRecord, EventRecord, apply_privacy};
use dynscale_core::merkle::{Signer, Verifier};
use dynscale_core::namespace::Namespace;
use dynscale_store::audit::{AuditConfig, AuditError, AuditLog, Durability};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::{AuditDurability, ServerConfig};
use crate::error::ApiError;

/// The audit log directory inside the data directory.
pub const AUDIT_DIR: &str = "audit";
/// The signing key file inside the data directory (unless configured elsewhere).
pub const KEY_FILE: &str = "audit-signing.key";
/// The public key (vkey) file written beside it.
pub const PUBKEY_FILE: &str = "audit-signing.pub";
/// The privacy salt, kept outside the log so deleting it unlinks hashed fields.
pub const SALT_FILE: &str = "privacy.salt";

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditStartError {
    #[error("{path}: {reason}")]
    Key { path: String, reason: String },
    #[error(transparent)]
    Log(#[from] AuditError),
}

/// The audit log as the node uses it.
#[derive(Debug, Clone)]
pub struct Audit {
    log: AuditLog,
    verifier: Verifier,
    salt: Arc<[u8]>,
    config: Arc<ServerConfig>,
    full: Arc<AtomicBool>,
}

impl Audit {
    /// Opens (or creates) the log and the node's signing key in the data directory.
    pub fn open(config: Arc<ServerConfig>) -> Result<Self, AuditStartError> {
        let data = &config.data_dir;
        let key_path = config
            .audit
            .signing_key
            .clone()
            .unwrap_or_else(|| data.join(KEY_FILE));
        let signer = load_or_create_key(&key_path, &config.audit.origin)?;
        let verifier = signer.verifier();
        write_public_key(&data.join(PUBKEY_FILE), &verifier)?;
        let salt = load_or_create_secret(&data.join(SALT_FILE))?;
        let settings = &config.audit;
        let (log, recovery) = AuditLog::open(
            AuditConfig {
                dir: data.join(AUDIT_DIR),
                durability: match settings.durability {
                    AuditDurability::Sync => Durability::Sync,
                    AuditDurability::Batch => Durability::Batch,
                    AuditDurability::Async => Durability::Async,
                },
                batch_window: Duration::from_millis(settings.batch_window_ms),
                segment_bytes: settings.segment_bytes,
                max_bytes: settings.max_bytes,
                checkpoint_interval: Duration::from_secs(settings.checkpoint_interval_secs),
                origin: settings.origin.clone(),
                queue: 65_536,
                compress_after: settings
                    .compress_after_hours
                    .map(|h| Duration::from_secs(h * 3600)),
            },
            signer,
        )?;
        if recovery.truncated_bytes > 0 {
            tracing::warn!(
                truncated_bytes = recovery.truncated_bytes,
                entries = recovery.entries,
                "audit log: a torn tail was truncated to the last whole entry"
            );
        }
        Ok(Self {
            log,
            verifier,
            salt: Arc::from(salt),
            config,
            full: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The log itself, for reads and proofs.
    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    /// The public key that verifies this log's checkpoints.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Whether the last append failed for lack of space.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Whether decisions are answered when the log cannot take them.
    pub fn fails_open(&self) -> bool {
        self.config.audit.fail_open
    }

    /// The decision's entry, with the privacy rules applied to its context.
    pub fn decision_entry(
        &self,
        mut record: DecisionRecord,
        context: &Map<String, Value>,
        namespace: &Namespace,
    ) -> Vec<u8> {
        record.context = apply_privacy(context, namespace, &self.config.audit.privacy, &self.salt);
        AuditEntry::Decision(record).encode()
    }

    /// Appends entries; the indexes come back in order once they are acknowledged in the
    /// configured durability mode.
    pub async fn append(&self, entries: Vec<Vec<u8>>) -> Result<Vec<u64>, ApiError> {
        let result = if entries.len() == 1 {
            let mut entries = entries;
            let entry = entries.pop().unwrap_or_default();
            self.log.append(entry).await.map(|i| vec![i])
        } else {
            self.log.append_batch(entries).await
        };
        match result {
            Ok(indexes) => {
                if self.full.swap(false, Ordering::Relaxed) {
                    tracing::warn!("audit log: space is back; writes resumed");
                }
                Ok(indexes)
            }
            Err(AuditError::Full { .. }) => {
                if !self.full.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        alert = "audit_log_full",
                        "audit log is full: writes halt with 503 until space returns"
                    );
                }
                Err(ApiError::Unavailable {
                    detail: "the audit log is full; writes are halted until space returns".into(),
                })
            }
            Err(e) => Err(ApiError::Internal(format!("audit log: {e}"))),
        }
    }

    /// Appends one event and returns its index.
    pub async fn event(&self, kind: &str, subject: &str, detail: Value) -> Result<u64, ApiError> {
        let entry = AuditEntry::Event(EventRecord {
            event_id: Uuid::now_v7(),
            at: OffsetDateTime::now_utc(),
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            detail,
        });
        let mut indexes = self.append(vec![entry.encode()]).await?;
        indexes
            .pop()
            .ok_or_else(|| ApiError::Internal("audit log returned no index".into()))
    }
}

fn key_error(path: &Path, reason: impl std::fmt::Display) -> AuditStartError {
    AuditStartError::Key {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads the signing key (C2SP note private key text), or creates one with mode 0600.
fn load_or_create_key(path: &Path, origin: &str) -> Result<Signer, AuditStartError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Signer::from_skey(text.trim()).map_err(|e| key_error(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| key_error(path, e))?;
            let signer = Signer::from_seed(origin, seed).map_err(|e| key_error(path, e))?;
            write_private(path, signer.to_skey().as_bytes())?;
            Ok(signer)
        }
        Err(e) => Err(key_error(path, e)),
    }
}

fn load_or_create_secret(path: &Path) -> Result<Vec<u8>, AuditStartError> {
    match std::fs::read(path) {
        Ok(bytes) if !bytes.is_empty() => Ok(bytes),
        Ok(_) => Err(key_error(path, "the file is empty")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut salt = vec![0u8; 32];
            getrandom::fill(&mut salt).map_err(|e| key_error(path, e))?;
            write_private(path, &salt)?;
            Ok(salt)
        }
        Err(e) => Err(key_error(path, e)),
    }
}

/// Writes a secret file readable by its owner only, created fresh.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AuditStartError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| key_error(parent, e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| key_error(path, e))?;
    file.write_all(bytes).map_err(|e| key_error(path, e))?;
    file.sync_all().map_err(|e| key_error(path, e))
}

fn write_public_key(path: &Path, verifier: &Verifier) -> Result<(), AuditStartError> {
    std::fs::write(path, format!("{verifier}\n")).map_err(|e| key_error(path, e))
}

/// Where the public key of a data directory's log is.
pub fn public_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(PUBKEY_FILE)
}
