//! The HTTP routers, one file per API area.

pub mod audit;
pub mod authzen;
pub mod controls;
pub mod decide;
pub mod health;
pub mod policies;
pub mod rollouts;
pub mod scale;
