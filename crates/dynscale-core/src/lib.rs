//! dynscale-core: the pure domain of dynscale. Policy documents and their validation,
//! the compiled snapshot and decision evaluation, fleet entities and control state,
//! quotas, scale monitoring and alerting, and the rollout state machine with its
//! statistics.
//!
//! This crate does no IO: no files, no sockets, no clock, no randomness. Time and
//! identifiers are passed in by the caller.

pub mod audit_bundle;
pub mod audit_entry;
pub mod catalog;
pub mod certify;
pub mod controls;
pub mod decision;
pub mod diagnostic;
pub mod document;
mod fastpath;
pub mod ids;
pub mod merkle;
pub mod namespace;
pub mod policy;
pub mod quota;
pub mod request;
pub mod rollout;
pub mod scale;
pub mod snapshot;
mod value;
