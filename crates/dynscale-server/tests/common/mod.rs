//! The in-process HTTP client the API tests share: each request goes through the
//! node's router with `tower::ServiceExt::oneshot`.

// Each test crate uses its own part of this module.
#![allow(dead_code)]

use std::ops::Deref;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use dynscale_server::{Node, ServerConfig};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    /// The body as JSON, or `Null` when it is not JSON.
    pub body: Value,
    /// The body as text (lossy UTF-8).
    pub text: String,
}

pub struct Client {
    pub router: Router,
}

impl Client {
    pub async fn call(&self, method: Method, uri: &str, body: impl Into<Body>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .expect("request builds");
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("router answers");
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            content_type,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, Body::empty()).await
    }

    pub async fn post(&self, uri: &str, body: Value) -> Reply {
        self.call(Method::POST, uri, body.to_string()).await
    }

    /// Pushes a policy document (YAML or JSON text).
    pub async fn push(&self, text: &str) -> Reply {
        self.call(Method::POST, "/v1/policies", text.to_owned())
            .await
    }
}

/// A node opened in process, with a client of its router.
pub struct Api {
    pub node: Node,
    pub http: Client,
}

impl Deref for Api {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.http
    }
}

impl Api {
    pub async fn open(config: ServerConfig) -> Self {
        let node = Node::open(config).await.expect("node opens");
        let http = Client {
            router: node.router(),
        };
        Api { node, http }
    }
}
