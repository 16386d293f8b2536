//! TLS for the server (HTTPS and WSS on one port) and what clients check of it.
//!
//! A server on the internet uses a certificate from a CA (`--tls-cert`/`--tls-key`), which
//! clients verify against the system's roots. A server on a LAN (the app's "host a server")
//! makes a self-signed certificate in its data folder; clients cannot verify that against
//! anything, so they pin its SHA-256 fingerprint the first time the user confirms it, and
//! refuse the server if it ever changes.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate {path}: {source}")]
    Cert { path: String, source: rustls_pki_types::pem::Error },
    #[error("the certificate file {0} holds no certificate")]
    NoCert(String),
    #[error("cannot read the private key {path}: {source}")]
    Key { path: String, source: rustls_pki_types::pem::Error },
    #[error("the certificate and key do not fit together: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// A certificate chain and its key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The crypto every TLS config here uses (ring, as the rest of the project).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's default TLS crypto, for libraries that build their own TLS
/// configs (reqwest, tungstenite). Harmless when called again.
/// The system's certificate authorities.
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!("reading the system's certificates: {e}");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system certificate authorities");
    roots
}

/// TLS for the server's own outgoing requests (a verification hook's URL): the system's
/// authorities vouch.
pub fn system_client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(system_roots())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `AB:CD:…`: the SHA-256 of a certificate (DER), as browsers show it.
pub fn fingerprint(cert: &[u8]) -> String {
    Sha256::digest(cert).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Reads the first certificate of a PEM file.
pub fn read_cert(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    let shown = path.display().to_string();
    CertificateDer::pem_file_iter(path)
        .map_err(|source| TlsError::Cert { path: shown.clone(), source })?
        .next()
        .ok_or_else(|| TlsError::NoCert(shown.clone()))?
        .map_err(|source| TlsError::Cert { path: shown, source })
}

/// The server side: HTTP/1.1 over TLS 1.2 or 1.3 with the given certificate.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let shown = files.cert.display().to_string();
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|source| TlsError::Cert { path: shown.clone(), source })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Cert { path: shown.clone(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(shown));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|source| TlsError::Key { path: files.key.display().to_string(), source })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The self-signed certificate of a server hosted on this computer: `tls/cert.pem` and
/// `tls/key.pem` in `data_dir`, made on first use (the key readable by this user only).
pub fn self_signed(data_dir: &Path) -> Result<TlsFiles, TlsError> {
    let dir = data_dir.join("tls");
    let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let write_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| TlsError::Write { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(write_err(&dir))?;
    let host = hostname();
    let names = vec!["localhost".to_string(), host.clone()];
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("Sidecall server on {host}"));
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_private(&files.key, key.serialize_pem().as_bytes()).map_err(write_err(&files.key))?;
    std::fs::write(&files.cert, cert.pem()).map_err(write_err(&files.cert))?;
    tracing::info!(fingerprint = %fingerprint(cert.der()), "made a self-signed certificate in {}", dir.display());
    Ok(files)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        .unwrap_or_else(|| "sidecall.local".into())
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_made_once_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = self_signed(dir.path()).expect("made");
        let first = fingerprint(&read_cert(&files.cert).expect("cert"));
        assert_eq!(first.len(), 32 * 3 - 1);
        let again = self_signed(dir.path()).expect("kept");
        assert_eq!(fingerprint(&read_cert(&again.cert).expect("cert")), first, "not made anew");
        server_config(&files).expect("usable");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).expect("key").permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is private");
        }
    }

    #[test]
    fn a_broken_certificate_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not a certificate").expect("write");
        let files = TlsFiles { cert: cert.clone(), key: dir.path().join("missing.pem") };
        let e = server_config(&files).expect_err("refused");
        assert!(e.to_string().contains("cert.pem"), "{e}");
    }
}
