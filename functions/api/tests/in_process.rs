//! The API handler in process over a real SQLite store: the registry's
//! promises, roles and isolation, and thousands of generated bad requests.
//! (End-to-end tests through the runner and `cs` live in `tests/`.)

mod common;

use std::sync::Arc;

use chrono::Utc;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use stratus_cloudstack::signature;
use stratus_contracts::settings::Defaults;
use stratus_fn_api::{Api, Request};
use stratus_model::samples::{Fixture, Sample};
use stratus_model::*;

struct World {
    api: Api,
    admin: Who,
    alice: Who,
    bob: Who,
    bobs_vm: Vm,
}

async fn world() -> World {
    let store = store();
    let root = domain(&store, "ROOT", None).await;
    let admin = person(&store, &root, "admin", AccountType::Admin).await;
    let alice = person(&store, &root, "alice", AccountType::User).await;
    let bob = person(&store, &root, "bob", AccountType::User).await;
    let f = Fixture::default();
    common::zone(&store).await;
    let bobs_vm = Vm {
        account_id: bob.account.id,
        domain_id: root.id,
        ..Vm::sample(&f)
    };
    store.create(&bobs_vm).await.unwrap();
    World {
        api: Api::new(store, None, Arc::new(Defaults::default()), secrets()),
        admin,
        alice,
        bob,
        bobs_vm,
    }
}

#[tokio::test]
async fn every_command_without_its_required_parameters_gets_431() {
    let w = world().await;
    for cmd in w.api.registry.all() {
        let (status, body) = call(&w.api, &w.admin, &[("command", cmd.name)]).await;
        match cmd.params.iter().find(|p| p.required) {
            Some(p) => {
                assert_eq!(status, 431, "{}: {body}", cmd.name);
                assert_eq!(
                    inner(&body)["errortext"],
                    format!(
                        "Unable to execute API command {} due to missing parameter {}",
                        cmd.name.to_lowercase(),
                        p.name
                    )
                );
            }
            None => assert_ne!(status, 432, "{}: {body}", cmd.name),
        }
        // Names are case-insensitive, never 432 for a registered command.
        let (status, _) = call(&w.api, &w.admin, &[("command", &cmd.name.to_uppercase())]).await;
        assert_ne!(status, 432, "{}", cmd.name);
    }
}

