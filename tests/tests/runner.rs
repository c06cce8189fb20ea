//! End to end: the real `stratus-local` runs the real diag function binary
//! (under the real `lambda_runtime`) against real RabbitMQ.

use std::collections::HashSet;
use std::time::Duration;

use stratus_contracts::message_types::diag;
use stratus_contracts::names;
use stratus_messaging::Envelope;
use stratus_messaging::broker;
use stratus_messaging::envelope::derived_id;
use stratus_messaging::rmq_event::header_string;
use stratus_tests::{Runner, RunnerOptions, TestEnv, diag_manifest, parked_reason, send};

const WAIT: Duration = Duration::from_secs(30);

fn fn_status<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == name)
        .unwrap()
}

#[tokio::test]
async fn an_echo_goes_round_trip_with_a_derived_id() {
    let env = TestEnv::new("echo");
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
    let echo = Envelope::new(
        diag::ECHO,
        &diag::Echo {
            text: "ping".into(),
        },
    )
    .with_job_id("job-42");
    send(&publisher, &echo).await;
    let reply = events
        .next(WAIT)
        .await
        .unwrap_or_else(|| panic!("no echo came back; log:\n{}", runner.log()));
    let reply = Envelope::from_rmq(&reply).unwrap();
    assert_eq!(reply.message_id, derived_id(echo.message_id, "echoed"));
    assert_eq!(reply.causation_id, Some(echo.message_id));
    assert_eq!(reply.correlation_id, echo.correlation_id);
    assert_eq!(reply.job_id.as_deref(), Some("job-42"));
    assert_eq!(reply.trace_id(), echo.trace_id());
    let body: diag::Echoed = reply.body().unwrap();
    assert_eq!(body.text, "ping");
    // Every log line of the handling names the request id and the job id.
    // The line is written after the reply is published, so it may trail it.
    let is_handled =
        |l: &&str| l.contains("\"handled\"") && l.contains(&echo.message_id.to_string());
    let started = std::time::Instant::now();
    let mut log = runner.log();
    while !log.lines().any(|l| is_handled(&l)) && started.elapsed() < WAIT {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        log = runner.log();
    }
    let handled: Vec<&str> = log.lines().filter(is_handled).collect();
    assert!(!handled.is_empty(), "no log line for the message:\n{log}");
    for line in handled {
        assert!(
            line.contains("\"job_id\":\"job-42\"") && line.contains("\"request_id\""),
            "{line}"
        );
    }
    let s = runner.status().await;
    assert_eq!(fn_status(&s, "diag")["invocations"], 1);
    assert_eq!(s["queue_triggers"][0]["messages"], 1);
}

#[tokio::test]
async fn transient_failures_retry_through_delay_tiers_back_to_their_own_queue_only() {
    let env = TestEnv::new("retry");
    let (topology_path, topology) = env.fast_topology(5, 20);
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest: diag_manifest(|_| {}),
            topology: Some(&topology_path),
            extra_args: vec![],
        },
    );
    let connection = env.connect().await;
    // A second queue taking the same commands must see the message once, not its retries.
    let mut bystander = env
        .watch(&connection, names::COMMANDS_EXCHANGE, "diag.*")
        .await;
    let publisher = env.publisher(topology);
    let fail = Envelope::new(
        diag::FAIL,
        &diag::Fail {
            failure: diag::Failure::Transient,
            until_attempt: Some(3),
        },
    );
    send(&publisher, &fail).await;
    runner
        .wait_for("three attempts", WAIT, |s| {
            fn_status(s, "diag")["invocations"].as_u64() >= Some(3)
        })
        .await;
    let first = bystander
        .next(Duration::from_secs(5))
        .await
        .expect("the bystander gets the original");
    assert_eq!(
        first.basic_properties.message_id,
        Some(fail.message_id.to_string())
    );
    bystander.expect_none(Duration::from_secs(1)).await;
    let mut parked = env.watch_queue(&connection, names::PARKED_QUEUE).await;
    parked.expect_none(Duration::from_millis(500)).await;
    let log = runner.log();
    assert!(log.contains("retry scheduled"), "{log}");
    assert_eq!(env.depth(&connection, "stratus.fn.diag").await, 0);
}

