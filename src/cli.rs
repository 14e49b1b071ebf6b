//! The command line: one clap struct per command, every flag with an environment variable,
//! parsed once at the edge into typed values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::policy::Date;
use crate::report::Format;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Kubernetes admission webhook: rejects unsafe workloads, patches safe defaults into Pods"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve /validate and /mutate over HTTPS.
    Serve(Box<ServeArgs>),
    /// Write a CA and a serving certificate for the in-cluster Service, and print the caBundle.
    Certs(CertsArgs),
    /// Judge manifests offline (files, directories, or - for stdin); exit 1 if any would be denied.
    Check(CheckArgs),
    /// Judge the live workloads of a cluster as if they were created now.
    Audit(AuditArgs),
    /// Read an apiserver audit log and report what the policies would have denied.
    Replay(ReplayArgs),
    /// Print the ValidatingWebhookConfiguration `rules` the loaded policies need: the kinds
    /// the checks judge, and every resource a CEL rule matches.
    WebhookRules(WebhookRulesArgs),
    /// Keep wgpolicyk8s.io PolicyReports (one per namespace) and a ClusterPolicyReport current
    /// for the live workloads, judged as `audit` judges them. Run exactly one.
    Reports(Box<ReportsArgs>),
}

#[derive(Debug, Args)]
pub struct ReportsArgs {
    /// Directory of policy files. Default policies/ if it exists, else the embedded default.
    #[arg(long, env = "PORTCULLIS_POLICIES")]
    pub policies: Option<PathBuf>,
    /// How often the policy directory is read again for changes.
    #[arg(long, env = "PORTCULLIS_POLICY_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub policy_reload_interval: Duration,
    /// Every object is judged again at least this often, so schedules and expiring
    /// exemptions reach the reports without a change to the object.
    #[arg(long, env = "PORTCULLIS_RESYNC_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// At most this many report writes (create, update, delete) per second.
    #[arg(long, env = "PORTCULLIS_MAX_WRITES_PER_SECOND", default_value_t = 5.0)]
    pub max_writes_per_second: f64,
    /// Plain-HTTP listener for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "PORTCULLIS_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: SocketAddr,
    /// Log line format.
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct WebhookRulesArgs {
    /// Directory of policy files. Default policies/ if it exists, else the embedded default.
    #[arg(long, env = "PORTCULLIS_POLICIES")]
    pub policies: Option<PathBuf>,
}

/// What the offline commands share: which policies, as of which day, and the output format.
#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// Directory of policy files. Default policies/ if it exists, else the embedded default.
    #[arg(long, env = "PORTCULLIS_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Judge as of this UTC day (YYYY-MM-DD) instead of today: schedules and exemption
    /// expiry follow it, so "what happens on the enforce date" can be asked now.
    #[arg(long, value_parser = parse_date)]
    pub as_of: Option<Date>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub judge: JudgeArgs,
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Namespace for objects whose metadata names none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Manifest files or directories (read recursively), or - for standard input.
    #[arg(required = true)]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub judge: JudgeArgs,
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Kubeconfig to use; default as kubectl finds it (KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Only these namespaces (repeatable); default all.
    #[arg(long = "namespace", short = 'n')]
    pub namespaces: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// The audit log: JSON lines as the apiserver's log backend writes them; - for stdin.
    #[arg(long)]
    pub audit_log: PathBuf,
    /// How many offenders (users, workloads) to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    #[arg(short, long, value_enum, default_value_t = ReplayFormat::Text)]
    pub output: ReplayFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReplayFormat {
    Text,
    Json,
}

fn parse_date(s: &str) -> Result<Date, String> {
    Date::parse(s).ok_or_else(|| format!("{s:?} is not a date written YYYY-MM-DD"))
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Name of the Service in front of portcullis.
    #[arg(long, env = "PORTCULLIS_SERVICE")]
    pub service: String,
    /// Namespace of that Service.
    #[arg(long, env = "PORTCULLIS_NAMESPACE")]
    pub namespace: String,
    /// Directory for ca.crt, tls.crt and tls.key.
    #[arg(long, env = "PORTCULLIS_CERTS_OUT", default_value = "certs")]
    pub out: PathBuf,
    /// Validity of the CA and the certificate, in days.
    #[arg(long, env = "PORTCULLIS_CERTS_DAYS", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS listener.
    #[arg(long, env = "PORTCULLIS_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain. Default certs/tls.crt; when neither --tls-cert nor --tls-key is
    /// given and the default files are missing, a development CA and certificate are generated
    /// into certs/.
    #[arg(long, env = "PORTCULLIS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate. Default certs/tls.key.
    #[arg(long, env = "PORTCULLIS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require callers to present a client certificate signed by this CA (PEM): the
    /// apiserver's admission kubeconfig supplies one.
    #[arg(long, env = "PORTCULLIS_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Plain-HTTP listener for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "PORTCULLIS_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: SocketAddr,
    /// How often the certificate files are checked for a new pair.
    #[arg(long, env = "PORTCULLIS_CERT_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
    /// How often the policy directory is read again for changes.
    #[arg(long, env = "PORTCULLIS_POLICY_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub policy_reload_interval: Duration,
    /// Directory of policy files. Default policies/; when that directory does not exist and
    /// the flag is not given, the default policy compiled into the binary is used.
    #[arg(long, env = "PORTCULLIS_POLICIES")]
    pub policies: Option<PathBuf>,
    /// A second policy directory judged on every request alongside the real one, never
    /// answered with: disagreements are logged and counted (shadow evaluation).
    #[arg(long, env = "PORTCULLIS_CANDIDATE_POLICIES")]
    pub candidate_policies: Option<PathBuf>,
    /// Keep a cache of namespace labels for `namespaceLabels` and namespace selectors:
    /// `auto` watches when running in a cluster, and outside one when a loaded policy needs
    /// labels and a kubeconfig is found; `always` watches from a kubeconfig regardless.
    #[arg(long, env = "PORTCULLIS_WATCH_NAMESPACES", value_enum, default_value_t = WatchNamespaces::Auto)]
    pub watch_namespaces: WatchNamespaces,
    /// Deadline for one request, body included; keep it below the webhooks' timeoutSeconds.
    #[arg(long, env = "PORTCULLIS_REQUEST_TIMEOUT", default_value = "4s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// A client must finish its TLS handshake within this long, and a request head that has
    /// started within this long of its first byte (slow clients). Idle is not slow: see
    /// `--idle-timeout`.
    #[arg(long, env = "PORTCULLIS_CONNECTION_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connection_timeout: Duration,
    /// A keep-alive connection with no request under way is closed after this long. Keep it
    /// above the apiserver's idle limit (90 s), so the apiserver closes first and never sends
    /// a review into a connection the server is closing.
    #[arg(long, env = "PORTCULLIS_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Connections open at once, idle ones included; at the cap the longest-idle one is
    /// closed to admit a new client.
    #[arg(long, env = "PORTCULLIS_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// After SIGTERM, keep serving this long (unready, every answer with `Connection: close`)
    /// before the listener closes, so the apiserver's keep-alive connections move to other
    /// replicas between requests instead of losing one mid-write.
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish on SIGTERM.
    #[arg(long, env = "PORTCULLIS_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Log line format.
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WatchNamespaces {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `250ms`, `4s`, `2m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 250ms, 4s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?} is not a duration like 250ms, 4s or 2m")),
    }
}
