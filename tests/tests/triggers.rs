//! End to end: the HTTP gateway, schedules, freezing idle instances, and
//! `invoke`, with the real runner and the real diag function.

use std::time::Duration;

use stratus_contracts::message_types::diag;
use stratus_contracts::names;
use stratus_messaging::Envelope;
use stratus_messaging::broker;
use stratus_tests::{Runner, RunnerOptions, TestEnv, bin_dir, diag_manifest, root, send};

const WAIT: Duration = Duration::from_secs(30);

fn with_http_and_schedule(m: &mut serde_json::Value) {
    let triggers = m["functions"][0]["triggers"].as_array_mut().unwrap();
    triggers.push(
        serde_json::json!({ "type": "http", "route": "/client/api", "methods": ["GET", "POST"] }),
    );
    triggers.push(serde_json::json!({ "type": "schedule", "expression": "rate(1 second)" }));
}

#[tokio::test]
async fn the_gateway_sends_api_gateway_v2_events_and_maps_answers_back() {
    let env = TestEnv::new("gateway");
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest: diag_manifest(with_http_and_schedule),
            topology: None,
            extra_args: vec![],
        },
    );
    let gateway = runner.gateway.clone().expect("the gateway listens");
    let client = reqwest::Client::new();
    let raw_query = "command=listZones&response=json&signature=a%2Bb%3D&apiKey=K";
    let r = client
        .get(format!("http://{gateway}/client/api?{raw_query}"))
        .header("cookie", "JSESSIONID=abc; sessionkey=xyz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies, vec!["diag=seen; Path=/; HttpOnly".to_string()]);
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        seen["rawQueryString"], raw_query,
        "the raw query string is passed as sent"
    );
    assert_eq!(
        seen["cookies"],
        serde_json::json!(["JSESSIONID=abc", "sessionkey=xyz"])
    );
    assert_eq!(seen["method"], "GET");

    let form = "command=login&username=admin&password=p%40ss";
    let r = client
        .post(format!("http://{gateway}/client/api"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(seen["isBase64Encoded"], true);
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD
        .decode(seen["body"].as_str().unwrap())
        .unwrap();
    assert_eq!(body, form.as_bytes());

    // No route: API Gateway's own 404; a method the route does not take, likewise.
    let r = client
        .get(format!("http://{gateway}/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"message": "Not Found"})
    );
    let r = client
        .delete(format!("http://{gateway}/client/api"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn schedules_invoke_their_function() {
    let env = TestEnv::new("schedule");
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest: diag_manifest(with_http_and_schedule),
            topology: None,
            extra_args: vec![],
        },
    );
    runner
        .wait_for("two scheduled invocations", WAIT, |s| {
            s["functions"][0]["invocations"].as_u64() >= Some(2)
        })
        .await;
    assert!(runner.log().contains("scheduled tick"), "{}", runner.log());
    assert_eq!(runner.status().await["functions"][0]["errors"], 0);
}

fn process_state(pid: u64) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The state follows the command name, which is in parentheses.
    stat.rsplit_once(')')
        .unwrap()
        .1
        .trim()
        .chars()
        .next()
        .unwrap()
}

#[tokio::test]
async fn idle_instances_are_frozen_and_thawed_per_invocation() {
    let env = TestEnv::new("freeze");
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest: diag_manifest(|_| {}),
            topology: None,
            extra_args: vec![],
        },
    );
    let connection = env.connect().await;
    let mut events = env
        .watch(&connection, names::INTERNAL_EVENTS_EXCHANGE, diag::ECHOED)
        .await;
    let publisher = env.publisher(broker::topology(&env.config).unwrap());
    for round in 0..2 {
        send(
            &publisher,
            &Envelope::new(
                diag::ECHO,
                &diag::Echo {
                    text: format!("r{round}"),
                },
            ),
        )
        .await;
        assert!(
            events.next(WAIT).await.is_some(),
            "round {round}; log:\n{}",
            runner.log()
        );
        let s = runner
            .wait_for("a frozen instance", WAIT, |s| {
                s["functions"][0]["instances"][0]["frozen"] == true
            })
            .await;
        let pid = s["functions"][0]["instances"][0]["pid"].as_u64().unwrap();
        assert_eq!(process_state(pid), 'T', "a frozen instance is stopped");
    }
}

#[tokio::test]
async fn invoke_runs_one_event_like_sam_local_invoke() {
    let env = TestEnv::new("invoke");
    let run = |event: &str| {
        std::process::Command::new(bin_dir().join("stratus-local"))
            .args(["invoke", "diag", "--manifest"])
            .arg(root().join("infra/manifest.json"))
            .arg("--event")
            .arg(root().join(event))
            .envs(env.config.to_env())
            .output()
            .unwrap()
    };
    let out = run("events/rmq/diag.noop.json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"handled": 1, "retried": 0, "parked": 0})
    );
    let out = run("events/upstream/example-apigw-v2-request-no-authorizer.json");
    assert!(out.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["statusCode"], 200);
    // An event the function cannot take: its error comes back, with a failing exit code.
    let bad = env.home.join("bad.json");
    std::fs::write(&bad, b"{\"what\":1}").unwrap();
    let out = std::process::Command::new(bin_dir().join("stratus-local"))
        .args(["invoke", "diag", "--manifest"])
        .arg(root().join("infra/manifest.json"))
        .arg("--event")
        .arg(&bad)
        .envs(env.config.to_env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap()
            .contains("unrecognised event shape"),
        "{answer}"
    );
}

