//! Failed logins and API calls counted in the data service, in process:
//! CloudStack's lockout (`incorrect.login.attempts.allowed`: the attempt
//! that reaches it disables the user; `enableUser` brings it back; a
//! success resets the count) and its rate limit (`api.throttling.*`: 429
//! past the limit, served again in the next window). Two `Api` values over
//! one store stand for two API instances; settings are changed through
//! `updateConfiguration`, into a source kept in memory as Consul keeps them.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;
use stratus_contracts::settings::{Pending, ScopeId, Setting, SettingsSource, kv_key};
use stratus_fn_api::Api;
use stratus_model::*;
use stratus_store::Store;

/// Settings kept in memory under their KV keys, shared by every instance.
#[derive(Default)]
struct Memory {
    values: Mutex<BTreeMap<String, String>>,
}

impl SettingsSource for Memory {
    fn value(&self, setting: &'static Setting) -> String {
        self.values
            .lock()
            .unwrap()
            .get(&kv_key(setting.name, None))
            .cloned()
            .unwrap_or_else(|| setting.default.to_string())
    }

    fn update<'a>(
        &'a self,
        setting: &'static Setting,
        at: Option<&'a ScopeId>,
        value: &'a str,
    ) -> Pending<'a, Result<(), String>> {
        self.values
            .lock()
            .unwrap()
            .insert(kv_key(setting.name, at), value.to_string());
        Box::pin(async { Ok(()) })
    }
}

struct World {
    store: Arc<Store>,
    /// Two API instances over one store and one settings source.
    apis: [Api; 2],
    admin: Who,
    root: Domain,
}

async fn world() -> World {
    let store = store();
    let root = domain(&store, "ROOT", None).await;
    let admin = person(&store, &root, "admin", AccountType::Admin).await;
    let settings: Arc<Memory> = Arc::default();
    let apis = [
        Api::new(store.clone(), None, settings.clone(), secrets()),
        Api::new(store.clone(), None, settings, secrets()),
    ];
    World {
        store,
        apis,
        admin,
        root,
    }
}

impl World {
    async fn set(&self, name: &str, value: &str) {
        let (status, body) = call(
            &self.apis[0],
            &self.admin,
            &[
                ("command", "updateConfiguration"),
                ("name", name),
                ("value", value),
            ],
        )
        .await;
        assert_eq!(status, 200, "{name}={value}: {body}");
    }

