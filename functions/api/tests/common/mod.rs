//! What the in-process API tests share: a fresh SQLite store, people with
//! API keys, and signed calls answered by [`Api::handle`] directly.
#![allow(dead_code)] // each test crate uses its own part

use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;
use stratus_cloudstack::signature;
use stratus_fn_api::{Api, Request};
use stratus_model::*;
use stratus_store::sqlite::SqliteStore;
use stratus_store::{Backend, Store};

pub struct Who {
    pub key: String,
    pub secret: String,
    pub account: Account,
    pub user: User,
}

/// The box that seals every test person's secret key (one key per test process).
pub fn secrets() -> Arc<SecretBox> {
    static BOX: std::sync::OnceLock<Arc<SecretBox>> = std::sync::OnceLock::new();
    BOX.get_or_init(|| Arc::new(SecretBox::new(&DataKey::generate(), "the tests' key")))
        .clone()
}

/// A store of its own, in a fresh SQLite file.
pub fn store() -> Arc<Store> {
    Arc::new(Store::new(Backend::Sqlite(
        SqliteStore::open_scratch("t_").unwrap(),
    )))
}

/// A domain at `path` (`ROOT`, `ROOT/a`), under `parent`.
pub async fn domain(store: &Store, path: &str, parent: Option<&Domain>) -> Domain {
    let d = Domain {
        id: Domain::id_for(path),
        name: path.rsplit('/').next().unwrap().into(),
        parent_id: parent.map(|p| p.id),
        path: path.into(),
        created: Utc::now(),
    };
    store.create(&d).await.unwrap();
    d
}

/// An account of type `t` in `domain` with one user of the same name and its API key.
pub async fn person(store: &Store, domain: &Domain, name: &str, t: AccountType) -> Who {
    let account = Account {
        id: Account::id_for(domain.id, name),
        name: name.into(),
        domain_id: domain.id,
        account_type: t,
        state: AccountState::Enabled,
        created: Utc::now(),
    };
    let user = User {
        id: User::id_for(domain.id, name),
        account_id: account.id,
        username: name.into(),
        password_hash: String::new(),
        firstname: name.into(),
        lastname: "Test".into(),
        email: format!("{name}@example.com"),
        state: AccountState::Enabled,
        created: Utc::now(),
        login_attempts: 0,
    };
    let key = format!("key-{name}");
    store.create(&account).await.unwrap();
    store.create(&user).await.unwrap();
    store
        .create(&ApiKey::with_secret(
            key.clone(),
            &Secret::new(format!("secret-{name}")),
            user.id,
            account.id,
            Utc::now(),
            &secrets(),
        ))
        .await
        .unwrap();
    Who {
        key,
        secret: format!("secret-{name}"),
        account,
        user,
    }
}

/// The sample zone, under the fixture's id.
pub async fn zone(store: &Store) -> Zone {
    let f = stratus_model::samples::Fixture::default();
    store
        .create(&Zone {
            id: f.zone,
            ..stratus_model::samples::Sample::sample(&f)
        })
        .await
        .unwrap()
        .value
}

/// A signed GET by `who`, answered in JSON.
pub async fn call(api: &Api, who: &Who, params: &[(&str, &str)]) -> (u16, Value) {
    let mut pairs: Vec<(String, String)> = vec![
        ("apiKey".into(), who.key.clone()),
        ("response".into(), "json".into()),
    ];
    pairs.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let query = signature::signed_query(&pairs, &who.secret);
    send(api, "GET", &query, b"").await
}

pub async fn send(api: &Api, method: &str, query: &str, body: &[u8]) -> (u16, Value) {
    let r = api
        .handle(&Request {
            method: method.into(),
            raw_query: query.into(),
            body: body.to_vec(),
            content_type: Some("application/x-www-form-urlencoded".into()),
            cookies: vec![],
            request_id: "test".into(),
        })
        .await;
    if r.content_type.starts_with("text/xml") {
        // CloudStack's default format, for requests that did not ask for JSON.
        return (r.status, xml_error(&r.body));
    }
    let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    (r.status, v)
}

/// An XML error envelope as `{"<key>": {"errorcode": N, "errortext": "..."}}`.
pub fn xml_error(body: &str) -> Value {
    let between = |open: &str, close: &str| {
        let start = body
            .find(open)
            .unwrap_or_else(|| panic!("{open} in {body}"))
            + open.len();
        body[start..][..body[start..].find(close).unwrap()].to_string()
    };
    assert!(
        body.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><"#),
        "{body}"
    );
    let key = between("?><", " ");
    assert!(body.ends_with(&format!("</{key}>")), "{body}");
    let code: u16 = between("<errorcode>", "</errorcode>").parse().unwrap();
    serde_json::json!({ key: { "errorcode": code, "errortext": between("<errortext>", "</errortext>") } })
}

/// The inner object of a one-key envelope.
pub fn inner(v: &Value) -> &Value {
    let m = v.as_object().unwrap();
    assert_eq!(m.len(), 1, "one top-level key: {v}");
    m.values().next().unwrap()
}
