//! The CloudStack API end to end: the real runner with the real manifest,
//! bootstrap at start-up, the real `cs` client, signed requests of our own.

use serde_json::json;
use std::time::{Duration, Instant};
use stratus_tests::TestEnv;

use stratus_tests::cloudstack::{Platform, set_env};

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

#[tokio::test(flavor = "multi_thread")]
async fn disable_account_is_a_job_that_ends_and_the_keys_are_refused_after() {
    let env = TestEnv::new("api-disable");
    let p = Platform::start(&env);
    let alice = p.create_user("alice");
    // Alice works, and sees only her own account.
    let zones = p.cs_with(&alice.ini, &["listZones"]).unwrap();
    assert_eq!(zones["count"], 1);
    let mine = p
        .cs_with(&alice.ini, &["listAccounts", "listall=true"])
        .unwrap();
    assert_eq!(mine["count"], 1);
    assert_eq!(mine["account"][0]["name"], "alice");
    // Isolation probes: alice cannot see or act on the admin's things.
    let admins = p.cs(&["listUsers", "username=admin"]).unwrap();
    let admin_user = admins["user"][0]["id"].as_str().unwrap();
    let err = p
        .cs_with(&alice.ini, &["getUserKeys", &format!("id={admin_user}")])
        .unwrap_err();
    assert!(err.contains("531"), "{err}");
    let err = p.cs_with(&alice.ini, &["listHosts"]).unwrap_err();
    assert!(err.contains("401"), "{err}");
    // The admin disables alice: cs polls the job to its end and prints its result.
    let done = p
        .cs(&[
            "disableAccount",
            &format!("id={}", alice.account_id),
            "lock=false",
        ])
        .unwrap();
    assert_eq!(done["account"]["state"], "disabled", "{done}");
    // The job is listed as ended, with its class name.
    let jobs = p.cs(&["listAsyncJobs"]).unwrap();
    let job = &jobs["asyncjobs"][0];
    assert_eq!(job["jobstatus"], 1, "{jobs}");
    assert_eq!(job["jobresultcode"], 0);
    assert_eq!(
        job["cmd"],
        "org.apache.cloudstack.api.command.admin.account.DisableAccountCmd"
    );
    assert_eq!(job["jobinstanceid"], alice.account_id.as_str());
    // Alice's keys are refused now.
    let (status, body) = p
        .get_as(&alice.key, &alice.secret, &[("command", "listZones")])
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(p.cs_with(&alice.ini, &["listZones"]).is_err());
    // Enabled again, they work again.
    p.cs(&["enableAccount", &format!("id={}", alice.account_id)])
        .unwrap();
    assert!(p.cs_with(&alice.ini, &["listZones"]).is_ok());
    // The async command without its required parameter: 431, never a job.
    let (status, _) = p
        .get(&[("command", "disableAccount"), ("id", &alice.account_id)])
        .await;
    assert_eq!(status, 431);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_ends_even_when_the_api_dies_before_publishing_its_message() {
    let env = TestEnv::new("api-crash");
    let p = Platform::start_with(&env, |m| {
        set_env(m, "api", "STRATUS_FAULT_EXIT_BEFORE_PUBLISH", "1");
        set_env(m, "outbox-relay", "STRATUS_OUTBOX_GRACE_MS", "300");
    });
    let bob = p.create_user("bob");
    // The function records the job, then dies: the caller gets no answer.
    let status = p
        .status_of(&[
            ("command", "disableAccount"),
            ("id", &bob.account_id),
            ("lock", "true"),
        ])
        .await;
    assert!(status >= 500, "the function died: {status}");
    // The relay publishes the job's message; the orchestrator ends the job.
    let started = Instant::now();
    loop {
        let accounts = p
            .cs(&["listAccounts", &format!("id={}", bob.account_id)])
            .unwrap();
        let jobs = p.cs(&["listAsyncJobs"]).unwrap();
        if accounts["account"][0]["state"] == "locked" && jobs["asyncjobs"][0]["jobstatus"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the job did not end: {accounts} {jobs}\n{}",
            p.runner.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(p.runner.log().contains("republishing from the outbox"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_session_works_through_the_gateway() {
    let env = TestEnv::new("api-login");
    let p = Platform::start(&env);
    let client = reqwest::Client::new();
    // The bootstrapped admin, as CloudStack's simulator: admin / password.
    let login = client
        .post(&p.endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("command=login&username=admin&password=password&domain=%2F&response=json")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    let cookies: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    let body: serde_json::Value = login.json().await.unwrap();
    let key = body["loginresponse"]["sessionkey"]
        .as_str()
        .unwrap()
        .to_string();
    let zones: serde_json::Value = client
        .get(format!(
            "{}?command=listZones&response=json&sessionkey={}",
            p.endpoint, key
        ))
        .header("cookie", cookies.join("; "))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(zones["listzonesresponse"]["count"], 1, "{zones}");
    // A GET login is refused with 405.
    let status = client
        .get(format!(
            "{}?command=login&username=admin&password=password&response=json",
            p.endpoint
        ))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 405);
}

/// `cs`'s own paging (`fetch_list=True`, pages of 500 until `count`), by GET
/// and by form POST, over 1,234 VMs put straight into the platform's store.
#[tokio::test(flavor = "multi_thread")]
async fn cs_fetch_list_walks_every_page() {
    use stratus_model::samples::{Fixture, Sample};
    use stratus_model::{Account, Domain, Vm};
    let env = TestEnv::new("api-paging");
    let p = Platform::start(&env);
    let store = stratus_store::Store::open(&env.config.store, &env.config.table_prefix)
        .await
        .unwrap();
    let root = Domain::id_for("ROOT");
    let f = Fixture::default();
    let vms: Vec<Vm> = (0..1234)
        .map(|_| Vm {
            account_id: Account::id_for(root, "admin"),
            domain_id: root,
            ..Vm::sample(&f)
        })
        .collect();
    store.import(&vms).await.unwrap();
    let script = r#"
import json, sys
from cs import CloudStack, read_config
for method in ("get", "post"):
    api = CloudStack(**{**read_config(), "method": method})
    vms = api.listVirtualMachines(fetch_list=True)
    print(json.dumps({"method": method, "n": len(vms), "unique": len({v["id"] for v in vms})}))
"#;
    let out = std::process::Command::new(stratus_tests::root().join(".venv/bin/python"))
        .args(["-c", script])
        .env("CLOUDSTACK_CONFIG", &p.ini)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            (v["n"].as_u64(), v["unique"].as_u64()),
            (Some(1234), Some(1234)),
            "{line}"
        );
    }
    // Page 3 of 500 holds the last 234, and count is the total.
    let (_, page) = p
        .get(&[
            ("command", "listVirtualMachines"),
            ("page", "3"),
            ("pagesize", "500"),
        ])
        .await;
    let page = &page["listvirtualmachinesresponse"];
    assert_eq!(
        (
            page["count"].as_u64(),
            page["virtualmachine"].as_array().map(Vec::len)
        ),
        (Some(1234), Some(234))
    );
}

/// Garbage through the real gateway (raw bytes in the query and body, odd
/// methods and content types): a CloudStack error every time, never a 5xx.
#[tokio::test(flavor = "multi_thread")]
async fn garbage_through_the_gateway_gets_cloudstack_errors() {
    let env = TestEnv::new("api-garbage");
    let p = Platform::start(&env);
    let client = reqwest::Client::new();
    let mut seed: u64 = 0x2026_1125;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..200 {
        let len = (next() % 120) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| (next() % 256) as u8).collect();
        let query: String = bytes
            .iter()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"=&%+._-".contains(b) {
                    (*b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let url = format!("{}?{query}&response=json&command=listZones", p.endpoint);
        let r = if i % 2 == 0 {
            client.get(&url).send().await.unwrap()
        } else {
            let content_type = [
                "application/x-www-form-urlencoded",
                "application/octet-stream",
                "text/plain",
            ][i % 3];
            client
                .post(&url)
                .header("content-type", content_type)
                .body(bytes.clone())
                .send()
                .await
                .unwrap()
        };
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!([401, 430, 431, 432].contains(&status), "{status}: {body}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let inner = v.as_object().unwrap().values().next().unwrap();
        assert_eq!(inner["errorcode"], status, "{body}");
    }
}
