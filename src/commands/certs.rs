//! The `certs` command: a CA and a serving certificate for the Service kube-apiserver calls,
//! with every name the apiserver may use for it, and the caBundle for the webhook
//! configurations printed on stdout.

use crate::cli::CertsArgs;
use crate::tls::{self, TlsError};

/// The names kube-apiserver may use for a Service: it calls `NAME.NS.svc`.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

pub fn run(args: &CertsArgs) -> Result<(), TlsError> {
    let bundle = tls::generate(&service_names(&args.service, &args.namespace), args.days)?;
    let paths = tls::write(&args.out, &bundle)?;
    eprintln!(
        "wrote {}, {} and {} (valid {} days)",
        paths.ca.display(),
        paths.cert.display(),
        paths.key.display(),
        args.days
    );
    eprintln!("caBundle for the webhook configurations:");
    println!(
        "{}",
        base64_simd::STANDARD.encode_to_string(&bundle.ca_cert)
    );
    Ok(())
}
