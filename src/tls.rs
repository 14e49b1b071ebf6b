//! Certificates and the rustls server configuration. The ring provider is chosen explicitly
//! (no process-wide default is relied on), only TLS 1.2 and 1.3 are offered, and ALPN offers
//! only `http/1.1`, which is all kube-apiserver speaks to webhooks. `generate` makes a CA and a
//! serving certificate: the dev path of `serve` uses it, and so can the certificate tooling.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("certificate and key do not make a usable TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The ring-backed provider, passed explicitly to every config.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The serving certificate, swappable while the server runs. A Kubernetes Secret mount
/// updates its files by an atomic symlink swap; `reload` reads them again and replaces the key
/// only when the new pair parses and matches, so a half-written or broken pair never serves.
/// Handshakes already under way finish with the key they started with.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The file contents last loaded, to tell whether anything changed.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
    expires_at: AtomicI64,
}

impl CertStore {
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let (certified, expires_at) = certified_key(cert, &cert_pem, key, &key_pem)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(certified)),
            loaded: Mutex::new((cert_pem, key_pem)),
            expires_at: AtomicI64::new(expires_at),
        }))
    }

    /// Reads the files again: `Ok(true)` when a new pair is now served, `Ok(false)` when
    /// nothing changed, an error (and the old pair kept) when the new files are unusable.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (cert_pem, key_pem) = (read(&self.cert)?, read(&self.key)?);
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.0 == cert_pem && loaded.1 == key_pem {
            return Ok(false);
        }
        let (certified, expires_at) = certified_key(&self.cert, &cert_pem, &self.key, &key_pem)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        self.expires_at.store(expires_at, Ordering::Relaxed);
        *loaded = (cert_pem, key_pem);
        Ok(true)
    }

    /// Unix time at which the served certificate expires.
    pub fn expires_at(&self) -> i64 {
        self.expires_at.load(Ordering::Relaxed)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn certified_key(
    cert: &Path,
    cert_pem: &[u8],
    key: &Path,
    key_pem: &[u8],
) -> Result<(CertifiedKey, i64), TlsError> {
    let pem = |path: &Path, reason: String| TlsError::Pem {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| pem(cert, "no CERTIFICATE block".into()))?;
    let expires_at = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| pem(cert, format!("not an X.509 certificate: {e}")))?
        .1
        .validity()
        .not_after
        .timestamp();
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| pem(key, e.to_string()))?;
    let certified = CertifiedKey::from_der(chain, key_der, &provider())?;
    Ok((certified, expires_at))
}

/// The server config: TLS 1.2 and 1.3, ALPN `http/1.1`, the certificate from `certs`, and,
/// with `client_ca`, a client certificate signed by that CA required of every caller.
pub fn server_config(
    certs: Arc<CertStore>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(&read(path)?) {
                let ca = ca.map_err(|e| TlsError::Pem {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
                roots.add(ca)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Pem {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A freshly generated CA and a serving certificate it signed, all PEM.
pub struct Bundle {
    pub ca_cert: String,
    pub cert: String,
    pub key: String,
}

/// Generates a CA and a serving certificate for `names` (DNS names or IP addresses), both
/// valid from an hour ago (clock skew) for `days` days.
pub fn generate(names: &[String], days: u32) -> Result<Bundle, TlsError> {
    let not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let not_after = not_before + time::Duration::days(i64::from(days)) + time::Duration::hours(1);
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.not_before = not_before;
    ca.not_after = not_after;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // A name of its own per CA: during a rotation clients trust the old and the new CA at once,
    // and two CAs of the same name would be confused when a chain is verified.
    let serial = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("portcullis webhook CA {serial}"),
    );
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    leaf.distinguished_name.push(
        DnType::CommonName,
        names.first().map(String::as_str).unwrap_or("portcullis"),
    );
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &Issuer::new(ca, ca_key))?;
    Ok(Bundle {
        ca_cert: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Paths of a certificate directory laid out as `ca.crt`, `tls.crt`, `tls.key` (the names a
/// Kubernetes TLS Secret mounts).
pub struct CertPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertPaths {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.crt"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }
}

/// Writes a bundle into `dir`, the key readable by its owner only.
pub fn write(dir: &Path, bundle: &Bundle) -> Result<CertPaths, TlsError> {
    let paths = CertPaths::in_dir(dir);
    let write = |path: &Path, text: &str, private: bool| {
        let err = |source| TlsError::Write {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        use std::io::Write;
        options
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(err)
    };
    write(&paths.ca, &bundle.ca_cert, false)?;
    write(&paths.cert, &bundle.cert, false)?;
    write(&paths.key, &bundle.key, true)?;
    Ok(paths)
}
