//! The verifiable audit log over HTTP: the latest signed checkpoint, the public key,
//! entries, one decision's entry, and inclusion and consistency proofs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use dynscale_core::audit_bundle::ProofBundle;
use dynscale_core::audit_entry::AuditEntry;
use dynscale_core::merkle::{Hash, leaf_hash};
use dynscale_store::audit::{AuditError, AuditLog};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;
use crate::node::Node;
use crate::wire::Params;

/// Runs a blocking log read off the async workers.
async fn blocking<T: Send + 'static>(
    node: &Node,
    f: impl FnOnce(&AuditLog) -> Result<T, AuditError> + Send + 'static,
) -> Result<T, ApiError> {
    let log = node.audit.log().clone();
    tokio::task::spawn_blocking(move || f(&log))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| match e {
            e if e.is_out_of_range() => ApiError::invalid("index", e),
            other => ApiError::Internal(format!("audit log: {other}")),
        })
}

/// The latest signed checkpoint (C2SP signed note), signing one if none covers the
/// log yet.
#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, content_type = "text/plain", body = String, description = "C2SP checkpoint as a signed note")))]
pub async fn checkpoint(State(node): State<Node>) -> Result<impl IntoResponse, ApiError> {
    let note = current_checkpoint(&node).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note))
}

async fn current_checkpoint(node: &Node) -> Result<String, ApiError> {
    blocking(node, |log| match log.latest_checkpoint()? {
        Some(note) if checkpoint_size(&note) == Some(log.size()) => Ok(note),
        _ => log.checkpoint_now(),
    })
    .await
}

/// The tree size line of a checkpoint note (its second line).
fn checkpoint_size(note: &str) -> Option<u64> {
    note.lines().nth(1).and_then(|l| l.parse().ok())
}

/// The public key (C2SP vkey) that verifies this log's checkpoints.
#[utoipa::path(get, path = "/v1/audit/pubkey", tag = "audit",
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn pubkey(State(node): State<Node>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", node.audit.verifier()),
    )
}

/// Query of the entry listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    /// First index (default 0).
    #[serde(default)]
    pub from: u64,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// One logged entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedEntry {
    pub index: u64,
    #[schema(value_type = String)]
    pub leaf_hash: Hash,
    /// The decoded decision or event.
    #[schema(value_type = Object)]
    pub entry: AuditEntry,
}

/// A page of entries.
#[derive(Debug, Serialize, ToSchema)]
pub struct Entries {
    /// The log's size when read.
    pub size: u64,
    pub entries: Vec<LoggedEntry>,
}

fn logged(index: u64, bytes: &[u8]) -> Result<LoggedEntry, ApiError> {
    let entry = AuditEntry::decode(bytes)
        .map_err(|e| ApiError::Internal(format!("audit entry {index}: {e}")))?;
    Ok(LoggedEntry {
        index,
        leaf_hash: leaf_hash(bytes),
        entry,
    })
}

/// Lists entries from an index.
#[utoipa::path(get, path = "/v1/audit/entries", tag = "audit", params(EntriesQuery),
    responses((status = 200, body = Entries)))]
pub async fn entries(
    State(node): State<Node>,
    Params(q): Params<EntriesQuery>,
) -> Result<Json<Entries>, ApiError> {
    let limit = q.limit.unwrap_or(100).min(1000);
    let from = q.from;
    let (size, raw) = blocking(&node, move |log| {
        let size = log.size();
        Ok((size, log.entries(from, limit)?))
    })
    .await?;
    let entries = raw
        .iter()
        .map(|(i, bytes)| logged(*i, bytes))
        .collect::<Result<_, _>>()?;
    Ok(Json(Entries { size, entries }))
}

async fn index_of(node: &Node, id: Uuid) -> Result<u64, ApiError> {
    blocking(node, move |log| log.index_of(id.as_bytes()))
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: format!("audit entry of decision {id}"),
        })
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|e| ApiError::invalid("decision_id", e))
}

/// One decision's (or event's) entry by its id.
#[utoipa::path(get, path = "/v1/audit/decisions/{id}", tag = "audit", params(("id" = String, Path)),
    responses((status = 200, body = LoggedEntry), (status = 404, body = crate::error::Problem)))]
