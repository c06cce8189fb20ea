//! Issue 9.5 end to end, with the real runner, its Consul stand-in and `cs`:
//! wrong passwords disable a user at `incorrect.login.attempts.allowed`
//! (the right password is refused too, and so are the user's keys) until the
//! admin's `cs enableUser`; with `api.throttling.*` set by `cs
//! updateConfiguration`, the call past the limit gets HTTP 429 in
//! CloudStack's envelope, and the next window is served.

use std::time::{Duration, Instant};

use serde_json::Value;
use stratus_tests::TestEnv;
use stratus_tests::cloudstack::{ApiUser, Platform};

/// `login` through the gateway: the status and the JSON body.
async fn login(p: &Platform, username: &str, password: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(&p.endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "command=login&username={username}&password={password}&domain=%2F&response=json"
        ))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

const FAILED: &str = "failed to authenticate user, check if username/password are correct";
const LIMIT: &str = "The given user has reached his/her account api limit, please retry after [";

/// `listZones` signed with `who`'s keys.
async fn zones(p: &Platform, who: &ApiUser) -> (u16, Value) {
    p.get_as(&who.key, &who.secret, &[("command", "listZones")])
        .await
}

fn user_state(p: &Platform, id: &str) -> String {
    let listed = p.cs(&["listUsers", &format!("id={id}")]).unwrap();
    listed["user"][0]["state"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_passwords_disable_a_user_until_enable_user() {
    let env = TestEnv::new("lockout");
    let p = Platform::start(&env);
    // createAccount with password "pa ss~word", keys registered.
    let mallory = p.create_user("mallory");
    for n in 1..=5 {
        let (status, body) = login(&p, "mallory", "wrong").await;
        assert_eq!(status, 531, "attempt {n}: {body}");
        assert_eq!(body["loginresponse"]["errortext"], FAILED);
        let expected = if n < 5 { "enabled" } else { "disabled" };
        assert_eq!(user_state(&p, &mallory.user_id), expected, "after {n}");
    }
    // The right password is refused now, and so are her keys.
    let (status, body) = login(&p, "mallory", "pa%20ss~word").await;
    assert_eq!(status, 531, "{body}");
    assert_eq!(
        body["loginresponse"]["errortext"],
        "User mallory (or their account) in domain ROOT is disabled/locked. Please contact the administrator."
    );
    let refused = p.cs_with(&mallory.ini, &["listZones"]).unwrap_err();
    assert!(
        refused.contains("unable to verify user credentials and/or request signature"),
        "{refused}"
    );

    // The admin brings her back with cs; the right password logs in.
    let enabled = p
        .cs(&["enableUser", &format!("id={}", mallory.user_id)])
        .unwrap();
    assert_eq!(enabled["user"]["state"], "enabled", "{enabled}");
    assert_eq!(enabled["user"]["id"], mallory.user_id.as_str());
    let (status, body) = login(&p, "mallory", "pa%20ss~word").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["loginresponse"]["username"], "mallory");
    p.cs_with(&mallory.ini, &["listZones"]).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_throttling_limit_a_call_gets_429_and_the_next_window_is_served() {
    let env = TestEnv::new("throttling");
    let p = Platform::start(&env);
    let trudy = p.create_user("trudy");
    for (name, value) in [
        ("api.throttling.max", "3"),
        ("api.throttling.interval", "2"),
        ("api.throttling.enabled", "true"),
    ] {
        let updated = p
            .cs(&[
                "updateConfiguration",
                &format!("name={name}"),
                &format!("value={value}"),
            ])
            .unwrap();
        assert_eq!(updated["configuration"]["value"], value, "{updated}");
    }
    // Every API instance re-reads its settings within a few seconds.
    let started = Instant::now();
    let body = loop {
        let (status, body) = zones(&p, &trudy).await;
        if status == 429 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "throttling never took effect"
        );
    };
    let inner = &body["listzonesresponse"];
    assert_eq!(inner["errorcode"], 429, "{body}");
    assert_eq!(inner["cserrorcode"], 9999, "{body}");
    assert_eq!(inner["uuidList"], serde_json::json!([]), "{body}");
    let text = inner["errortext"].as_str().unwrap();
    let left: u64 = text
        .strip_prefix(LIMIT)
        .and_then(|t| t.strip_suffix("] ms."))
        .unwrap_or_else(|| panic!("CloudStack's text: {text}"))
        .parse()
        .unwrap();
    assert!(left <= 2000, "{text}");
    // cs shows the same refusal.
    let refused = p.cs_with(&trudy.ini, &["listZones"]).unwrap_err();
    assert!(refused.contains(LIMIT), "{refused}");

    // Once every instance has the settings: a fresh window serves exactly 3.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, _) = zones(&p, &trudy).await;
    assert_eq!(status, 200, "the window that began before the wait ended");
    let window = Instant::now();
    for _ in 0..2 {
        let (status, body) = zones(&p, &trudy).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = zones(&p, &trudy).await;
    assert!(
        window.elapsed() < Duration::from_millis(1500),
        "too slow to test"
    );
    assert_eq!(status, 429, "{body}");
    // The root admin is not limited meanwhile.
    for _ in 0..5 {
        assert_eq!(p.get(&[("command", "listZones")]).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(2200).saturating_sub(window.elapsed())).await;
    let (status, body) = zones(&p, &trudy).await;
    assert_eq!(status, 200, "the next window: {body}");
}