    /// A user account made by the admin, with a password to log in with.
    async fn user_with_password(&self, name: &str, password: &str) -> Id<User> {
        let (status, body) = call(
            &self.apis[0],
            &self.admin,
            &[
                ("command", "createAccount"),
                ("username", name),
                ("password", password),
                ("email", "u@example.com"),
                ("firstname", "U"),
                ("lastname", "Ser"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        User::id_for(self.root.id, name)
    }

    async fn login(&self, instance: usize, name: &str, password: &str) -> (u16, Value) {
        let body = format!("command=login&username={name}&password={password}&response=json");
        send(&self.apis[instance], "POST", "", body.as_bytes()).await
    }

    async fn user(&self, id: Id<User>) -> User {
        self.store.get(id).await.unwrap().unwrap().value
    }
}

const FAILED: &str = "failed to authenticate user, check if username/password are correct";

fn disabled_text(name: &str) -> String {
    format!(
        "User {name} (or their account) in domain ROOT is disabled/locked. Please contact the administrator."
    )
}

#[tokio::test]
async fn the_attempt_that_reaches_the_limit_disables_the_user_until_enable_user() {
    let w = world().await;
    let alice = w.user_with_password("alice", "right").await;
    // Wrong passwords on both instances: one count in the data service.
    for n in 1..=4u32 {
        let (status, body) = w.login(n as usize % 2, "alice", "wrong").await;
        assert_eq!(status, 531, "{body}");
        assert_eq!(body["loginresponse"]["errortext"], FAILED);
        let u = w.user(alice).await;
        assert_eq!((u.state, u.login_attempts), (AccountState::Enabled, n));
    }
    // The fifth (incorrect.login.attempts.allowed = 5) disables the user.
    let (status, body) = w.login(1, "alice", "wrong").await;
    assert_eq!(status, 531, "{body}");
    assert_eq!(body["loginresponse"]["errortext"], FAILED);
    let u = w.user(alice).await;
    assert_eq!((u.state, u.login_attempts), (AccountState::Disabled, 5));
    let (_, listed) = call(
        &w.apis[0],
        &w.admin,
        &[("command", "listUsers"), ("id", &alice.to_string())],
    )
    .await;
    assert_eq!(listed["listusersresponse"]["user"][0]["state"], "disabled");

    // The right password is refused now, with CloudStack's text, on either instance.
    for instance in [0, 1] {
        let (status, body) = w.login(instance, "alice", "right").await;
        assert_eq!(status, 531, "{body}");
        assert_eq!(body["loginresponse"]["errortext"], disabled_text("alice"));
    }
    // So are her signed requests (keys registered by the admin).
    let (_, keys) = call(
        &w.apis[0],
        &w.admin,
        &[("command", "registerUserKeys"), ("id", &alice.to_string())],
    )
    .await;
    let who = Who {
        key: keys["registeruserkeysresponse"]["userkeys"]["apikey"]
            .as_str()
            .unwrap()
            .into(),
        secret: keys["registeruserkeysresponse"]["userkeys"]["secretkey"]
            .as_str()
            .unwrap()
            .into(),
        account: w
            .store
            .get(Account::id_for(w.root.id, "alice"))
            .await
            .unwrap()
            .unwrap()
            .value,
        user: w.user(alice).await,
    };
    let (status, body) = call(&w.apis[1], &who, &[("command", "listZones")]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["listzonesresponse"]["errortext"],
        "unable to verify user credentials and/or request signature"
    );

    // The admin's enableUser brings her back, her count at zero.
    let (status, body) = call(
        &w.apis[1],
        &w.admin,
        &[("command", "enableUser"), ("id", &alice.to_string())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let shown = &body["enableuserresponse"]["user"];
    assert_eq!(shown["id"], alice.to_string());
    assert_eq!(shown["state"], "enabled");
    assert_eq!(shown["username"], "alice");
    assert_eq!(shown["apikey"], who.key.as_str());
    let u = w.user(alice).await;
    assert_eq!((u.state, u.login_attempts), (AccountState::Enabled, 0));
    let (status, body) = w.login(0, "alice", "right").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["loginresponse"]["username"], "alice");
    let (status, body) = call(&w.apis[0], &who, &[("command", "listZones")]).await;
    assert_eq!(status, 200, "{body}");

    // The root admin's account is internal: never counted, never disabled.
    let admin_pw = w.user(w.admin.user.id).await;
    let mut with_password = w.store.get::<User>(admin_pw.id).await.unwrap().unwrap();
    with_password.value.password_hash = password::hash("adminpw");
    w.store.update(&with_password).await.unwrap();
    for _ in 0..8 {
        let (status, _) = w.login(0, "admin", "wrong").await;
        assert_eq!(status, 531);
    }
    let a = w.user(w.admin.user.id).await;
    assert_eq!((a.state, a.login_attempts), (AccountState::Enabled, 0));
    assert_eq!(w.login(1, "admin", "adminpw").await.0, 200);
}

#[tokio::test]
async fn a_success_resets_the_count_and_the_limit_is_the_setting() {
    let w = world().await;
    let bob = w.user_with_password("bob", "right").await;
    for _ in 0..4 {
        assert_eq!(w.login(0, "bob", "wrong").await.0, 531);
    }
    assert_eq!(w.user(bob).await.login_attempts, 4);
    assert_eq!(w.login(1, "bob", "right").await.0, 200);
    assert_eq!(w.user(bob).await.login_attempts, 0);
    // Four more wrong after the success: still enabled; the fifth disables.
    for _ in 0..4 {
        assert_eq!(w.login(1, "bob", "wrong").await.0, 531);
    }
    assert_eq!(w.user(bob).await.state, AccountState::Enabled);
    assert_eq!(w.login(0, "bob", "wrong").await.0, 531);
    assert_eq!(w.user(bob).await.state, AccountState::Disabled);

    // The limit is read at each login: at 2, the second wrong password disables.
    w.set("incorrect.login.attempts.allowed", "2").await;
    let carol = w.user_with_password("carol", "right").await;
    assert_eq!(w.login(0, "carol", "wrong").await.0, 531);
    assert_eq!(w.user(carol).await.state, AccountState::Enabled);
    assert_eq!(w.login(1, "carol", "wrong").await.0, 531);
    let c = w.user(carol).await;
    assert_eq!((c.state, c.login_attempts), (AccountState::Disabled, 2));
    let (status, body) = w.login(0, "carol", "right").await;
    assert_eq!(status, 531);
    assert_eq!(body["loginresponse"]["errortext"], disabled_text("carol"));
}

fn assert_limited(status: u16, body: &Value, interval_ms: i64) {
    assert_eq!(status, 429, "{body}");
    let inner = &body["listzonesresponse"];
    assert_eq!(inner["errorcode"], 429, "{body}");
    assert_eq!(inner["cserrorcode"], 9999, "{body}");
    assert_eq!(inner["uuidList"], serde_json::json!([]), "{body}");
    let text = inner["errortext"].as_str().unwrap();
    let left: i64 = text
        .strip_prefix("The given user has reached his/her account api limit, please retry after [")
        .and_then(|t| t.strip_suffix("] ms."))
        .unwrap_or_else(|| panic!("CloudStack's text: {text}"))
        .parse()
        .unwrap();
    assert!((0..=interval_ms).contains(&left), "{text}");
}

#[tokio::test]
async fn past_the_limit_a_call_gets_429_and_the_next_interval_is_served() {
    let w = world().await;
    let dave = person(&w.store, &w.root, "dave", AccountType::User).await;
    // Off by default: more than api.throttling.max's default (25) are served.
    for _ in 0..30 {
        let (status, body) = call(&w.apis[0], &dave, &[("command", "listZones")]).await;
        assert_eq!(status, 200, "{body}");
    }
    w.set("api.throttling.max", "3").await;
    w.set("api.throttling.interval", "2").await;
    w.set("api.throttling.enabled", "true").await;
    // Waits for a fresh window: its first call is the one that starts it.
    let started = loop {
        let t = std::time::Instant::now();
        let (status, _) = call(&w.apis[0], &dave, &[("command", "listZones")]).await;
        if status == 200 {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Two more calls fit the window, on either instance; the fourth does not.
    for instance in [1, 0] {
        let (status, body) = call(&w.apis[instance], &dave, &[("command", "listZones")]).await;
        assert_eq!(status, 200, "{body}");
    }
    for instance in [1, 0, 1] {
        let (status, body) = call(&w.apis[instance], &dave, &[("command", "listZones")]).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "too slow to test"
        );
        assert_limited(status, &body, 2000);
    }
    // The root admin is not limited.
    for _ in 0..10 {
        assert_eq!(
            call(&w.apis[0], &w.admin, &[("command", "listZones")])
                .await
                .0,
            200
        );
    }
    // The next window serves again.
    tokio::time::sleep(
        Duration::from_secs(2).saturating_sub(started.elapsed()) + Duration::from_millis(100),
    )
    .await;
    let (status, body) = call(&w.apis[1], &dave, &[("command", "listZones")]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn two_instances_share_each_accounts_count() {
    let w = world().await;
    let erin = person(&w.store, &w.root, "erin", AccountType::User).await;
    let frank = person(&w.store, &w.root, "frank", AccountType::DomainAdmin).await;
    w.set("api.throttling.max", "4").await;
    w.set("api.throttling.interval", "30").await;
    w.set("api.throttling.enabled", "true").await;
    // Four calls over two instances use up erin's account's window ...
    for n in 0..4 {
        let (status, body) = call(&w.apis[n % 2], &erin, &[("command", "listZones")]).await;
        assert_eq!(status, 200, "call {n}: {body}");
    }
    for instance in [0, 1] {
        let (status, body) = call(&w.apis[instance], &erin, &[("command", "listZones")]).await;
        assert_limited(status, &body, 30_000);
    }
    // ... and not frank's (a domain admin is limited too, on his own count).
    for n in 0..4 {
        let (status, body) = call(&w.apis[n % 2], &frank, &[("command", "listZones")]).await;
        assert_eq!(status, 200, "call {n}: {body}");
    }
    let (status, body) = call(&w.apis[1], &frank, &[("command", "listZones")]).await;
    assert_limited(status, &body, 30_000);
}