#[tokio::test]
async fn list_apis_is_the_registry_filtered_by_role() {
    let w = world().await;
    let names = |v: &Value| -> Vec<String> {
        inner(v)["api"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, admin) = call(&w.api, &w.admin, &[("command", "listApis")]).await;
    let all: Vec<String> = w
        .api
        .registry
        .all()
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    assert_eq!(names(&admin), all);
    assert_eq!(inner(&admin)["count"], all.len());
    let (_, user) = call(&w.api, &w.alice, &[("command", "listApis")]).await;
    let allowed: Vec<String> = w
        .api
        .registry
        .all()
        .iter()
        .filter(|c| c.roles.contains(&stratus_fn_api::registry::Role::User))
        .map(|c| c.name.to_string())
        .collect();
    assert_eq!(names(&user), allowed);
    assert!(!allowed.contains(&"listHosts".to_string()));
    for api in inner(&admin)["api"].as_array().unwrap() {
        assert!(api["isasync"].is_boolean());
        assert!(
            !api["response"].as_array().unwrap().is_empty(),
            "{}",
            api["name"]
        );
        for p in api["params"].as_array().unwrap() {
            for f in ["name", "description", "type"] {
                assert!(p[f].is_string(), "{p}");
            }
            assert!(p["length"].is_u64() && p["required"].is_boolean(), "{p}");
        }
    }
}

#[tokio::test]
async fn accounts_see_only_their_own() {
    let w = world().await;
    let vm = w.bobs_vm.id.to_string();
    // Bob sees his VM; Alice sees nothing, by list, by id, or with listall.
    let (_, b) = call(&w.api, &w.bob, &[("command", "listVirtualMachines")]).await;
    assert_eq!(inner(&b)["count"], 1);
    for params in [
        vec![("command", "listVirtualMachines")],
        vec![("command", "listVirtualMachines"), ("id", vm.as_str())],
        vec![("command", "listVirtualMachines"), ("listall", "true")],
        vec![("command", "listVirtualMachines"), ("ids", vm.as_str())],
    ] {
        let (status, a) = call(&w.api, &w.alice, &params).await;
        assert_eq!(
            (status, inner(&a)),
            (200, &serde_json::json!({})),
            "{params:?}"
        );
    }
    // Naming another account is refused to a user (it is ignored: own only).
    let (_, a) = call(
        &w.api,
        &w.alice,
        &[("command", "listVirtualMachines"), ("account", "bob")],
    )
    .await;
    assert_eq!(inner(&a), &serde_json::json!({}));
    // The admin sees it only when asking for all, or for bob's account.
    let (_, own) = call(&w.api, &w.admin, &[("command", "listVirtualMachines")]).await;
    assert_eq!(inner(&own), &serde_json::json!({}));
    let (_, all) = call(
        &w.api,
        &w.admin,
        &[("command", "listVirtualMachines"), ("listall", "true")],
    )
    .await;
    assert_eq!(inner(&all)["virtualmachine"][0]["id"], vm);
    let root = w.bob.account.domain_id.to_string();
    let (_, bobs) = call(
        &w.api,
        &w.admin,
        &[
            ("command", "listVirtualMachines"),
            ("account", "bob"),
            ("domainid", &root),
        ],
    )
    .await;
    assert_eq!(inner(&bobs)["count"], 1);
    // Acting on another account's user: 531. Fabric commands: 401 for users.
    let (status, _) = call(
        &w.api,
        &w.alice,
        &[
            ("command", "getUserKeys"),
            ("id", &w.bob.user.id.to_string()),
        ],
    )
    .await;
    assert_eq!(status, 531);
    let (status, body) = call(&w.api, &w.alice, &[("command", "listHosts")]).await;
    assert_eq!(status, 401);
    assert_eq!(
        inner(&body)["errortext"],
        "The given command 'listHosts' either does not exist, is not available for user."
    );
    // Users and accounts: own only.
    let (_, users) = call(
        &w.api,
        &w.alice,
        &[("command", "listUsers"), ("listall", "true")],
    )
    .await;
    assert_eq!(inner(&users)["count"], 1);
    assert_eq!(inner(&users)["user"][0]["username"], "alice");
    let (_, accounts) = call(
        &w.api,
        &w.alice,
        &[
            ("command", "listAccounts"),
            ("id", &w.bob.account.id.to_string()),
        ],
    )
    .await;
    assert_eq!(inner(&accounts), &serde_json::json!({}));
    let (_, keys) = call(
        &w.api,
        &w.alice,
        &[
            ("command", "getUserKeys"),
            ("id", &w.alice.user.id.to_string()),
        ],
    )
    .await;
    assert_eq!(inner(&keys)["userkeys"]["apikey"], "key-alice");
}

#[tokio::test]
async fn accounts_are_created_once_and_new_keys_replace_old() {
    let w = world().await;
    let create = [
        ("command", "createAccount"),
        ("username", "carol"),
        ("password", "p~ss word"),
        ("email", "c@example.com"),
        ("firstname", "Carol"),
        ("lastname", "C"),
    ];
    let (status, body) = call(&w.api, &w.admin, &create).await;
    assert_eq!(status, 200, "{body}");
    let account = &inner(&body)["account"];
    assert_eq!(account["name"], "carol");
    assert_eq!(account["accounttype"], 0);
    let user_id = account["user"][0]["id"].as_str().unwrap().to_string();
    let (status, body) = call(&w.api, &w.admin, &create).await;
    assert_eq!(status, 431, "{body}");
    let (_, keys) = call(
        &w.api,
        &w.admin,
        &[("command", "registerUserKeys"), ("id", &user_id)],
    )
    .await;
    let first = inner(&keys)["userkeys"].clone();
    let carol = |k: &Value| Who {
        key: k["apikey"].as_str().unwrap().into(),
        secret: k["secretkey"].as_str().unwrap().into(),
        account: w.alice.account.clone(),
        user: w.alice.user.clone(),
    };
    let (status, _) = call(&w.api, &carol(&first), &[("command", "listZones")]).await;
    assert_eq!(status, 200);
    let (_, keys) = call(
        &w.api,
        &w.admin,
        &[("command", "registerUserKeys"), ("id", &user_id)],
    )
    .await;
    let second = inner(&keys)["userkeys"].clone();
    assert_ne!(first, second);
    let (status, _) = call(&w.api, &carol(&first), &[("command", "listZones")]).await;
    assert_eq!(status, 401, "old keys are replaced");
    let (status, _) = call(&w.api, &carol(&second), &[("command", "listZones")]).await;
    assert_eq!(status, 200);
}

/// Thousands of malformed requests: always a CloudStack error with a 4xx/5xx
/// code it defines (never a 5xx of ours), one top-level key, no panic.
#[tokio::test]
async fn generated_bad_input_always_gets_a_cloudstack_error() {
    let w = world().await;
    let mut rng = StdRng::seed_from_u64(20261125);
    let commands: Vec<&'static str> = w.api.registry.all().iter().map(|c| c.name).collect();
    let values = [
        "",
        " ",
        "-1",
        "0",
        "99999999999999999999",
        "abc",
        "true",
        "False",
        "%",
        "%%",
        "\u{0}",
        "\n",
        "a\u{7}b",
        "../../etc/passwd",
        "' OR 1=1 --",
        "<xml>",
        "🦀",
        "\u{202e}",
        "nan",
        "3c5d5d3e-0000-4000-8000-000000000000",
        "3c5d5d3e-0000-4000-8000",
        "[]",
        "{}",
        "tags[0",
        "x".repeat(5000).leak(),
    ];
    let names = [
        "id",
        "page",
        "pagesize",
        "keyword",
        "zoneid",
        "templatefilter",
        "jobid",
        "listall",
        "tags[0].key",
        "tags[x].y",
        "a[0][1].b",
        "name",
        "account",
        "domainid",
        "username",
        "accounttype",
        "ids",
        "type",
        "startdate",
        "level",
    ];
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..2500 {
        let mut params: Vec<(String, String)> = vec![];
        let cmd = if rng.random_ratio(1, 10) {
            values[rng.random_range(0..values.len())].to_string()
        } else {
            commands[rng.random_range(0..commands.len())].to_string()
        };
        params.push(("command".into(), cmd));
        for _ in 0..rng.random_range(0..5) {
            let n = names[rng.random_range(0..names.len())];
            let v = values[rng.random_range(0..values.len())];
            params.push((n.into(), v.into()));
        }
        let who = [&w.admin, &w.alice][i % 2];
        let (status, body) = if rng.random_ratio(1, 8) {
            // Unsigned or garbage transport.
            let garbage: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            send(&w.api, "POST", &String::from_utf8_lossy(&garbage), &garbage).await
        } else {
            let mut pairs = vec![
                ("apiKey".to_string(), who.key.clone()),
                ("response".into(), "json".into()),
            ];
            pairs.extend(params);
            let query = signature::signed_query(&pairs, &who.secret);
            if rng.random_ratio(1, 3) {
                send(&w.api, "POST", "", query.as_bytes()).await
            } else {
                send(&w.api, "GET", &query, b"").await
            }
        };
        assert!(
            [200, 400, 401, 405, 430, 431, 432, 531].contains(&status),
            "status {status}: {body}"
        );
        let inner = inner(&body);
        if status != 200 {
            assert_eq!(inner["errorcode"], status, "{body}");
            assert!(
                inner["errortext"].as_str().is_some_and(|t| !t.is_empty()),
                "{body}"
            );
        }
        *seen.entry(status).or_insert(0) += 1;
    }
    // The generator reached every kind of answer it should.
    for s in [200, 401, 430, 431, 432] {
        assert!(seen.contains_key(&s), "no {s} among {seen:?}");
    }
}

#[tokio::test]
async fn every_async_command_answers_with_a_job_and_its_message_waits_in_the_outbox() {
    let w = world().await;
    let asyncs: Vec<&str> = w
        .api
        .registry
        .all()
        .iter()
        .filter(|c| c.is_async)
        .map(|c| c.name)
        .collect();
    assert_eq!(
        asyncs,
        vec![
            "deployVirtualMachine",
            "destroyVirtualMachine",
            "disableAccount",
            "expungeVirtualMachine"
        ],
        "a new async command needs a case here"
    );
    vm_jobs_wait_in_the_outbox(&w).await;
    let (status, body) = call(
        &w.api,
        &w.admin,
        &[
            ("command", "disableAccount"),
            ("id", &w.bob.account.id.to_string()),
            ("lock", "false"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let job = inner(&body)["jobid"].as_str().unwrap().to_string();
    // Pending, with no jobresult, until the orchestrator ends it.
    let (_, q) = call(
        &w.api,
        &w.admin,
        &[("command", "queryAsyncJobResult"), ("jobid", &job)],
    )
    .await;
    assert_eq!(inner(&q)["jobstatus"], 0);
    assert!(inner(&q).get("jobresult").is_none(), "{q}");
    assert_eq!(inner(&q)["jobinstancetype"], "Account");
    // No broker here: the message waits in the outbox, with the job's id.
    let pending = w
        .api
        .store
        .outbox_pending(std::time::Duration::ZERO, 10)
        .await
        .unwrap();
    let pending: Vec<_> = pending
        .iter()
        .filter(|m| m.job_id.as_deref() == Some(job.as_str()))
        .collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].message_type, "account.disable");
    // Bob may not query the admin's job.
    let (status, _) = call(
        &w.api,
        &w.bob,
        &[("command", "queryAsyncJobResult"), ("jobid", &job)],
    )
    .await;
    assert_eq!(status, 531);
}

async fn with_cookies(
    api: &Api,
    method: &str,
    query: &str,
    body: &str,
    cookies: &[String],
) -> (u16, Value, Vec<String>) {
    let r = api
        .handle(&Request {
            method: method.into(),
            raw_query: query.into(),
            body: body.as_bytes().to_vec(),
            content_type: Some("application/x-www-form-urlencoded".into()),
            cookies: cookies.to_vec(),
            request_id: "test".into(),
        })
        .await;
    (
        r.status,
        serde_json::from_str(&r.body).unwrap(),
        r.set_cookies,
    )
}

#[tokio::test]
async fn login_sessions_and_logout() {
    let w = world().await;
    let (status, _) = call(
        &w.api,
        &w.admin,
        &[
            ("command", "createAccount"),
            ("username", "dave"),
            ("password", "s3cret pass"),
            ("email", "d@example.com"),
            ("firstname", "Dave"),
            ("lastname", "D"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let api = &w.api;
    // GET is refused; a wrong password is 531 with CloudStack's text.
    let (status, body, _) = with_cookies(
        api,
        "GET",
        "command=login&username=dave&password=s3cret%20pass&response=json",
        "",
        &[],
    )
    .await;
    assert_eq!(status, 405, "{body}");
    let (status, body, _) = with_cookies(
        api,
        "POST",
        "",
        "command=login&username=dave&password=wrong&response=json",
        &[],
    )
    .await;
    assert_eq!(status, 531);
    assert_eq!(
        inner(&body)["errortext"],
        "failed to authenticate user, check if username/password are correct"
    );
    let (status, _, _) = with_cookies(
        api,
        "POST",
        "",
        "command=login&username=nobody&password=x&response=json",
        &[],
    )
    .await;
    assert_eq!(status, 531);
    // The right password: a session, its key in the answer and in cookies.
    let (status, body, set) = with_cookies(
        api,
        "POST",
        "",
        "command=login&username=dave&password=s3cret+pass&domain=%2F&response=json",
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let login = &body["loginresponse"];
    assert_eq!(
        (
            login["username"].as_str(),
            login["account"].as_str(),
            login["type"].as_str()
        ),
        (Some("dave"), Some("dave"), Some("0"))
    );
    assert_eq!(login["timeout"], 1800);
    let key = login["sessionkey"].as_str().unwrap().to_string();
    assert!(
        set.iter()
            .any(|c| c.starts_with("JSESSIONID=") && c.contains("HttpOnly")),
        "{set:?}"
    );
    assert!(
        set.iter()
            .any(|c| c.starts_with(&format!("sessionkey={key};"))),
        "{set:?}"
    );
    let cookies: Vec<String> = vec![
        set.iter()
            .map(|c| c.split(';').next().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("; "),
    ];
    // Cookie and parameter (the default check): the request works, unsigned.
    let q = format!(
        "command=listZones&response=json&sessionkey={}",
        urlencode(&key)
    );
    let (status, body, _) = with_cookies(api, "GET", &q, "", &cookies).await;
    assert_eq!(status, 200, "{body}");
    // Without the parameter, with a wrong one, or without the cookie: 401.
    for (query, jar) in [
        (
            "command=listZones&response=json".to_string(),
            cookies.clone(),
        ),
        (
            "command=listZones&response=json&sessionkey=forged".to_string(),
            cookies.clone(),
        ),
        (q.clone(), vec![]),
    ] {
        let (status, body, _) = with_cookies(api, "GET", &query, "", &jar).await;
        assert_eq!(status, 401, "{query}: {body}");
        assert_eq!(
            inner(&body)["errortext"],
            "unable to verify user credentials"
        );
    }
    // No command in a session request: 400.
    let (status, _, _) = with_cookies(
        api,
        "GET",
        &format!("response=json&sessionkey={}", urlencode(&key)),
        "",
        &cookies,
    )
    .await;
    assert_eq!(status, 400);
    // Logout ends the session and expires the cookies.
    let (status, body, set) = with_cookies(
        api,
        "GET",
        &format!(
            "command=logout&response=json&sessionkey={}",
            urlencode(&key)
        ),
        "",
        &cookies,
    )
    .await;
    assert_eq!(
        (status, &body["logoutresponse"]["description"]),
        (200, &serde_json::json!("success"))
    );
    assert!(set.iter().all(|c| c.contains("Max-Age=0")), "{set:?}");
    let (status, _, _) = with_cookies(api, "GET", &q, "", &cookies).await;
    assert_eq!(status, 401);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn the_api_honours_its_settings() {
    let mut w = world().await;
    let settings = |pairs: &[(&'static str, &str)]| {
        let mut d = Defaults::default();
        for (k, v) in pairs {
            d.overrides.insert(*k, v.to_string());
        }
        Arc::new(d)
    };
    // A smaller page limit.
    w.api.settings = settings(&[("default.page.size", "1")]);
    let (status, body) = call(
        &w.api,
        &w.admin,
        &[("command", "listZones"), ("page", "1"), ("pagesize", "2")],
    )
    .await;
    assert_eq!(status, 431);
    assert_eq!(
        inner(&body)["errortext"],
        "Page size can't exceed max allowed page size value: 1"
    );
    // API-key access switched off.
    w.api.settings = settings(&[("api.key.access", "false")]);
    let (status, _) = call(&w.api, &w.admin, &[("command", "listZones")]).await;
    assert_eq!(status, 401);
    // POST and v3 timestamps enforced: a v2 GET is refused, a v3 POST works.
    w.api.settings = settings(&[("enforce.post.requests.and.timestamps", "true")]);
    let (status, _) = call(&w.api, &w.admin, &[("command", "listZones")]).await;
    assert_eq!(status, 401);
    let expires = (Utc::now() + chrono::Duration::minutes(5))
        .format("%Y-%m-%dT%H:%M:%S%z")
        .to_string();
    let pairs: Vec<(String, String)> = vec![
        ("apiKey".into(), w.admin.key.clone()),
        ("response".into(), "json".into()),
        ("command".into(), "listZones".into()),
        ("signatureVersion".into(), "3".into()),
        ("expires".into(), expires),
    ];
    let body = signature::signed_query(&pairs, &w.admin.secret);
    let (status, _) = send(&w.api, "GET", &body, b"").await;
    assert_eq!(status, 401, "GET refused");
    let (status, answer) = send(&w.api, "POST", "", body.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
}

/// Consul unreachable: reads answer from the defaults, a valid change is a
/// clear 530 naming Consul (nothing half-written), a bad value is still 431.
#[tokio::test]
async fn settings_without_a_reachable_consul() {
    let mut w = world().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    w.api.settings = stratus_discovery::settings::ConsulSettings::new(
        stratus_discovery::Client::new(&dead.to_string(), None),
        std::time::Duration::from_secs(3),
    );
    let (status, body) = call(
        &w.api,
        &w.admin,
        &[
            ("command", "listConfigurations"),
            ("name", "default.page.size"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(inner(&body)["configuration"][0]["value"], "500");
    let (status, body) = call(
        &w.api,
        &w.admin,
        &[
            ("command", "updateConfiguration"),
            ("name", "default.page.size"),
            ("value", "100"),
        ],
    )
    .await;
    assert_eq!(status, 530, "{body}");
    let text = inner(&body)["errortext"].as_str().unwrap();
    assert!(
        text.starts_with("Unable to update configuration parameter default.page.size: Consul at")
            && text.contains("is unreachable"),
        "{text}"
    );
    let (status, _) = call(
        &w.api,
        &w.admin,
        &[
            ("command", "updateConfiguration"),
            ("name", "default.page.size"),
            ("value", "-5"),
        ],
    )
    .await;
    assert_eq!(status, 431);
}

/// deployVirtualMachine answers with the VM's id and a job, destroy with a
/// job, expunge of a VM that is not destroyed with 431; each job's message
/// waits in the outbox.
async fn vm_jobs_wait_in_the_outbox(w: &World) {
    let f = Fixture::default();
    let store = &w.api.store;
    store.create(&ServiceOffering::sample(&f)).await.unwrap();
    let template = Template {
        id: f.template,
        ..Template::sample(&f)
    };
    store.create(&template).await.unwrap();
    let offering = store
        .walk::<ServiceOffering>(&stratus_store::Index::All)
        .await
        .unwrap()[0]
        .value
        .id;
    let zone = store
        .walk::<Zone>(&stratus_store::Index::All)
        .await
        .unwrap()[0]
        .value
        .id;
    let (status, body) = call(
        &w.api,
        &w.alice,
        &[
            ("command", "deployVirtualMachine"),
            ("zoneid", &zone.to_string()),
            ("serviceofferingid", &offering.to_string()),
            ("templateid", &template.id.to_string()),
            ("name", "web-1"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let deploy_job = inner(&body)["jobid"].as_str().unwrap().to_string();
    assert!(inner(&body)["id"].as_str().is_some(), "{body}");
    let (status, body) = call(
        &w.api,
        &w.alice,
        &[
            ("command", "deployVirtualMachine"),
            ("zoneid", &zone.to_string()),
            ("serviceofferingid", &offering.to_string()),
            ("templateid", &template.id.to_string()),
            ("name", "1-starts-with-a-digit"),
        ],
    )
    .await;
    assert_eq!(status, 431, "{body}");
    let (status, body) = call(
        &w.api,
        &w.admin,
        &[
            ("command", "destroyVirtualMachine"),
            ("id", &w.bobs_vm.id.to_string()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let destroy_job = inner(&body)["jobid"].as_str().unwrap().to_string();
    let (status, body) = call(
        &w.api,
        &w.admin,
        &[
            ("command", "expungeVirtualMachine"),
            ("id", &w.bobs_vm.id.to_string()),
        ],
    )
    .await;
    assert_eq!(status, 431, "{body}");
    // A user may not expunge on destroy.
    let (status, _) = call(
        &w.api,
        &w.bob,
        &[
            ("command", "destroyVirtualMachine"),
            ("id", &w.bobs_vm.id.to_string()),
            ("expunge", "true"),
        ],
    )
    .await;
    assert_eq!(status, 531);
    let pending = store
        .outbox_pending(std::time::Duration::ZERO, 10)
        .await
        .unwrap();
    let of = |job: &str| {
        pending
            .iter()
            .find(|m| m.job_id.as_deref() == Some(job))
            .map(|m| m.message_type.clone())
    };
    assert_eq!(of(&deploy_job).as_deref(), Some("vm.deploy"));
    assert_eq!(of(&destroy_job).as_deref(), Some("vm.destroy"));
}
