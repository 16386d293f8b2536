//! The registry database: users, their settings and their logged-in devices.
//!
//! [`Store`] is what the server needs; [`SqlStore`] implements it on SQLite (a file in the
//! data dir, WAL) or PostgreSQL, chosen by the URL at run time.

use crate::protocol::{Settings, SettingsChange};
use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an account for {0} exists already")]
    Exists(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL \"{0}\": use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("cannot create the database folder {path}: {source}")]
    Folder { path: String, source: std::io::Error },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub number: String,
    pub display_name: String,
    pub password_hash: String,
    pub settings: Settings,
    /// The user's phone on the server's PBX (click-to-call).
    pub extension: Option<String>,
    /// The number was proven to be this user's.
    pub verified: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: i64,
    pub user_id: i64,
    pub name: Option<String>,
    pub reported_ip: Option<IpAddr>,
    pub observed_ip: Option<IpAddr>,
    /// Logged out by the server, and why (its number was claimed again).
    pub revoked: Option<String>,
}

/// A registration waiting for its code, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationRecord {
    pub id: String,
    pub number: String,
    pub display_name: String,
    pub password_hash: String,
    /// SHA-256 (hex) of `id:code`; empty with the admin method.
    pub code_hash: String,
    /// `call`, `hook` or `admin`.
    pub method: String,
    pub attempts: i64,
    pub from_ip: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A code try on a verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Open: this is try number `record.attempts` (counted already).
    Open(VerificationRecord),
    /// Nothing with that id (or pruned).
    Missing,
    /// Done already: by this registration (`approved`: 1 created, 2 claimed) or replaced by
    /// another one for the number (`approved` 0).
    Used {
        approved: i64,
        number: String,
        display_name: String,
    },
    Expired,
    /// Every try was used.
    NoTries,
}

/// A verification that succeeded: the account now bound to the number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completed {
    pub user: UserRecord,
    /// The number had an account, now this registrant's.
    pub claimed: bool,
    /// Its devices, logged out.
    pub revoked: Vec<i64>,
}

/// Everything the server keeps on disk.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_user(
        &self,
        number: &str,
        display_name: &str,
        password_hash: &str,
    ) -> Result<UserRecord, StoreError>;
    async fn user_by_number(&self, number: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn user_count(&self) -> Result<i64, StoreError>;
    /// Adds a logged-in device holding a token with this hash.
    async fn create_device(
        &self,
        user_id: i64,
        token_hash: &str,
        name: Option<&str>,
        reported_ip: Option<IpAddr>,
        observed_ip: IpAddr,
    ) -> Result<i64, StoreError>;
    /// The device holding a token with this hash, and its user.
    async fn device_by_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<(DeviceRecord, UserRecord)>, StoreError>;
    /// Records the addresses a device connected with.
    async fn device_seen(
        &self,
        device_id: i64,
        reported_ip: Option<IpAddr>,
        observed_ip: IpAddr,
    ) -> Result<(), StoreError>;
    async fn delete_device(&self, device_id: i64) -> Result<(), StoreError>;
    /// Whether a device of this user last connected from this address.
    async fn known_address(&self, user_id: i64, ip: IpAddr) -> Result<bool, StoreError>;
    async fn update_settings(&self, user_id: i64, change: SettingsChange) -> Result<Settings, StoreError>;
    /// Sets (or clears) a user's extension.
    async fn set_extension(&self, user_id: i64, extension: Option<&str>) -> Result<(), StoreError>;
    /// The numbers (E.164) a user blocked, sorted.
    async fn blocked(&self, user_id: i64) -> Result<Vec<String>, StoreError>;
    /// Replaces a user's block list.
    async fn set_blocked(&self, user_id: i64, numbers: &[String]) -> Result<(), StoreError>;
    /// Records a registration waiting for its code.
    async fn create_verification(&self, v: &VerificationRecord) -> Result<(), StoreError>;
    /// Counts one code try on verification `id` (at most `max_tries`).
    async fn verification_attempt(&self, id: &str, max_tries: i64) -> Result<Attempt, StoreError>;
    /// Binds the number to verification `id`'s registrant (a new account, or the existing
    /// one claimed: new password and name, devices logged out with `reason`, block list
    /// cleared), marks the user verified and closes every other open verification of the
    /// number. `None`: it was used or had expired meanwhile.
    async fn complete_verification(&self, id: &str, reason: &str) -> Result<Option<Completed>, StoreError>;
    /// Open verifications (newest first), of one number or all.
    async fn open_verifications(&self, number: Option<&str>) -> Result<Vec<VerificationRecord>, StoreError>;
    /// Marks an existing user's number as proven.
    async fn mark_verified(&self, user_id: i64) -> Result<(), StoreError>;
    /// Devices logged out by the server at or after `since_ms` (Unix ms): (device, why).
    async fn revoked_since(&self, since_ms: i64) -> Result<Vec<(i64, String)>, StoreError>;
    /// Forgets verifications that ended more than a day ago.
    async fn prune_verifications(&self) -> Result<u64, StoreError>;
    /// Verifications of a number created at or after `since_ms` (Unix ms): the per-number
    /// limit, shared by every server process on the database.
    async fn verifications_since(&self, number: &str, since_ms: i64) -> Result<i64, StoreError>;
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// [`Store`] on SQLite or PostgreSQL through sqlx's run-time driver choice.
#[derive(Clone, Debug)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
}

