//! `sidecall-server user …`: administration on the registry database (the server need not
//! run; a running one closes the connections of devices logged out here within 2 s).

use crate::server::store::{SqlStore, Store, StoreError};
use std::path::PathBuf;

/// Where the registry is.
pub struct Db {
    pub url: Option<String>,
    pub data_dir: PathBuf,
}

impl Db {
    async fn open(&self) -> Result<SqlStore, StoreError> {
        match &self.url {
            Some(url) => SqlStore::connect(url).await,
            None => SqlStore::open_sqlite_file(&self.data_dir.join("registry.sqlite3")).await,
        }
    }
}

fn e164(region: &str, number: &str) -> Result<crate::number::E164, String> {
    crate::number::normalize(number, Some(region)).map_err(|e| e.to_string())
}

/// What the server says at start about registration.
pub fn describe_verification(mode: &str) -> &'static str {
    match mode {
        "call" => "registration: the PBX calls each new number; the caller ID's last digits are its code",
        "hook" => "registration: each new number gets a code through the --verify-hook",
        "none" => "registration: open, nothing verified (--verify none: for a closed LAN only)",
        _ => {
            "registration: an administrator approves each number: sidecall-server user pending / user verify NUMBER"
        }
    }
}

pub async fn set_extension(db: &Db, region: &str, number: &str, extension: &str) -> Result<String, String> {
    let extension = Some(extension.trim()).filter(|e| *e != "-" && !e.is_empty());
    if let Some(e) = extension
        && !crate::server::pbx::valid_extension(e)
    {
        return Err(format!("{e:?} is not an extension: use 1 to 32 digits, letters or *#+_-"));
    }
    let number = e164(region, number)?;
    let store = db.open().await.map_err(|e| e.to_string())?;
    let done = match store.user_by_number(number.as_str()).await {
        Ok(Some(user)) => store.set_extension(user.id, extension).await.map(|_| true),
        Ok(None) => Ok(false),
        Err(e) => Err(e),
    };
    store.close().await;
    match done.map_err(|e| e.to_string())? {
        true => Ok(format!("{number}: extension {}", extension.unwrap_or("cleared"))),
        false => Err(format!("no account for {number}")),
    }
}

/// Approves the newest registration waiting for `number`, or marks its account verified.
pub async fn verify(db: &Db, region: &str, number: &str) -> Result<String, String> {
    let number = e164(region, number)?;
    let store = db.open().await.map_err(|e| e.to_string())?;
    let result = async {
        let open = store.open_verifications(Some(number.as_str())).await?;
        if let Some(v) = open.first() {
            return Ok(match store.complete_verification(&v.id, crate::server::verify::CLAIMED).await? {
                Some(done) if done.claimed => format!(
                    "{number}: approved the registration of {:?} (from {}); it now owns the existing account, \
                     whose {} device(s) were logged out",
                    done.user.display_name,
                    v.from_ip,
                    done.revoked.len()
                ),
                Some(done) => format!(
                    "{number}: approved the registration of {:?} (from {}); they can log in now",
                    done.user.display_name, v.from_ip
                ),
                None => format!("{number}: the registration ended meanwhile; nothing changed"),
            });
        }
        match store.user_by_number(number.as_str()).await? {
            Some(u) if u.verified => Ok(format!("{number}: verified already")),
            Some(u) => {
                store.mark_verified(u.id).await?;
                Ok(format!("{number}: the account of {:?} is marked verified", u.display_name))
            }
            None => Ok(String::new()),
        }
    }
    .await;
    store.close().await;
    match result {
        Ok(text) if text.is_empty() => Err(format!("no account and no registration waiting for {number}")),
        Ok(text) => Ok(text),
        Err::<_, StoreError>(e) => Err(e.to_string()),
    }
}

/// The registrations waiting, newest first.
pub async fn pending(db: &Db) -> Result<String, String> {
    let store = db.open().await.map_err(|e| e.to_string())?;
    let open = store.open_verifications(None).await;
    store.close().await;
    let open = open.map_err(|e| e.to_string())?;
    if open.is_empty() {
        return Ok("no registrations waiting".into());
    }
    let now = crate::server::store::now_ms();
    let mut out = format!("{:<18} {:<24} {:<7} {:<16} {:>8}\n", "NUMBER", "NAME", "METHOD", "FROM", "AGE");
    for v in open {
        let age = (now - v.created_at).max(0) / 60_000;
        let name: String = v.display_name.chars().take(24).collect();
        out.push_str(&format!(
            "{:<18} {:<24} {:<7} {:<16} {:>6} m\n",
            v.number, name, v.method, v.from_ip, age
        ));
    }
    out.push_str("approve one with: sidecall-server user verify NUMBER");
    Ok(out)
}
