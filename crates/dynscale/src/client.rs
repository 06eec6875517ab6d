//! A small blocking HTTP client for a dynscale node. It builds URLs from the base
//! `--url`, decodes JSON answers, and turns failures into [`ClientError`]: the
//! node's problem+json bodies (with every validation finding), an unreachable node,
//! or an answer it could not understand.

use std::fmt;
use std::time::Duration;

use dynscale_core::diagnostic::Diagnostic;
use reqwest::blocking::{Client as Http, RequestBuilder};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How long one request may take. Decisions take microseconds; pushes compile
/// policies, which is still far below this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of a non-JSON error body to show.
const BODY_EXCERPT: usize = 500;

/// A connection to one node.
#[derive(Debug, Clone)]
pub struct Client {
    http: Http,
    base: Url,
}

/// What a request sends.
#[derive(Debug)]
pub enum Body {
    None,
    Json(Value),
    /// A policy document, sent as it is on disk.
    Document(String),
}

/// The parts of a problem+json body (RFC 9457) that the CLI prints.
#[derive(Debug, Clone, Deserialize)]
pub struct Problem {
    #[serde(default)]
    pub title: String,
    /// For a field problem this already names the field (`context.namespace: ...`).
    #[serde(default)]
    pub detail: String,
    /// Validation findings; kept as JSON so an entry this client does not know how
    /// to read is still shown rather than lost.
    #[serde(default)]
    pub errors: Vec<Value>,
}

impl Problem {
    /// Every validation finding, one line each, as `file:line:col: [code] field: message`.
    pub fn findings(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|e| match Diagnostic::deserialize(e) {
                Ok(d) => d.to_string(),
                Err(_) => e.to_string(),
            })
            .collect()
    }
}

impl fmt::Display for Problem {
    /// `title: detail`, or for validation problems `title:` and one finding a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let title = if self.title.is_empty() {
            "request failed"
        } else {
            &self.title
        };
        let findings = self.findings();
        if findings.is_empty() {
            write!(f, "{title}: {}", self.detail)
        } else {
            let n = findings.len();
            write!(f, "{title}: {n} finding{}", if n == 1 { "" } else { "s" })?;
            for line in findings {
                write!(f, "\n{line}")?;
            }
            Ok(())
        }
    }
}

/// Why a request failed. `request` reads like `GET http://127.0.0.1:8470/v1/kill`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the URL.
    #[error(
        "cannot reach a dynscale node at {url} ({reason}); start one with `dynscale serve`, \
         or point --url (DYNSCALE_URL) at a running node"
    )]
    Unreachable { url: String, reason: String },
    /// The node refused the request and said why.
    #[error("{problem}")]
    Problem { status: u16, problem: Problem },
    /// An error status without a problem body (a proxy, or not a dynscale node).
    #[error("{request} answered {status}: {body}")]
    Status {
        request: String,
        status: u16,
        body: String,
    },
    /// A success status whose body is not what the command expects.
    #[error("{request}: the answer is not what dynscale sends ({reason})")]
    Decode { request: String, reason: String },
    /// The URL cannot carry a path.
    #[error("{url} cannot be used as a base URL")]
    BadBase { url: String },
    /// Any other transport failure (timeouts, broken connections).
    #[error("{request}: {source}")]
    Transport {
        request: String,
        source: reqwest::Error,
    },
    /// The HTTP client could not be set up.
    #[error("setting up the HTTP client: {0}")]
    Setup(reqwest::Error),
}

