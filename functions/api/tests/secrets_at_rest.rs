//! Secret keys at rest, in process (issue 9, item 4): `registerUserKeys`
//! leaves no secret key in the database file or its WAL; keys made before a
//! restart (a new store handle, a new box from the same key file) verify
//! after it; another key file opens none of them, and says why.

mod common;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use stratus_contracts::config::SecretKeySource;
use stratus_contracts::settings::Defaults;
use stratus_fn_api::Api;
use stratus_model::*;
use stratus_store::sqlite::SqliteStore;
use stratus_store::{Backend, Store};

fn open(db: &std::path::Path) -> Arc<Store> {
    Arc::new(Store::new(Backend::Sqlite(
        SqliteStore::open(db, "t_").unwrap(),
    )))
}

#[tokio::test]
async fn registered_keys_are_sealed_on_disk_and_verify_after_a_restart() {
    let home = std::env::temp_dir().join(format!("api-at-rest-{}", uuid::Uuid::new_v4().simple()));
    let db = home.join("stratus.db");
    let source = SecretKeySource::File(home.join("secret.key"));
    let store = open(&db);
    let root = domain(&store, "ROOT", None).await;
    let admin = person(&store, &root, "admin", AccountType::Admin).await;
    let alice = person(&store, &root, "alice", AccountType::User).await;
    // The test people were sealed under the tests' key; the platform's own
    // key file exists once keys are made, so start from a store without keys.
    for k in store
        .walk::<ApiKey>(&stratus_store::Index::All)
        .await
        .unwrap()
    {
        store.delete(&k).await.unwrap();
    }
    let secrets = Arc::new(store.secret_box(&source).await.unwrap());
    // The admin again, under the platform's key.
    store
        .create(&ApiKey::with_secret(
            admin.key.clone(),
            &Secret::new(admin.secret.clone()),
            admin.user.id,
            admin.account.id,
            chrono::Utc::now(),
            &secrets,
        ))
        .await
        .unwrap();
    let api = Api::new(store.clone(), None, Arc::new(Defaults::default()), secrets);
    let (status, keys) = call(
        &api,
        &admin,
        &[
            ("command", "registerUserKeys"),
            ("id", &alice.user.id.to_string()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{keys}");
    let k = &keys["registeruserkeysresponse"]["userkeys"];
    let new_alice = Who {
        key: k["apikey"].as_str().unwrap().into(),
        secret: k["secretkey"].as_str().unwrap().into(),
        ..alice
    };
    assert_eq!(
        call(&api, &new_alice, &[("command", "listZones")]).await.0,
        200
    );
    // (1) Not in the raw database or its WAL, in any encoding.
    assert!(
        std::fs::metadata(home.join("stratus.db-wal"))
            .unwrap()
            .len()
            > 0
    );
    assert_eq!(
        stratus_secrets::traces::in_sqlite_files(&db, &new_alice.secret),
        Vec::<String>::new()
    );
    drop(api);
    drop(store);

    // (2) A restart: a new store handle, a new box from the same key file.
    let store = open(&db);
    let secrets = Arc::new(store.secret_box(&source).await.unwrap());
    let api = Api::new(store.clone(), None, Arc::new(Defaults::default()), secrets);
    assert_eq!(
        call(&api, &new_alice, &[("command", "listZones")]).await.0,
        200
    );
    let (status, mine) = call(
        &api,
        &new_alice,
        &[
            ("command", "getUserKeys"),
            ("id", &new_alice.user.id.to_string()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(
        mine["getuserkeysresponse"]["userkeys"]["secretkey"],
        new_alice.secret.as_str()
    );
    drop(api);

    // (5) Another key file: a clear error for the operator, 401 for the caller, no panic.
    let other = SecretKeySource::File(home.join("other.key"));
    let e = store.secret_box(&other).await.unwrap_err().to_string();
    assert!(
        e.contains("other.key: missing, and the store already holds secrets"),
        "{e}"
    );
    stratus_secrets::private::write(
        &home.join("other.key"),
        format!("{}\n", STANDARD.encode([9u8; 32])).as_bytes(),
    )
    .unwrap();
    let wrong = Arc::new(store.secret_box(&other).await.unwrap());
    let api = Api::new(store.clone(), None, Arc::new(Defaults::default()), wrong);
    let (status, body) = call(&api, &new_alice, &[("command", "listZones")]).await;
    assert_eq!(status, 401, "{body}");
    let _ = std::fs::remove_dir_all(home);
}