#[tokio::test]
async fn exhausted_and_permanent_failures_are_parked_with_their_reasons() {
    let env = TestEnv::new("park");
    let (topology_path, topology) = env.fast_topology(3, 20);
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest: diag_manifest(|_| {}),
            topology: Some(&topology_path),
            extra_args: vec![],
        },
    );
    let connection = env.connect().await;
    let mut parked = env.watch_queue(&connection, names::PARKED_QUEUE).await;
    let publisher = env.publisher(topology);
    let permanent = Envelope::new(
        diag::FAIL,
        &diag::Fail {
            failure: diag::Failure::Permanent,
            until_attempt: None,
        },
    );
    let exhausted = Envelope::new(
        diag::FAIL,
        &diag::Fail {
            failure: diag::Failure::Transient,
            until_attempt: None,
        },
    );
    send(&publisher, &permanent).await;
    send(&publisher, &exhausted).await;
    let mut reasons = std::collections::HashMap::new();
    for _ in 0..2 {
        let m = parked
            .next(WAIT)
            .await
            .unwrap_or_else(|| panic!("nothing parked; log:\n{}", runner.log()));
        let from = m
            .basic_properties
            .header(names::HEADER_PARKED_FROM)
            .and_then(header_string);
        assert_eq!(from.as_deref(), Some("stratus.fn.diag"));
        reasons.insert(
            m.basic_properties.message_id.clone().unwrap(),
            (parked_reason(&m), Envelope::from_rmq(&m).unwrap().attempt),
        );
    }
    let (reason, attempt) = &reasons[&permanent.message_id.to_string()];
    assert!(reason.contains("asked to fail permanently"), "{reason}");
    assert_eq!(*attempt, 1);
    let (reason, attempt) = &reasons[&exhausted.message_id.to_string()];
    assert!(reason.contains("attempts exhausted (3)"), "{reason}");
    assert_eq!(*attempt, 3);
}

#[tokio::test]
async fn poison_messages_are_parked_and_the_consumer_keeps_going() {
    let env = TestEnv::new("poison");
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest: diag_manifest(|_| {}),
            topology: None,
            extra_args: vec![],
        },
    );
    let connection = env.connect().await;
    let mut parked = env.watch_queue(&connection, names::PARKED_QUEUE).await;
    let mut events = env
        .watch(&connection, names::INTERNAL_EVENTS_EXCHANGE, diag::ECHOED)
        .await;
    let channel = stratus_tests::raw_channel(&connection).await;
    // No message id, no type, not JSON, and no priority: what a careless publisher sends.
    channel
        .basic_publish(
            names::COMMANDS_EXCHANGE.into(),
            "diag.echo".into(),
            Default::default(),
            b"\xff\xfe not json",
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let publisher = env.publisher(broker::topology(&env.config).unwrap());
    let unknown = Envelope::new("diag.unheard-of", &serde_json::json!({}));
    send(&publisher, &unknown).await;
    let bad_body = {
        let mut e = Envelope::new(diag::ECHO, &serde_json::json!({"txet": 1}));
        e.message_type = diag::ECHO.into();
        e
    };
    send(&publisher, &bad_body).await;
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let m = parked
            .next(WAIT)
            .await
            .unwrap_or_else(|| panic!("not parked; log:\n{}", runner.log()));
        reasons.push(parked_reason(&m));
    }
    reasons.sort();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("undecodable: no message id")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("unknown message type \"diag.unheard-of\"")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("does not decode as diag.echo")),
        "{reasons:?}"
    );
    // The consumer is alive and well.
    let echo = Envelope::new(
        diag::ECHO,
        &diag::Echo {
            text: "still here".into(),
        },
    );
    send(&publisher, &echo).await;
    assert!(
        events.next(WAIT).await.is_some(),
        "no echo after the poison; log:\n{}",
        runner.log()
    );
    let s = runner.status().await;
    assert_eq!(s["queue_triggers"][0]["failed_batches"], 0, "{s:#}");
}

#[tokio::test]
async fn an_instance_killed_mid_batch_loses_nothing() {
    let env = TestEnv::new("kill");
    let manifest =
        diag_manifest(|m| m["functions"][0]["triggers"][0]["batching_window_ms"] = 300.into());
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest,
            topology: None,
            extra_args: vec![],
        },
    );
    let connection = env.connect().await;
    let mut events = env
        .watch(&connection, names::INTERNAL_EVENTS_EXCHANGE, diag::ECHOED)
        .await;
    let publisher = env.publisher(broker::topology(&env.config).unwrap());
    // One batch: echoes, then a slow message during which the instance is killed.
    let mut sent = HashSet::new();
    for i in 0..5 {
        let e = Envelope::new(
            diag::ECHO,
            &diag::Echo {
                text: format!("n{i}"),
            },
        );
        sent.insert(e.message_id.to_string());
        send(&publisher, &e).await;
    }
    send(
        &publisher,
        &Envelope::new(diag::SLEEP, &diag::Sleep { millis: 1500 }),
    )
    .await;
    let s = runner
        .wait_for("a busy instance", WAIT, |s| {
            fn_status(s, "diag")["in_flight"] == 1
        })
        .await;
    let pid = fn_status(&s, "diag")["instances"][0]["pid"]
        .as_u64()
        .unwrap();
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    let mut answered = HashSet::new();
    while answered.len() < sent.len() {
        let m = events.next(WAIT).await.unwrap_or_else(|| {
            panic!(
                "lost echoes: got {answered:?} of {sent:?}; log:\n{}",
                runner.log()
            )
        });
        let body: diag::Echoed = Envelope::from_rmq(&m).unwrap().body().unwrap();
        answered.insert(body.in_reply_to);
    }
    assert_eq!(answered, sent);
    let s = runner
        .wait_for("the queue drained", WAIT, |s| {
            s["queue_triggers"][0]["depth"] == 0 && fn_status(s, "diag")["in_flight"] == 0
        })
        .await;
    assert!(
        fn_status(&s, "diag")["crashes"].as_u64() >= Some(1),
        "{s:#}"
    );
    assert!(
        s["queue_triggers"][0]["failed_batches"].as_u64() >= Some(1),
        "{s:#}"
    );
}