impl Client {
    /// A client for the node at `base` (e.g. `http://127.0.0.1:8470`).
    pub fn new(base: Url) -> Result<Self, ClientError> {
        let http = Http::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("dynscale-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Setup)?;
        Ok(Self { http, base })
    }

    /// The URL of `segments` under the base, each segment percent-encoded, with the
    /// query pairs appended.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Url, ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::BadBase {
                url: self.base.to_string(),
            })?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// `GET` and decode the JSON answer.
    pub fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        self.call(Method::GET, segments, query, Body::None)
    }

    /// `POST` and decode the JSON answer.
    pub fn post<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Body,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, segments, query, body)
    }

    /// `PUT` a JSON body and decode the JSON answer.
    pub fn put<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: Value,
    ) -> Result<T, ClientError> {
        self.call(Method::PUT, segments, &[], Body::Json(body))
    }

    /// Sends one request and decodes the JSON answer.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Body,
    ) -> Result<T, ClientError> {
        let (described, bytes) = self.send(method, segments, query, body)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            request: described,
            reason: e.to_string(),
        })
    }

    /// `GET` a text answer (e.g. a signed checkpoint).
    pub fn get_text(&self, segments: &[&str]) -> Result<String, ClientError> {
        let (described, bytes) = self.send(Method::GET, segments, &[], Body::None)?;
        String::from_utf8(bytes).map_err(|e| ClientError::Decode {
            request: described,
            reason: e.to_string(),
        })
    }

    /// Sends one request; a success gives the request's description and the body.
    fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Body,
    ) -> Result<(String, Vec<u8>), ClientError> {
        let url = self.url(segments, query)?;
        let described = format!("{method} {url}");
        let request: RequestBuilder = self.http.request(method.clone(), url.clone());
        let request = match body {
            Body::None => request,
            Body::Json(v) => request.json(&v),
            Body::Document(text) => request
                .header(CONTENT_TYPE, "application/yaml; charset=utf-8")
                .body(text),
        };
        tracing::debug!(%method, %url, "request");
        let response = request.send().map_err(|e| self.failed(&described, e))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let bytes = response.bytes().map_err(|e| self.failed(&described, e))?;
        if status.is_success() {
            return Ok((described, bytes.to_vec()));
        }
        if content_type.contains("json")
            && let Ok(problem) = serde_json::from_slice::<Problem>(&bytes)
            && (!problem.title.is_empty() || !problem.detail.is_empty())
        {
            return Err(ClientError::Problem {
                status: status.as_u16(),
                problem,
            });
        }
        let text = String::from_utf8_lossy(&bytes);
        let body = match text.char_indices().nth(BODY_EXCERPT) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text.into_owned(),
        };
        Err(ClientError::Status {
            request: described,
            status: status.as_u16(),
            body,
        })
    }

    fn failed(&self, request: &str, e: reqwest::Error) -> ClientError {
        if e.is_connect() {
            let reason = std::error::Error::source(&e).map_or_else(|| e.to_string(), root_cause);
            ClientError::Unreachable {
                url: self.base.to_string(),
                reason,
            }
        } else {
            ClientError::Transport {
                request: request.to_owned(),
                source: e,
            }
        }
    }
}

/// The innermost message of an error chain ("Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        Client::new(Url::parse(base).expect("url")).expect("client")
    }

    #[test]
    fn urls_keep_the_base_path_and_encode_segments() {
        let c = client("http://127.0.0.1:8470/");
        let url = c.url(&["v1", "agents", "a b/c"], &[]).expect("url");
        assert_eq!(url.as_str(), "http://127.0.0.1:8470/v1/agents/a%20b%2Fc");
        let c = client("http://proxy.local/dynscale");
        let url = c
            .url(
                &["v1", "policies"],
                &[("origin", "p.yaml"), ("force", "true")],
            )
            .expect("url");
        assert_eq!(
            url.as_str(),
            "http://proxy.local/dynscale/v1/policies?origin=p.yaml&force=true"
        );
    }

    #[test]
    fn problems_print_title_detail_and_every_finding() {
        let plain: Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:dynscale:problem:not-found", "title": "Not found",
            "status": 404, "detail": "policy x not found"
        }))
        .expect("problem");
        assert_eq!(plain.to_string(), "Not found: policy x not found");

        let validation: Problem = serde_json::from_value(serde_json::json!({
            "title": "Policy document rejected", "status": 422, "detail": "...",
            "errors": [
                {"code": "cedar_syntax", "message": "unexpected token", "file": "p.yaml",
                 "line": 9, "column": 7, "field": "rules[0].cedar"},
                {"code": "some_future_code", "message": "?"}
            ]
        }))
        .expect("problem");
        let text = validation.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Policy document rejected: 2 findings");
        assert_eq!(
            lines[1],
            "p.yaml:9:7: [cedar_syntax] rules[0].cedar: unexpected token"
        );
        assert!(lines[2].contains("some_future_code"), "{text}");
    }
}
