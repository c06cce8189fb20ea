//! The CloudStack API end to end: the real runner with the real manifest,
//! bootstrap at start-up, the real `cs` client, signed requests of our own.

use serde_json::json;
use stratus_tests::TestEnv;
use stratus_tests::cloudstack::Platform;

#[tokio::test(flavor = "multi_thread")]
async fn cs_lists_the_bootstrapped_zone() {
    let env = TestEnv::new("api-zones");
    let p = Platform::start(&env);
    let zones = p.cs(&["listZones"]).unwrap();
    assert_eq!(zones["count"], 1, "{zones}");
    let zone = &zones["zone"][0];
    assert_eq!(zone["name"], "Sandbox-simulator");
    assert_eq!(zone["networktype"], "Advanced");
    assert_eq!(zone["allocationstate"], "Enabled");
    // By id, and by an id that names nothing: the text clients take as "gone".
    let id = zone["id"].as_str().unwrap();
    let one = p.cs(&["listZones", &format!("id={id}")]).unwrap();
    assert_eq!(one["zone"][0]["id"], id);
    let (status, body) = p
        .get(&[
            ("command", "listZones"),
            ("id", "3c5d5d3e-0000-4000-8000-000000000000"),
        ])
        .await;
    assert_eq!(status, 431, "{body}");
    assert!(
        body["listzonesresponse"]["errortext"]
            .as_str()
            .unwrap()
            .contains("Invalid parameter id value=3c5d5d3e-0000-4000-8000-000000000000 due to incorrect long value format, or entity does not exist"),
        "{body}"
    );
    // A keyword that matches nothing: CloudStack's empty list is `{}`.
    let (status, body) = p
        .get(&[("command", "listZones"), ("keyword", "nowhere")])
        .await;
    assert_eq!((status, body), (200, json!({"listzonesresponse": {}})));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_signatures_and_unknown_commands_get_cloudstacks_answers() {
    let env = TestEnv::new("api-auth");
    let p = Platform::start(&env);
    let unverified = json!({"uuidList": [], "errorcode": 401, "errortext": "unable to verify user credentials and/or request signature"});
    // A wrong secret.
    let (status, body) = p
        .get_as(&p.key, "not-the-secret", &[("command", "listZones")])
        .await;
    assert_eq!((status, &body["listzonesresponse"]), (401, &unverified));
    // An unknown key.
    let (status, _) = p
        .get_as("no-such-key", &p.secret, &[("command", "listZones")])
        .await;
    assert_eq!(status, 401);
    // An expired v3 signature.
    let (status, body) = p
        .get(&[
            ("command", "listZones"),
            ("signatureVersion", "3"),
            ("expires", "2020-01-01T00:00:00+0000"),
        ])
        .await;
    assert_eq!((status, &body["listzonesresponse"]), (401, &unverified));
    // No signature at all.
    let (status, _) = p
        .raw_get(&format!("command=listZones&response=json&apiKey={}", p.key))
        .await;
    assert_eq!(status, 401);
    // An unknown command, signed: 432 under errorresponse.
    let (status, body) = p.get(&[("command", "frobnicateZones")]).await;
    assert_eq!(status, 432, "{body}");
    assert_eq!(
        body["errorresponse"]["errortext"],
        "Unknown API command: frobnicateZones"
    );
    // Through `cs` too: it reports the error and fails.
    let err = p.cs(&["frobnicateZones"]).unwrap_err();
    assert!(err.contains("432"), "{err}");
    // Oversized pages, and a page size without a page.
    let (status, body) = p
        .get(&[("command", "listZones"), ("page", "1"), ("pagesize", "501")])
        .await;
    assert_eq!(status, 431);
    assert_eq!(
        body["listzonesresponse"]["errortext"],
        "Page size can't exceed max allowed page size value: 500"
    );
    let (status, _) = p.get(&[("command", "listZones"), ("pagesize", "5")]).await;
    assert_eq!(status, 431);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_apis_is_the_registry() {
    let env = TestEnv::new("api-apis");
    let p = Platform::start(&env);
    let apis = p.cs(&["listApis"]).unwrap();
    let names: Vec<&str> = apis["api"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    let registry = stratus_fn_api_names();
    assert_eq!(names, registry);
    for api in apis["api"].as_array().unwrap() {
        assert!(api["isasync"].is_boolean(), "{api}");
        for param in api["params"].as_array().unwrap() {
            assert!(
                param["length"].is_u64() && param["required"].is_boolean(),
                "{param}"
            );
        }
    }
}

/// The command names the API function registers, from its registry itself.
fn stratus_fn_api_names() -> Vec<&'static str> {
    stratus_fn_api::commands::registry()
        .all()
        .iter()
        .map(|c| c.name)
        .collect()
}
