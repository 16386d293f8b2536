//! The registry store on SQLite and on PostgreSQL, through the same trait and the same tests.

use sidecall::server::store::{SqlStore, Store, StoreError};

async fn exercise(store: &dyn Store) {
    let alice = store.create_user("+4930123456", "Alice", "$argon2id$fake").await.expect("create");
    assert!(matches!(
        store.create_user("+4930123456", "Again", "h").await,
        Err(StoreError::Exists(n)) if n == "+4930123456"
    ));
    let found = store.user_by_number("+4930123456").await.expect("read").expect("found");
    assert_eq!(found, alice);
    assert!(found.settings.accepting_sessions && !found.settings.do_not_disturb);
    assert_eq!(store.user_by_number("+4940123456").await.expect("read"), None);

    let lan = "192.168.1.5".parse().expect("ip");
    let public = "198.51.100.1".parse().expect("ip");
    let dev = store.create_device(alice.id, "hash-1", Some("desk"), Some(lan), public).await.expect("device");
    let (d, u) = store.device_by_token("hash-1").await.expect("read").expect("device found");
    assert_eq!((d.id, d.user_id, d.reported_ip, d.observed_ip), (dev, alice.id, Some(lan), Some(public)));
    assert_eq!(u.number, alice.number);
    let moved = "10.1.2.3".parse().expect("ip");
    store.device_seen(dev, None, moved).await.expect("seen");
    let (d, _) = store.device_by_token("hash-1").await.expect("read").expect("found");
    assert_eq!(
        (d.reported_ip, d.observed_ip),
        (Some(lan), Some(moved)),
        "a missing report keeps the old one"
    );

    let change = |accepting_sessions, do_not_disturb, hide_address| sidecall::protocol::SettingsChange {
        accepting_sessions,
        do_not_disturb,
        hide_address,
    };
    let s = store.update_settings(alice.id, change(Some(false), None, None)).await.expect("update");
    assert!(!s.accepting_sessions && !s.do_not_disturb && !s.hide_address);
    let s = store.update_settings(alice.id, change(None, Some(true), None)).await.expect("update");
    assert!(!s.accepting_sessions && s.do_not_disturb && !s.hide_address);
    let s = store.update_settings(alice.id, change(None, None, Some(true))).await.expect("update");
    assert!(!s.accepting_sessions && s.do_not_disturb && s.hide_address, "hide my address is kept");
    let again = store.user_by_number("+4930123456").await.expect("read").expect("found");
    assert_eq!(again.settings, s);

    store.delete_device(dev).await.expect("delete");
    assert!(store.device_by_token("hash-1").await.expect("read").is_none());
    assert_eq!(store.user_count().await.expect("count"), 1);
}

#[tokio::test]
async fn sqlite_store_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested").join("registry.sqlite3");
    let store = SqlStore::open_sqlite_file(&path).await.expect("open");
    exercise(&store).await;
    store.close().await;
    let reopened = SqlStore::open_sqlite_file(&path).await.expect("reopen");
    assert_eq!(reopened.user_count().await.expect("count"), 1);
    let journal: String = {
        use sqlx::Row;
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.expect("raw");
        sqlx::query("PRAGMA journal_mode").fetch_one(&pool).await.expect("pragma").get(0)
    };
    assert_eq!(journal.to_lowercase(), "wal");
}

#[tokio::test]
async fn unknown_database_urls_are_refused() {
    assert!(matches!(SqlStore::connect("mysql://x").await, Err(StoreError::UnsupportedUrl(_))));
}

/// Runs against the PostgreSQL of the development and CI machines. Set
/// SIDECALL_TEST_POSTGRES=skip to skip it where there is none.
#[tokio::test]
async fn postgres_store() {
    let base = std::env::var("SIDECALL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    if base == "skip" {
        eprintln!("postgres_store skipped: SIDECALL_TEST_POSTGRES=skip");
        return;
    }
    let admin = sqlx::PgPool::connect(&format!("{base}/test")).await.expect(
        "PostgreSQL at 127.0.0.1:5432 (database test); set SIDECALL_TEST_POSTGRES=skip where there is none",
    );
    let db = format!("sidecall_test_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&admin).await.expect("drop");
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&admin).await.expect("create db");
    let store = SqlStore::connect(&format!("{base}/{db}")).await.expect("connect");
    exercise(&store).await;
    store.close().await;
    let reopened =
        SqlStore::connect(&format!("{base}/{db}")).await.expect("reconnect, migrations idempotent");
    assert_eq!(reopened.user_count().await.expect("count"), 1);
    reopened.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&admin).await.expect("drop");
}
