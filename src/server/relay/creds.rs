//! Short-lived TURN credentials in the TURN REST form (draft-uberti-behave-turn-rest, as
//! coturn's `use-auth-secret` reads them): username `EXPIRY:DEVICE_ID` (Unix seconds), password
//! `base64(HMAC-SHA1(secret, username))`. The server mints them per device and sends them in
//! `welcome`; the relay (ours, or a coturn sharing the secret) recomputes the password from the
//! username, so nothing is stored per credential.

use base64::Engine;
use rtc_crypto::{HmacAlgorithm, RTCCryptoProvider};
use std::path::Path;
use std::sync::Arc;

/// One minted credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
    /// Unix seconds after which the relay refuses it.
    pub expires: u64,
}

/// Why a username is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredError {
    #[error("the username is not EXPIRY:DEVICE_ID")]
    Malformed,
    #[error("the credential expired")]
    Expired,
}

/// The shared secret and what it mints.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
    crypto: Arc<dyn RTCCryptoProvider>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Secret {
    /// A secret from its text (as given to coturn's `static-auth-secret`).
    pub fn new(text: &str, crypto: Arc<dyn RTCCryptoProvider>) -> Secret {
        Secret { key: text.as_bytes().to_vec(), crypto }
    }

    /// The secret kept in `dir/relay-secret`, made on first start (32 random bytes, hex).
    pub fn load_or_create(dir: &Path, crypto: Arc<dyn RTCCryptoProvider>) -> std::io::Result<Secret> {
        let path = dir.join("relay-secret");
        match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().len() >= 32 => return Ok(Secret::new(text.trim(), crypto)),
            Ok(_) => tracing::warn!("{} is too short; making a new secret", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(dir)?;
        let bytes: [u8; 32] = rand::random();
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        Ok(Secret::new(&text, crypto))
    }

    /// HMAC-SHA1 of `data` with the secret.
    pub fn mac(&self, data: &[u8]) -> [u8; 20] {
        let mut mac = [0u8; 20];
        let signed = self
            .crypto
            .crypto()
            .new_hmac(HmacAlgorithm::Sha1, &self.key)
            .and_then(|mut m| m.sign(&[data], &mut mac));
        if let Err(e) = signed {
            // Only a broken crypto provider gets here; nothing signed with it then verifies.
            tracing::error!("HMAC-SHA1 failed: {e}");
        }
        mac
    }

    fn password(&self, username: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.mac(username.as_bytes()))
    }

    /// A credential for `device_id` valid until `now + ttl_secs`.
    pub fn mint(&self, device_id: i64, now: u64, ttl_secs: u64) -> Credential {
        let expires = now + ttl_secs;
        let username = format!("{expires}:{device_id}");
        Credential { password: self.password(&username), username, expires }
    }

    /// The device and password of a username, if it has not expired at `now`.
    pub fn check(&self, username: &str, now: u64) -> Result<(i64, String), CredError> {
        let (expiry, device) = username.split_once(':').ok_or(CredError::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| CredError::Malformed)?;
        let device: i64 = device.parse().map_err(|_| CredError::Malformed)?;
        if expiry <= now {
            return Err(CredError::Expired);
        }
        Ok((device, self.password(username)))
    }

    /// The crypto provider (MESSAGE-INTEGRITY needs it too).
    pub fn crypto(&self) -> &Arc<dyn RTCCryptoProvider> {
        &self.crypto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> Secret {
        Secret::new(text, rtc_crypto::default_provider().expect("crypto"))
    }

    #[test]
    fn minted_credentials_check_out_until_they_expire() {
        let s = secret("north");
        let c = s.mint(42, 1_000, 600);
        assert_eq!(c.username, "1600:42");
        assert_eq!(s.check(&c.username, 1_599), Ok((42, c.password.clone())));
        assert_eq!(s.check(&c.username, 1_600), Err(CredError::Expired));
        assert_eq!(s.check("42", 0), Err(CredError::Malformed));
        assert_eq!(s.check("x:42", 0), Err(CredError::Malformed));
        // Another secret makes another password: a credential from elsewhere does not verify.
        assert_ne!(secret("south").check(&c.username, 1_000).map(|(_, p)| p), Ok(c.password));
    }

    /// The TURN REST form as coturn computes it: base64(HMAC-SHA1(secret, username)).
    #[test]
    fn the_password_is_the_rest_form() {
        // HMAC-SHA1 test vector from RFC 2202 (case 2), base64-encoded.
        let s = secret("Jefe");
        assert_eq!(s.password("what do ya want for nothing?"), "7/zfauXrL6LSdBbV8YTfnCWafHk=");
    }

    #[test]
    fn the_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let crypto = rtc_crypto::default_provider().expect("crypto");
        let a = Secret::load_or_create(dir.path(), crypto.clone()).expect("create");
        let b = Secret::load_or_create(dir.path(), crypto).expect("load");
        assert_eq!(a.mint(1, 0, 10), b.mint(1, 0, 10));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("relay-secret")).expect("meta").permissions().mode();
            assert_eq!(mode & 0o077, 0, "only the owner may read the secret");
        }
    }
}
