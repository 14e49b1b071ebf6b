//! Entry point: parse the command line, set up logging, run the command, map failure to a
//! non-zero exit with the reason on stderr.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use portcullis::cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Serve(args) => *args,
        Command::Reports(args) => {
            let _log_flush = init_logging(args.log_format);
            let _ = rustls::crypto::ring::default_provider().install_default();
            let result = tokio::runtime::Runtime::new()
                .map_err(portcullis::offline::OfflineError::Output)
                .and_then(|rt| rt.block_on(portcullis::commands::reports::run(*args)));
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "reports stopped");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Certs(args) => {
            return match portcullis::commands::certs::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis certs: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Check(args) => {
            return verdict_exit("check", portcullis::commands::check::run(&args));
        }
        Command::Replay(args) => {
            return verdict_exit("replay", portcullis::commands::replay::run(&args));
        }
        Command::WebhookRules(args) => {
            return match portcullis::commands::webhook_rules::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis webhook-rules: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Audit(args) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let result = tokio::runtime::Runtime::new()
                .map_err(portcullis::offline::OfflineError::Output)
                .and_then(|rt| rt.block_on(portcullis::commands::audit::run(&args)));
            return verdict_exit("audit", result);
        }
    };
    let _log_flush = init_logging(args.log_format);
    // Our own configs name the ring provider explicitly; installing it process-wide as well
    // keeps any library that builds a rustls config with the default builder on the same one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(portcullis::commands::serve::run(args, started)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Logging is set up by now, so the reason goes where operators read logs.
            tracing::error!(error = %e, "startup failed");
            ExitCode::FAILURE
        }
    }
}

/// Offline commands: 0 when nothing would be denied, 1 when something would, 2 when the
/// command could not run.
fn verdict_exit(
    command: &str,
    result: Result<bool, portcullis::offline::OfflineError>,
) -> ExitCode {
    match result {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(1),
        Err(e) => {
            eprintln!("portcullis {command}: {e}");
            ExitCode::from(2)
        }
    }
}

/// The returned guard writes the log lines still waiting when main returns.
fn init_logging(format: LogFormat) -> portcullis::logwriter::Flush {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = portcullis::logwriter::spawn(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    match format {
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(portcullis::logline::JsonLine)
            .init(),
        LogFormat::Text => builder.init(),
    }
    guard
}
