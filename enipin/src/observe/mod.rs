//! What an operator reads: the HTTP endpoint ([`http`]), the log format ([`logging`]) and the
//! datapath's counters (`enipin stats`, Prometheus exposition: [`metrics`]).

pub(crate) mod http;
pub mod logging;
pub mod metrics;