#[tokio::test]
async fn pollers_follow_the_backlog_and_instances_follow_the_invocations() {
    let env = TestEnv::new("scaling");
    let manifest = diag_manifest(|m| {
        m["functions"][0]["triggers"][0]["batch_size"] = 1.into();
        m["functions"][0]["triggers"][0]["concurrency"] = 2.into();
        m["functions"][0]["max_instances"] = 2.into();
    });
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest,
            topology: None,
            extra_args: vec!["--idle-timeout".into(), "2".into()],
        },
    );
    let publisher = env.publisher(broker::topology(&env.config).unwrap());
    for _ in 0..40 {
        send(
            &publisher,
            &Envelope::new(diag::SLEEP, &diag::Sleep { millis: 150 }),
        )
        .await;
    }
    runner
        .wait_for("two pollers and two busy instances", WAIT, |s| {
            s["queue_triggers"][0]["pollers"] == 2
                && s["functions"][0]["in_flight"] == 2
                && s["functions"][0]["instances"].as_array().unwrap().len() == 2
        })
        .await;
    runner
        .wait_for("the backlog drained", WAIT, |s| {
            s["queue_triggers"][0]["depth"] == 0 && s["functions"][0]["in_flight"] == 0
        })
        .await;
    runner
        .wait_for("idle instances stopped and one poller left", WAIT, |s| {
            s["functions"][0]["instances"]
                .as_array()
                .unwrap()
                .is_empty()
                && s["queue_triggers"][0]["pollers"] == 1
        })
        .await;
    let s = runner.status().await;
    assert_eq!(s["queue_triggers"][0]["messages"], 40, "{s:#}");
    assert_eq!(s["functions"][0]["errors"], 0, "{s:#}");
    // Work after scaling down still flows.
    stratus_tests::assert_echo_flows(&env, &publisher, &runner, "again").await;
}

#[tokio::test]
async fn supervised_processes_are_restarted_when_they_exit() {
    let env = TestEnv::new("processes");
    // A bin dir with the real binaries and a small long-running process.
    let bins = env.home.join("bin");
    std::fs::create_dir_all(&bins).unwrap();
    for b in ["stratus-local", "stratus-fn-diag"] {
        std::os::unix::fs::symlink(bin_dir().join(b), bins.join(b)).unwrap();
    }
    let script = bins.join("stratus-test-agent");
    std::fs::write(&script, "#!/bin/sh\necho \"$STRATUS_INSTANCE $STRATUS_AMQP_VHOST\" >> \"$STRATUS_HOME/agent-starts\"\nexec sleep 600\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let manifest = diag_manifest(|m| {
        m["processes"] = serde_json::json!([{ "name": "agent", "binary": "stratus-test-agent", "min_instances": 2, "max_instances": 2 }]);
    });
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest,
            topology: None,
            extra_args: vec!["--bin-dir".into(), bins.display().to_string()],
        },
    );
    let s = runner
        .wait_for("two agents", WAIT, |s| {
            s["processes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["pid"].is_u64())
                .count()
                == 2
        })
        .await;
    let starts = std::fs::read_to_string(env.home.join("agent-starts")).unwrap();
    assert!(
        starts.contains(&format!("0 {}", env.vhost))
            && starts.contains(&format!("1 {}", env.vhost)),
        "{starts}"
    );
    let pid = s["processes"][0]["pid"].as_u64().unwrap();
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    runner
        .wait_for("the agent restarted", WAIT, |s| {
            s["processes"][0]["restarts"] == 1
                && s["processes"][0]["pid"].as_u64().is_some_and(|p| p != pid)
        })
        .await;
}

#[tokio::test]
async fn warm_instances_are_kept_and_replaced_when_lost() {
    let env = TestEnv::new("warm");
    let manifest = diag_manifest(|m| m["functions"][0]["min_instances"] = 1.into());
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest,
            topology: None,
            extra_args: vec!["--idle-timeout".into(), "1".into()],
        },
    );
    let s = runner
        .wait_for("a warm instance", WAIT, |s| {
            s["functions"][0]["instances"][0]["state"] == "idle"
        })
        .await;
    let pid = s["functions"][0]["instances"][0]["pid"].as_u64().unwrap();
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    runner
        .wait_for("a new warm instance", WAIT, |s| {
            let i = &s["functions"][0]["instances"];
            i.as_array().unwrap().len() == 1
                && i[0]["state"] == "idle"
                && i[0]["pid"].as_u64() != Some(pid)
        })
        .await;
    // The idle timeout never takes the pool below its minimum.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        runner.status().await["functions"][0]["instances"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
