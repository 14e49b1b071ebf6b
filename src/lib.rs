//! portcullis: a Kubernetes admission webhook. The request flow is
//! `transport` (TLS, HTTP/1.1) → `http` (routes, limits) → `review` (AdmissionReview wire
//! format) → `admission` (the pure core: `checks` and `defaults` under a `policy`, with
//! `rollout` resolving modes and exemptions) → `review` again for the response. `offline`
//! and `report` put the same core behind the `check`, `audit` and `replay` `commands`.

pub mod admission;
pub mod cel;
pub mod checks;
pub mod cli;
pub mod commands;
pub mod defaults;
pub mod http;
pub mod json_string;
pub mod logline;
pub mod logwriter;
pub mod metrics;
pub mod namespaces;
pub mod offline;
pub mod params;
pub mod policy;
pub mod quantity;
pub mod report;
pub mod request;
pub mod review;
pub mod rollout;
pub mod tls;
pub mod transport;
pub mod verdict;
pub mod workload;
