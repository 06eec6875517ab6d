//! The load generator behind `dynscale loadgen` and `dynscale certify`: the request
//! mix (`mix`), the open-loop engine (`engine`), what a run measured and how it is
//! judged (`record`), and the units its flags are written in (`units`). Everything
//! but `engine` is pure and unit-tested.

pub mod engine;
pub mod mix;
pub mod record;
pub mod units;
