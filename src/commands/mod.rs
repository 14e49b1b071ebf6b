//! The subcommands, one module each: `serve` runs the webhook server; `certs` writes its
//! certificates; `check`, `audit` and `replay` judge manifests, live workloads and audit logs
//! offline with the same core (through `offline` and `report`); `reports` keeps the cluster's
//! PolicyReports current with that judgement; `webhook_rules` prints what the webhook
//! registration must send for the loaded policies.

pub mod audit;
pub mod certs;
pub mod check;
pub mod replay;
pub mod reports;
pub mod serve;
pub mod webhook_rules;
