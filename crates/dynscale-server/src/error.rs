//! The one HTTP error type. Every status mapping lives here, and every body is
//! `application/problem+json` (RFC 9457). Details of 5xx errors go to the log only.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dynscale_core::diagnostic::Diagnostic;
use dynscale_core::quota::CostError;
use dynscale_core::request::InputError;
use dynscale_core::snapshot::EvalError;
use dynscale_store::StoreError;
use serde::Serialize;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not well-formed JSON.
    #[error("malformed JSON at line {line}, column {column}: {detail}")]
    MalformedJson {
        detail: String,
        line: usize,
        column: usize,
    },
    /// Well-formed, but a field is missing, of the wrong type, unknown or invalid.
    /// `detail` is a whole sentence that names the field (see [`ApiError::invalid`]).
    #[error("{detail}")]
    InvalidField { field: String, detail: String },
    /// The body is larger than the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// A policy document failed validation; nothing was stored.
    #[error("policy document rejected with {} error(s)", errors.len())]
    Validation { errors: Vec<Diagnostic> },
    /// The namespace's root is not known to this node, or the request's values could
    /// not be given to Cedar.
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error("{what} not found")]
    NotFound { what: String },
    /// Not found, with a whole sentence saying what and why.
    #[error("{detail}")]
    Missing { detail: String },
    #[error("{detail}")]
    Conflict { detail: String },
    /// The node cannot serve the request now (starting, stopping).
    #[error("{detail}")]
    Unavailable { detail: String },
    /// Admission control is shedding load; ask again after `retry_after_secs`.
    #[error(
        "the node is at its limit of {limit} requests in flight and is shedding load; \
         retry after {retry_after_secs} s"
    )]
    Overloaded { limit: usize, retry_after_secs: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        // InputError's message already names its field.
        ApiError::InvalidField {
            field: e.field(),
            detail: e.to_string(),
        }
    }
}

impl From<CostError> for ApiError {
    fn from(e: CostError) -> Self {
        ApiError::InvalidField {
            field: e.field(),
            detail: e.to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// The problem+json body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URN naming the kind of problem, e.g. `urn:dynscale:problem:validation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every validation finding (file, line, column, field, code, message).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<Diagnostic>,
}

impl ApiError {
    /// An invalid field, with a detail prefixed by the field's name.
    pub fn invalid(field: &str, detail: impl std::fmt::Display) -> Self {
        ApiError::InvalidField {
            field: field.to_owned(),
            detail: format!("{field}: {detail}"),
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson { .. } => StatusCode::BAD_REQUEST,
            ApiError::InvalidField { .. } | ApiError::Validation { .. } | ApiError::Eval(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound { .. } | ApiError::Missing { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem body, as a client sees it.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let (slug, title) = match self {
            ApiError::MalformedJson { .. } => ("malformed-json", "Malformed JSON"),
            ApiError::InvalidField { .. } => ("invalid-field", "Invalid request field"),
            ApiError::PayloadTooLarge { .. } => ("payload-too-large", "Request body too large"),
            ApiError::Validation { .. } => ("validation", "Policy document rejected"),
            ApiError::Eval(EvalError::UnknownNamespace { .. }) => {
                ("unknown-namespace", "Unknown namespace")
            }
            ApiError::Eval(EvalError::Cedar(_)) => ("evaluation", "Request not evaluable"),
            ApiError::NotFound { .. } | ApiError::Missing { .. } => ("not-found", "Not found"),
            ApiError::Conflict { .. } => ("conflict", "Conflict"),
            ApiError::Unavailable { .. } => ("unavailable", "Service unavailable"),
            ApiError::Overloaded { .. } => ("overloaded", "Too many requests"),
            ApiError::Internal(_) => ("internal", "Internal error"),
        };
        let detail = match self {
            ApiError::Internal(_) => "the node failed to handle the request; see its log".into(),
            ApiError::Validation { errors } => errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            other => other.to_string(),
        };
        let field = match self {
            ApiError::InvalidField { field, .. } => Some(field.clone()),
            ApiError::Eval(EvalError::UnknownNamespace { .. }) => Some("context.namespace".into()),
            _ => None,
        };
        let errors = match self {
            ApiError::Validation { errors } => errors.clone(),
            _ => Vec::new(),
        };
        Problem {
            kind: format!("urn:dynscale:problem:{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            field,
            errors,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "request failed");
        }
        let status = self.status();
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::Overloaded {
            retry_after_secs, ..
        } = self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        resp
    }
}
