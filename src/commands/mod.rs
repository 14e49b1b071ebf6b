//! The subcommands, one module each: `serve` runs the webhook server; `certs` writes its
//! certificates; `check`, `audit` and `replay` judge manifests, live workloads and audit logs
//! offline with the same core (through `offline` and `report`).

pub mod audit;
pub mod certs;
pub mod check;
pub mod replay;
pub mod serve;
