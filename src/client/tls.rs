//! What a client trusts of a server's certificate: the system's certificate authorities, or
//! — for a self-signed server on a LAN — exactly the certificate whose fingerprint the user
//! confirmed on first login (and nothing else afterwards).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// Which certificates a client accepts from its server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Trust {
    /// Certificates the system's authorities vouch for (for the server's name).
    #[default]
    System,
    /// Only the certificate with this SHA-256 fingerprint (`AB:CD:…`).
    Pinned(String),
}

impl Trust {
    pub fn from_pin(pin: Option<&str>) -> Trust {
        match pin {
            Some(p) if !p.trim().is_empty() => Trust::Pinned(normalize_fingerprint(p)),
            _ => Trust::System,
        }
    }
}

/// `ab cd…`, `abcd…` or `AB:CD:…` → `AB:CD:…`.
pub fn normalize_fingerprint(input: &str) -> String {
    let hex: String =
        input.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_uppercase();
    hex.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(":")
}

/// The handshake-signature part of a certificate verifier: the server must hold the key of
/// the certificate it presented (whatever decided to accept that certificate).
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider.signature_verification_algorithms.supported_schemes()
        }
    };
}

/// Accepts exactly one certificate, by fingerprint, and checks the server holds its key.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// The certificate differs from the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("the server's certificate changed: expected {expected}, got {presented}")]
pub struct Changed {
    pub expected: String,
    pub presented: String,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = crate::tls::fingerprint(end_entity);
        if presented == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            let changed = Changed { expected: self.fingerprint.clone(), presented };
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(changed),
            ))))
        }
    }

    signature_checks!();
}

/// The TLS client configuration for a server trusted this way.
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = crate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut cfg = match trust {
        Trust::System => builder.with_root_certificates(crate::tls::system_roots()).with_no_client_auth(),
        Trust::Pinned(fingerprint) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { fingerprint: fingerprint.clone(), provider }))
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// What a server presented in a TLS handshake made only to look at its certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presented {
    pub fingerprint: String,
    /// The system's authorities vouch for it (for this host name).
    pub trusted: bool,
}

/// Records the certificate, and whether the system's authorities vouch for it; accepts
/// anything, so use it only to look (the probe sends no request).
#[derive(Debug)]
struct Recorder {
    system: Arc<rustls::client::WebPkiServerVerifier>,
    seen: parking_lot::Mutex<Option<Presented>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let trusted =
            self.system.verify_server_cert(end_entity, intermediates, server_name, ocsp, now).is_ok();
        *self.seen.lock() = Some(Presented { fingerprint: crate::tls::fingerprint(end_entity), trusted });
        Ok(ServerCertVerified::assertion())
    }

    signature_checks!();
}

/// Looks at the certificate of the `https://` server `base`: a TLS handshake, then nothing.
pub async fn probe(base: &str) -> Result<Presented, String> {
    let url = url::Url::parse(base).map_err(|e| e.to_string())?;
    let host = url.host_str().ok_or("no host")?.trim_matches(|c| c == '[' || c == ']').to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let provider = crate::tls::provider();
    let system = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(crate::tls::system_roots()),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let recorder =
        Arc::new(Recorder { system, seen: parking_lot::Mutex::new(None), provider: provider.clone() });
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.map_err(|e| e.to_string())
    };
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), connect).await;
    let seen = recorder.seen.lock().clone();
    match (seen, result) {
        (Some(p), _) => Ok(p),
        (None, Ok(Err(e))) => Err(e),
        (None, Ok(Ok(_))) => Err("the server presented no certificate".into()),
        (None, Err(_)) => Err("no TLS answer in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_read_in_any_spelling() {
        assert_eq!(normalize_fingerprint("ab cd ef"), "AB:CD:EF");
        assert_eq!(normalize_fingerprint("AB:CD:EF"), "AB:CD:EF");
        assert_eq!(Trust::from_pin(Some("abcd")), Trust::Pinned("AB:CD".into()));
        assert_eq!(Trust::from_pin(Some("  ")), Trust::System);
    }
}
