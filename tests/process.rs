//! The binary as a platform team runs it: `portcullis serve` on a fresh machine generates a
//! development certificate, becomes ready, answers over TLS, and exits 0 on SIGTERM; a broken
//! policy file stops startup with the file and field named.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

#[tokio::test]
async fn serve_on_a_fresh_machine_generates_a_dev_certificate_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("server exited before serving");
        let log: serde_json::Value = serde_json::from_str(&line).expect("json log lines");
        if let Some(listen) = log["fields"]["listen"].as_str() {
            break listen.parse::<std::net::SocketAddr>().unwrap();
        }
    };
    let certs = dir.path().join("certs");
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(certs.join(f).is_file(), "{f} not generated");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs.join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key must be private");
    }
    let ca = std::fs::read_to_string(certs.join("ca.crt")).unwrap();
    let status = curl_like(addr, &ca, "/readyz").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after draining")
        .unwrap();
    assert!(exit.success(), "SIGTERM must exit 0, got {exit}");
}

/// A minimal GET over TLS that returns the status line.
async fn curl_like(addr: std::net::SocketAddr, ca: &str, path: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(portcullis::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.ok();
    out.lines().next().unwrap_or("").to_owned()
}

#[tokio::test]
async fn a_broken_policy_file_stops_startup_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let default = std::fs::read_to_string(repo().join("policies/default.yaml")).unwrap();
    std::fs::write(
        policies.join("broken.yaml"),
        default.replacen("mode: enforce", "mode: enforced", 1),
    )
    .unwrap();
    let out = binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--policies"])
        .arg(&policies)
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.yaml"), "{stderr}");
    assert!(
        stderr.contains("unknown variant `enforced`") && stderr.contains("mode: enforced"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("certs").exists(),
        "nothing is started before policies load"
    );
}