#[tokio::test]
async fn an_overrun_timeout_kills_the_instance_and_the_delivery_limit_parks_the_message() {
    let env = TestEnv::new("timeout");
    let (topology_path, topology) = env.fast_topology(5, 2);
    let manifest = diag_manifest(|m| m["functions"][0]["timeout_seconds"] = 1.into());
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest,
            topology: Some(&topology_path),
            extra_args: vec![],
        },
    );
    let connection = env.connect().await;
    let mut parked = env.watch_queue(&connection, names::PARKED_QUEUE).await;
    let publisher = env.publisher(topology);
    let slow = Envelope::new(diag::SLEEP, &diag::Sleep { millis: 5000 });
    send(&publisher, &slow).await;
    let m = parked
        .next(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("not parked; log:\n{}", runner.log()));
    assert_eq!(
        m.basic_properties.message_id,
        Some(slow.message_id.to_string())
    );
    // Parked by the broker's delivery limit (x-death) or by the harness's check of x-delivery-count.
    let by_broker = m.basic_properties.header("x-death").is_some();
    assert!(
        by_broker || parked_reason(&m).contains("delivery count"),
        "{m:?}"
    );
    let s = runner.status().await;
    let f = fn_status(&s, "diag");
    assert!(f["timeouts"].as_u64() >= Some(1), "{s:#}");
    assert!(
        runner.log().contains("Task timed out after 1.00 seconds"),
        "{}",
        runner.log()
    );
    // A fresh instance serves what comes next.
    stratus_tests::assert_echo_flows(&env, &publisher, &runner, "after").await;
}

#[tokio::test]
async fn a_message_that_crashes_its_function_is_parked_and_the_instance_replaced() {
    let env = TestEnv::new("crash");
    let (topology_path, topology) = env.fast_topology(5, 2);
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest: diag_manifest(|_| {}),
            topology: Some(&topology_path),
            extra_args: vec![],
        },
    );
    let connection = env.connect().await;
    let mut parked = env.watch_queue(&connection, names::PARKED_QUEUE).await;
    let publisher = env.publisher(topology);
    let exit = Envelope::new(diag::EXIT, &diag::Exit { code: 3 });
    send(&publisher, &exit).await;
    let m = parked
        .next(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("not parked; log:\n{}", runner.log()));
    assert_eq!(
        m.basic_properties.message_id,
        Some(exit.message_id.to_string())
    );
    let s = runner.status().await;
    assert!(
        fn_status(&s, "diag")["crashes"].as_u64() >= Some(2),
        "{s:#}"
    );
    stratus_tests::assert_echo_flows(&env, &publisher, &runner, "after").await;
}

/// An invocation whose caller hangs up (a client that gave up on the Invoke
/// API, or on the gateway) still ends at its deadline: the instance is killed
/// and counted as a timeout, and the next invocation is served. The deadline
/// used to live in the caller's request: hyper dropped it with the
/// connection, the instance stayed busy for good, and every later invocation
/// waited for it (issue 14: `IN-FLIGHT 4 TIMEOUTS 0`, the API gone).
#[tokio::test]
async fn an_invocation_whose_caller_hangs_up_still_ends_at_its_deadline() {
    let env = TestEnv::new("hangup");
    let manifest = diag_manifest(|m| {
        m["functions"][0]["timeout_seconds"] = 2.into();
        m["functions"][0]["max_instances"] = 1.into();
    });
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest,
            topology: None,
            extra_args: vec![],
        },
    );
    let url = format!(
        "http://{}/2015-03-31/functions/diag/invocations",
        runner.runtime_api
    );
    let slow =
        stratus_tests::events::rmq_sample(diag::SLEEP, &serde_json::json!({ "millis": 60000 }));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let token = runner.token.clone().expect("the runner's token");
    let hung_up = impatient
        .post(&url)
        .bearer_auth(&token)
        .json(&slow)
        .send()
        .await;
    assert!(hung_up.is_err(), "the sleep answered: {hung_up:?}");
    let s = runner
        .wait_for("the timeout counted", Duration::from_secs(15), |s| {
            fn_status(s, "diag")["timeouts"] == 1 && fn_status(s, "diag")["in_flight"] == 0
        })
        .await;
    assert_eq!(fn_status(&s, "diag")["errors"], 1, "{s:#}");
    // The next invocation gets a fresh instance and its answer.
    let echo =
        stratus_tests::events::rmq_sample(diag::ECHO, &serde_json::json!({ "text": "next" }));
    let answer = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .post(&url)
        .bearer_auth(&token)
        .json(&echo)
        .send()
        .await
        .expect("the next invocation answered");
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers().get("x-amz-function-error").is_none(),
        "{:?}",
        answer.text().await
    );
}
