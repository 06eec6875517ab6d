//! JSON wire types of the HTTP API: OpenID AuthZEN 1.0 evaluation requests and
//! responses, dynscale's own decide shape, and the body decoder that names the field
//! at fault. Only this crate knows these types.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use dynscale_core::request::ActionInput;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

/// The subject of an AuthZEN request. Agents use type `Agent`; `properties.pack`
/// names the agent's pack.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
}

/// The action: `name` becomes Cedar's `Action::"<name>"`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
}

/// The resource: `<type>::"<id>"` in Cedar, with its properties as attributes.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
}

/// One access evaluation request (AuthZEN 1.0). The namespace is
/// `context.namespace` (five segments, `service.operation.division.country.org`).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationRequest {
    pub subject: Subject,
    pub action: Action,
    pub resource: Resource,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
}

impl EvaluationRequest {
    /// The request's attribute data as the decision engine takes it.
    pub fn action_input<'a>(&'a self, default_namespace: Option<&'a str>) -> ActionInput<'a> {
        ActionInput {
            subject_type: &self.subject.kind,
            subject_id: &self.subject.id,
            subject_properties: &self.subject.properties,
            action: &self.action.name,
            resource_type: &self.resource.kind,
            resource_id: &self.resource.id,
            resource_properties: &self.resource.properties,
            context: &self.context,
            default_namespace,
        }
    }
}

/// dynscale's full account of a decision.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema, PartialEq)]
pub struct DecisionContext {
    /// allow, warn, deny, throttle, quarantine or escalate.
    pub outcome: String,
    pub decision_id: Uuid,
    /// The determining rules (`name@version#rule`) or the control that decided.
    pub reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Policies skipped because their evaluation failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// `name@version` of every policy evaluated.
    pub policies: Vec<String>,
    /// The snapshot the decision read.
    pub snapshot: u64,
    /// Seconds after which the same request can pass (outcome `throttle`; absent
    /// when waiting cannot help, e.g. a cost above the burst).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<f64>,
    /// The concurrency leases this allowed action holds; free them with
    /// `POST /v1/leases/{lease_id}/release` when the action ends (they also expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    /// The pending escalation this decision opened (outcome `escalate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_id: Option<Uuid>,
    /// The decision's index in the audit log (absent only when the log is full and
    /// the node is configured to fail open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_index: Option<u64>,
    /// The rollout the request fell in and the arm whose version decided
    /// (`control` or `candidate`); report the action's result with
    /// `POST /v1/feedback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutArm>,
}

/// The rollout and arm of a decision.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema, PartialEq)]
pub struct RolloutArm {
    /// The policy being rolled out.
    pub name: String,
    /// `control` or `candidate`.
    pub arm: String,
}

/// `POST /v1/feedback`: what came of an action after its decision.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// The `decision_id` of a decision made inside a rollout.
    pub decision_id: Uuid,
    /// `success`, `failure` (the action ran and failed) or `error` (it could not run).
    pub outcome: FeedbackOutcome,
    /// How long the action took, in milliseconds.
    pub latency_ms: f64,
}

/// The result of an action.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackOutcome {
    Success,
    Failure,
    Error,
}

/// Feedback recorded.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct FeedbackRecorded {
    /// The policy rolled out.
    pub rollout: String,
    /// The arm the feedback counts for.
    pub arm: String,
}

/// An AuthZEN evaluation response; `decision` is true for allow and warn only.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct EvaluationResponse {
    pub decision: bool,
    pub context: Value,
}

/// One item of an AuthZEN batch; absent parts default to the request's top level.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationItem {
    pub subject: Option<Subject>,
    pub action: Option<Action>,
    pub resource: Option<Resource>,
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Value>>,
}

/// How a batch is evaluated (AuthZEN `options.evaluations_semantic`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvaluationsSemantic {
    #[default]
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

/// Batch options.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct EvaluationsOptions {
    #[serde(default)]
    pub evaluations_semantic: EvaluationsSemantic,
}

/// An AuthZEN batch request. Without `evaluations` it is a single evaluation.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationsRequest {
    pub subject: Option<Subject>,
    pub action: Option<Action>,
    pub resource: Option<Resource>,
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Value>>,
    #[serde(default)]
    pub evaluations: Vec<EvaluationItem>,
    #[serde(default)]
    pub options: EvaluationsOptions,
}

/// An AuthZEN batch response, one result per evaluation in order.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct EvaluationsResponse {
    pub evaluations: Vec<EvaluationResponse>,
}

/// `POST /v1/decide` answer: the decision context plus `allowed`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema, PartialEq)]
pub struct DecideResponse {
    pub allowed: bool,
    #[serde(flatten)]
    pub context: DecisionContext,
}

/// `POST /v1/decide/batch` body.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideBatchRequest {
    pub requests: Vec<EvaluationRequest>,
}

/// One batch result: a decision or the problem with that request.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum DecideBatchItem {
    Decision(Box<DecideResponse>),
    Error {
        #[schema(value_type = Object)]
        error: Value,
    },
}

/// `POST /v1/decide/batch` answer, one result per request in order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DecideBatchResponse {
    pub results: Vec<DecideBatchItem>,
}

/// A request body, read whole within the configured limit. Oversize bodies become a
/// problem+json 413 rather than axum's plain-text rejection.
#[derive(Debug)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(usize::MAX, |l| l.0);
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge { limit })
            }
            Err(e) => Err(ApiError::invalid("body", e.body_text())),
        }
    }
}

/// The body limit in force, placed in request extensions so rejections can name it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Decodes JSON, telling syntax errors (400) from shape errors (422, naming the field).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    result.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        let detail = match message.rfind(" at line ") {
            Some(i) => message[..i].to_owned(),
            None => message,
        };
        if inner.is_syntax() || inner.is_eof() {
            ApiError::MalformedJson {
                detail,
                line: inner.line(),
                column: inner.column(),
            }
        } else {
            // serde reports a missing field at its parent; name the field itself.
            let missing = detail
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let field = match (path.as_str(), missing) {
                (".", Some(name)) => name.to_owned(),
                (_, Some(name)) => format!("{path}.{name}"),
                (".", None) => "body".into(),
                _ => path,
            };
            ApiError::invalid(&field, detail)
        }
    })
}

/// Query parameters, with a problem+json 422 naming the parameter when they do not
/// parse (axum's own rejection is plain text).
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Params)
            .map_err(|e| {
                let field = e.path().to_string();
                let field = if field == "." {
                    "query".to_owned()
                } else {
                    field
                };
                ApiError::invalid(&field, e.into_inner())
            })
    }
}