pub async fn decision(
    State(node): State<Node>,
    Path(id): Path<String>,
) -> Result<Json<LoggedEntry>, ApiError> {
    let id = parse_id(&id)?;
    let index = index_of(&node, id).await?;
    let raw = blocking(&node, move |log| log.entries(index, 1)).await?;
    let (i, bytes) = raw.first().ok_or_else(|| ApiError::NotFound {
        what: format!("audit entry {index}"),
    })?;
    Ok(Json(logged(*i, bytes)?))
}

/// Query of an inclusion proof: an index (and optionally a tree size), or a decision id.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    pub index: Option<u64>,
    /// Tree size; default the current size, with a checkpoint signed at it.
    pub size: Option<u64>,
    pub decision_id: Option<String>,
}

/// An inclusion proof. Without `size` it is a complete proof bundle: the checkpoint is
/// signed at the proof's size, so `dynscale audit verify-proof` checks it offline.
#[derive(Debug, Serialize, ToSchema)]
pub struct Inclusion {
    pub size: u64,
    #[schema(value_type = String)]
    pub root: Hash,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub bundle: ProofBundle,
}

/// Proves that an entry is in the log.
#[utoipa::path(get, path = "/v1/audit/proof/inclusion", tag = "audit", params(InclusionQuery),
    responses((status = 200, body = Inclusion), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn inclusion(
    State(node): State<Node>,
    Params(q): Params<InclusionQuery>,
) -> Result<Json<Inclusion>, ApiError> {
    let index = match (q.index, q.decision_id) {
        (Some(i), None) => i,
        (None, Some(id)) => index_of(&node, parse_id(&id)?).await?,
        _ => {
            return Err(ApiError::invalid(
                "index",
                "give exactly one of `index` and `decision_id`",
            ));
        }
    };
    let (size, checkpoint) = match q.size {
        Some(size) => (size, String::new()),
        None => {
            let note = current_checkpoint(&node).await?;
            let size = checkpoint_size(&note)
                .ok_or_else(|| ApiError::Internal("checkpoint without a size".into()))?;
            (size, note)
        }
    };
    if index >= size {
        return Err(ApiError::invalid(
            "index",
            format!("entry {index} is not in a tree of size {size}"),
        ));
    }
    let (root, proof, raw) = blocking(&node, move |log| {
        Ok((
            log.tree_hash(size)?,
            log.inclusion_proof(index, size)?,
            log.entries(index, 1)?,
        ))
    })
    .await?;
    let bytes = raw
        .into_iter()
        .next()
        .map(|(_, b)| b)
        .ok_or_else(|| ApiError::NotFound {
            what: format!("audit entry {index}"),
        })?;
    Ok(Json(Inclusion {
        size,
        root,
        bundle: ProofBundle::new(index, &bytes, proof, checkpoint),
    }))
}

/// Query of a consistency proof.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    pub old: u64,
    pub new: u64,
}

/// A consistency proof between two tree sizes.
#[derive(Debug, Serialize, ToSchema)]
pub struct Consistency {
    pub old: u64,
    pub new: u64,
    #[schema(value_type = String)]
    pub old_root: Hash,
    #[schema(value_type = String)]
    pub new_root: Hash,
    #[schema(value_type = Vec<String>)]
    pub proof: Vec<Hash>,
}

/// Proves that the tree of size `old` is a prefix of the tree of size `new`.
#[utoipa::path(get, path = "/v1/audit/proof/consistency", tag = "audit", params(ConsistencyQuery),
    responses((status = 200, body = Consistency), (status = 422, body = crate::error::Problem)))]
pub async fn consistency(
    State(node): State<Node>,
    Params(q): Params<ConsistencyQuery>,
) -> Result<Json<Consistency>, ApiError> {
    let (old, new) = (q.old, q.new);
    let size = node.audit.log().size();
    if old > new || new > size {
        return Err(ApiError::invalid(
            "new",
            format!("need old ≤ new ≤ {size} (the log's size); got old={old}, new={new}"),
        ));
    }
    let (old_root, new_root, proof) = blocking(&node, move |log| {
        Ok((
            log.tree_hash(old)?,
            log.tree_hash(new)?,
            log.consistency_proof(old, new)?,
        ))
    })
    .await?;
    Ok(Json(Consistency {
        old,
        new,
        old_root,
        new_root,
        proof,
    }))
}