static MIGRATE_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static MIGRATE_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl SqlStore {
    /// Opens (creating if needed) the SQLite database file at `path`.
    pub async fn open_sqlite_file(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Folder { path: dir.display().to_string(), source })?;
        }
        Self::connect(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    /// Connects to `sqlite://…` or `postgres://…` and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            options = options.max_connections(4).after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
                    // With WAL, NORMAL survives any process crash; only a power loss can drop
                    // the last commits. It saves an fsync on every write (logins, last seen).
                    sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(8);
        }
        let pool = options.connect(url).await?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
            MIGRATE_SQLITE.run(&pool).await?;
        } else {
            MIGRATE_POSTGRES.run(&pool).await?;
        }
        Ok(SqlStore { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn user_from_row(row: &AnyRow, offset: usize) -> Result<UserRecord, sqlx::Error> {
    Ok(UserRecord {
        id: row.try_get(offset)?,
        number: row.try_get(offset + 1)?,
        display_name: row.try_get(offset + 2)?,
        password_hash: row.try_get(offset + 3)?,
        settings: Settings {
            accepting_sessions: row.try_get::<i64, _>(offset + 4)? != 0,
            do_not_disturb: row.try_get::<i64, _>(offset + 5)? != 0,
            hide_address: row.try_get::<i64, _>(offset + 6)? != 0,
        },
        extension: row.try_get(offset + 7)?,
        verified: row.try_get::<Option<i64>, _>(offset + 8)?.is_some(),
    })
}

const USER_COLUMNS: &str = "u.id, u.number, u.display_name, u.password_hash, u.accepting_sessions, u.do_not_disturb, u.hide_address, \
     u.extension, u.verified_at";

const VERIFICATION_COLUMNS: &str =
    "id, number, display_name, password_hash, code_hash, method, attempts, from_ip, created_at, expires_at";

fn verification_from_row(row: &AnyRow) -> Result<VerificationRecord, sqlx::Error> {
    Ok(VerificationRecord {
        id: row.try_get(0)?,
        number: row.try_get(1)?,
        display_name: row.try_get(2)?,
        password_hash: row.try_get(3)?,
        code_hash: row.try_get(4)?,
        method: row.try_get(5)?,
        attempts: row.try_get(6)?,
        from_ip: row.try_get(7)?,
        created_at: row.try_get(8)?,
        expires_at: row.try_get(9)?,
    })
}

fn ip_from_text(text: Option<String>) -> Option<IpAddr> {
    text.and_then(|t| t.parse().ok())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.is_unique_violation(),
        _ => false,
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn create_user(
        &self,
        number: &str,
        display_name: &str,
        password_hash: &str,
    ) -> Result<UserRecord, StoreError> {
        let row = sqlx::query(
            "INSERT INTO users (number, display_name, password_hash, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(number)
        .bind(display_name)
        .bind(password_hash)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) { StoreError::Exists(number.to_string()) } else { e.into() }
        })?;
        Ok(UserRecord {
            id: row.try_get(0)?,
            number: number.to_string(),
            display_name: display_name.to_string(),
            password_hash: password_hash.to_string(),
            settings: Settings::default(),
            extension: None,
            verified: false,
        })
    }

    async fn user_by_number(&self, number: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.number = $1");
        let row = sqlx::query(&sql).bind(number).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => Some(user_from_row(&r, 0)?),
            None => None,
        })
    }

    async fn user_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM users").fetch_one(&self.pool).await?;
        Ok(row.try_get(0)?)
    }

    async fn create_device(
        &self,
        user_id: i64,
        token_hash: &str,
        name: Option<&str>,
        reported_ip: Option<IpAddr>,
        observed_ip: IpAddr,
    ) -> Result<i64, StoreError> {
        let now = now_ms();
        let row = sqlx::query(
            "INSERT INTO devices (user_id, token_hash, name, reported_ip, observed_ip, created_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(user_id)
        .bind(token_hash)
        .bind(name)
        .bind(reported_ip.map(|ip| ip.to_string()))
        .bind(observed_ip.to_string())
        .bind(now)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    async fn device_by_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<(DeviceRecord, UserRecord)>, StoreError> {
        let sql = format!(
            "SELECT d.id, d.user_id, d.name, d.reported_ip, d.observed_ip, d.revoked, {USER_COLUMNS} \
             FROM devices d JOIN users u ON u.id = d.user_id WHERE d.token_hash = $1"
        );
        let Some(row) = sqlx::query(&sql).bind(token_hash).fetch_optional(&self.pool).await? else {
            return Ok(None);
        };
        let device = DeviceRecord {
            id: row.try_get(0)?,
            user_id: row.try_get(1)?,
            name: row.try_get(2)?,
            reported_ip: ip_from_text(row.try_get(3)?),
            observed_ip: ip_from_text(row.try_get(4)?),
            revoked: row.try_get(5)?,
        };
        Ok(Some((device, user_from_row(&row, 6)?)))
    }

    async fn device_seen(
        &self,
        device_id: i64,
        reported_ip: Option<IpAddr>,
        observed_ip: IpAddr,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE devices SET reported_ip = COALESCE($1, reported_ip), observed_ip = $2, \
             last_seen_at = $3 WHERE id = $4",
        )
        .bind(reported_ip.map(|ip| ip.to_string()))
        .bind(observed_ip.to_string())
        .bind(now_ms())
        .bind(device_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_extension(&self, user_id: i64, extension: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET extension = $1 WHERE id = $2")
            .bind(extension)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn known_address(&self, user_id: i64, ip: IpAddr) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM devices WHERE user_id = $1 AND observed_ip = $2 AND revoked IS NULL",
        )
        .bind(user_id)
        .bind(ip.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    async fn delete_device(&self, device_id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM devices WHERE id = $1").bind(device_id).execute(&self.pool).await?;
        Ok(())
    }

    async fn update_settings(&self, user_id: i64, change: SettingsChange) -> Result<Settings, StoreError> {
        let row = sqlx::query(
            "UPDATE users SET accepting_sessions = COALESCE($1, accepting_sessions), \
             do_not_disturb = COALESCE($2, do_not_disturb), hide_address = COALESCE($3, hide_address) \
             WHERE id = $4 RETURNING accepting_sessions, do_not_disturb, hide_address",
        )
        .bind(change.accepting_sessions.map(i64::from))
        .bind(change.do_not_disturb.map(i64::from))
        .bind(change.hide_address.map(i64::from))
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Settings {
            accepting_sessions: row.try_get::<i64, _>(0)? != 0,
            do_not_disturb: row.try_get::<i64, _>(1)? != 0,
            hide_address: row.try_get::<i64, _>(2)? != 0,
        })
    }

    async fn blocked(&self, user_id: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT number FROM blocked WHERE user_id = $1 ORDER BY number")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| r.try_get::<String, _>(0).map_err(StoreError::from)).collect()
    }

    async fn set_blocked(&self, user_id: i64, numbers: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM blocked WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        for n in numbers {
            sqlx::query("INSERT INTO blocked (user_id, number) VALUES ($1, $2)")
                .bind(user_id)
                .bind(n)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_verification(&self, v: &VerificationRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO verifications (id, number, display_name, password_hash, code_hash, method, \
             attempts, from_ip, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9)",
        )
        .bind(&v.id)
        .bind(&v.number)
        .bind(&v.display_name)
        .bind(&v.password_hash)
        .bind(&v.code_hash)
        .bind(&v.method)
        .bind(&v.from_ip)
        .bind(v.created_at)
        .bind(v.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn verification_attempt(&self, id: &str, max_tries: i64) -> Result<Attempt, StoreError> {
        let now = now_ms();
        // One statement, so that two tries at once (on two servers) both count.
        let sql = format!(
            "UPDATE verifications SET attempts = attempts + 1 WHERE id = $1 AND used_at IS NULL \
             AND expires_at > $2 AND attempts < $3 RETURNING {VERIFICATION_COLUMNS}"
        );
        let row = sqlx::query(&sql).bind(id).bind(now).bind(max_tries).fetch_optional(&self.pool).await?;
        if let Some(row) = row {
            return Ok(Attempt::Open(verification_from_row(&row)?));
        }
        let row = sqlx::query(
            "SELECT used_at, approved, number, display_name, expires_at, attempts FROM verifications WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(Attempt::Missing) };
        let used: Option<i64> = row.try_get(0)?;
        Ok(if used.is_some() {
            Attempt::Used {
                approved: row.try_get(1)?,
                number: row.try_get(2)?,
                display_name: row.try_get(3)?,
            }
        } else if row.try_get::<i64, _>(4)? <= now {
            Attempt::Expired
        } else {
            Attempt::NoTries
        })
    }

    async fn complete_verification(&self, id: &str, reason: &str) -> Result<Option<Completed>, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // Claimed inside the transaction: a code used twice at once completes once.
        let sql = format!(
            "UPDATE verifications SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND expires_at > $1 \
             RETURNING {VERIFICATION_COLUMNS}"
        );
        let Some(row) = sqlx::query(&sql).bind(now).bind(id).fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let v = verification_from_row(&row)?;
        let existing = sqlx::query("SELECT id FROM users WHERE number = $1")
            .bind(&v.number)
            .fetch_optional(&mut *tx)
            .await?;
        let (user_id, claimed, revoked) = match existing {
            Some(row) => {
                let user_id: i64 = row.try_get(0)?;
                sqlx::query(
                    "UPDATE users SET display_name = $1, password_hash = $2, verified_at = $3 WHERE id = $4",
                )
                .bind(&v.display_name)
                .bind(&v.password_hash)
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
                // The number's new owner does not inherit whom the old one blocked.
                sqlx::query("DELETE FROM blocked WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
                let rows = sqlx::query(
                    "UPDATE devices SET revoked = $1, revoked_at = $2 WHERE user_id = $3 AND revoked IS NULL \
                     RETURNING id",
                )
                .bind(reason)
                .bind(now)
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
                let revoked = rows.iter().map(|r| r.try_get::<i64, _>(0)).collect::<Result<Vec<_>, _>>()?;
                (user_id, true, revoked)
            }
            None => {
                let row = sqlx::query(
                    "INSERT INTO users (number, display_name, password_hash, created_at, verified_at) \
                     VALUES ($1, $2, $3, $4, $4) RETURNING id",
                )
                .bind(&v.number)
                .bind(&v.display_name)
                .bind(&v.password_hash)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                (row.try_get(0)?, false, Vec::new())
            }
        };
        sqlx::query("UPDATE verifications SET approved = $1 WHERE id = $2")
            .bind(if claimed { 2i64 } else { 1 })
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Other registrations of the number waiting for a code are void now.
        sqlx::query("UPDATE verifications SET used_at = $1 WHERE number = $2 AND used_at IS NULL")
            .bind(now)
            .bind(&v.number)
            .execute(&mut *tx)
            .await?;
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1");
        let user = user_from_row(&sqlx::query(&sql).bind(user_id).fetch_one(&mut *tx).await?, 0)?;
        tx.commit().await?;
        Ok(Some(Completed { user, claimed, revoked }))
    }

    async fn open_verifications(&self, number: Option<&str>) -> Result<Vec<VerificationRecord>, StoreError> {
        let sql = format!(
            "SELECT {VERIFICATION_COLUMNS} FROM verifications WHERE used_at IS NULL AND expires_at > $1 \
             AND ($2 = '' OR number = $2) ORDER BY created_at DESC, id"
        );
        let rows = sqlx::query(&sql).bind(now_ms()).bind(number.unwrap_or("")).fetch_all(&self.pool).await?;
        rows.iter().map(|r| verification_from_row(r).map_err(StoreError::from)).collect()
    }

    async fn mark_verified(&self, user_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET verified_at = COALESCE(verified_at, $1) WHERE id = $2")
            .bind(now_ms())
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn revoked_since(&self, since_ms: i64) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, revoked FROM devices WHERE revoked_at >= $1")
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<Option<String>, _>(1)?.unwrap_or_default())))
            .collect()
    }

    async fn prune_verifications(&self) -> Result<u64, StoreError> {
        let day_ago = now_ms() - 24 * 3600 * 1000;
        let done = sqlx::query(
            "DELETE FROM verifications WHERE expires_at < $1 OR (used_at IS NOT NULL AND used_at < $1)",
        )
        .bind(day_ago)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn verifications_since(&self, number: &str, since_ms: i64) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM verifications WHERE number = $1 AND created_at >= $2")
            .bind(number)
            .bind(since_ms)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }
}
