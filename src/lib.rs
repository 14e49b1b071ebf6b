//! portcullis: a Kubernetes admission webhook. The request flow is
//! `transport` (TLS, HTTP/1.1) → `http` (routes, limits) → `review` (AdmissionReview wire
//! format) → `admission` (the pure core: `checks` and `defaults` under a `policy`) → `review`
//! again for the response.

pub mod admission;
pub mod audit;
pub mod certs;
pub mod check;
pub mod checks;
pub mod cli;
pub mod defaults;
pub mod http;
pub mod metrics;
pub mod namespaces;
pub mod offline;
pub mod policy;
pub mod quantity;
pub mod replay;
pub mod report;
pub mod request;
pub mod review;
pub mod rollout;
pub mod serve;
pub mod tls;
pub mod transport;
pub mod verdict;
pub mod workload;
