//! Disruptive tests: they stop and start the broker's application, which every
//! other test shares, so `scripts/test` runs this binary serially and last.
//! Test names start with `disruptive_` so that the main run skips them.

use std::process::Command;
use std::time::Duration;

use stratus_contracts::message_types::diag;
use stratus_contracts::names;
use stratus_messaging::Envelope;
use stratus_messaging::broker;
use stratus_tests::{Runner, RunnerOptions, TestEnv, diag_manifest, send};

const WAIT: Duration = Duration::from_secs(60);

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl").args(args).status().unwrap();
    assert!(status.success(), "rabbitmqctl {args:?}");
}

#[tokio::test]
async fn disruptive_the_platform_recovers_from_a_broker_restart() {
    let env = TestEnv::new("restart");
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest: diag_manifest(|_| {}),
            topology: None,
            extra_args: vec![],
        },
    );
    let topology = broker::topology(&env.config).unwrap();
    let publisher = env.publisher(topology.clone());
    {
        stratus_tests::assert_echo_flows(&env, &publisher, &runner, "before").await;
        // A message that waits in the queue across the restart: the slow one holds the instance.
        send(
            &publisher,
            &Envelope::new(diag::SLEEP, &diag::Sleep { millis: 300 }),
        )
        .await;
    }
    rabbitmqctl(&["-q", "stop_app"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["-q", "start_app"]);
    rabbitmqctl(&["-q", "await_startup"]);

    let connection = env.connect().await;
    let mut events = env
        .watch(&connection, names::INTERNAL_EVENTS_EXCHANGE, diag::ECHOED)
        .await;
    // The test's own publisher reconnects, and so do the trigger and the function's publisher.
    let after = Envelope::new(
        diag::ECHO,
        &diag::Echo {
            text: "after".into(),
        },
    );
    send(&publisher, &after).await;
    let reply = events
        .next(WAIT)
        .await
        .unwrap_or_else(|| panic!("no echo after the restart; log:\n{}", runner.log()));
    let body: diag::Echoed = Envelope::from_rmq(&reply).unwrap().body().unwrap();
    assert_eq!(body.in_reply_to, after.message_id.to_string());
    let s = runner
        .wait_for("the queue drained", WAIT, |s| {
            s["queue_triggers"][0]["depth"] == 0 && s["functions"][0]["in_flight"] == 0
        })
        .await;
    assert!(
        s["queue_triggers"][0]["reconnects"].as_u64() >= Some(1),
        "{s:#}"
    );
    assert!(
        runner
            .log()
            .contains("queue trigger lost its broker connection")
    );
}

// ---------------------------------------------------------------------------
// The CloudStack API and its jobs under broker faults with work in flight
// (issues 9 and 14): a stream of requests and async jobs from several clients
// while the broker restarts at random points, function instances are killed,
// and the broker is paused past its heartbeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use rand::Rng;
use serde_json::Value;
use stratus_tests::cloudstack::Platform;
use stratus_tests::faults::{self, BrokerFault};

/// Clients submitting requests at once.
const CLIENTS: usize = 3;
/// The pause between one client's rounds of requests.
const CLIENT_PAUSE: Duration = Duration::from_millis(120);
/// How long a client waits for any answer: past it, the request hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound on a signed listZones once the broker is back (it does not use
/// the broker at all, so it also holds while the broker is away). Measured
/// well under a second; the bound leaves room for a cold start (up to ~1 s
/// here) behind a killed instance, on a loaded 2-core machine.
const LIST_ZONES_BOUND: Duration = Duration::from_secs(5);
/// Every job submitted has ended this long after the last fault.
const JOBS_END_BOUND: Duration = Duration::from_secs(120);

/// What the clients saw.
#[derive(Default)]
struct Seen {
    jobs: std::sync::Mutex<Vec<String>>,
    /// Answers other than 200, with what they said.
    failures: std::sync::Mutex<Vec<String>>,
    /// Requests that got no answer within CLIENT_TIMEOUT.
    hung: AtomicU64,
    requests: AtomicU64,
    slowest_ms: AtomicU64,
}

struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the clients, one account each: disableAccount (async), enableAccount, listZones.
    fn start(p: &Platform, accounts: &[String]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let clients = accounts
            .iter()
            .map(|account| {
                let (stop, seen) = (stop.clone(), seen.clone());
                let (endpoint, key, secret) = (p.endpoint.clone(), p.key.clone(), p.secret.clone());
                let account = account.clone();
                tokio::spawn(async move {
                    let http = reqwest::Client::builder()
                        .timeout(CLIENT_TIMEOUT)
                        .build()
                        .unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        for params in [
                            vec![
                                ("command", "disableAccount"),
                                ("id", account.as_str()),
                                ("lock", "false"),
                            ],
                            vec![("command", "enableAccount"), ("id", account.as_str())],
                            vec![("command", "listZones")],
                        ] {
                            let query = Platform::signed(&key, &secret, &params);
                            let started = Instant::now();
                            let answer = http.get(format!("{endpoint}?{query}")).send().await;
                            seen.requests.fetch_add(1, Ordering::Relaxed);
                            let answer = match answer {
                                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                                Err(e) => {
                                    seen.hung.fetch_add(1, Ordering::Relaxed);
                                    seen.failures
                                        .lock()
                                        .unwrap()
                                        .push(format!("{}: no answer: {e}", params[0].1));
                                    continue;
                                }
                            };
                            seen.slowest_ms
                                .fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                            match answer {
                                (200, body) if params[0].1 == "disableAccount" => {
                                    let v: Value = serde_json::from_str(&body).unwrap();
                                    let job = v["disableaccountresponse"]["jobid"]
                                        .as_str()
                                        .unwrap_or_else(|| panic!("{body}"));
                                    seen.jobs.lock().unwrap().push(job.to_string());
                                }
                                (200, _) => {}
                                (status, body) => seen
                                    .failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("{}: {status} {body}", params[0].1)),
                            }
                        }
                        tokio::time::sleep(CLIENT_PAUSE).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            seen,
            clients,
        }
    }

    async fn stop(self) -> Arc<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients {
            c.await.unwrap();
        }
        self.seen
    }
}

/// The time until a signed listZones answers 200 (each try bounded by the client timeout).
async fn time_to_list_zones(p: &Platform) -> Duration {
    let http = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap();
    let started = Instant::now();
    loop {
        let query = Platform::signed(&p.key, &p.secret, &[("command", "listZones")]);
        if let Ok(r) = http.get(format!("{}?{query}", p.endpoint)).send().await
            && r.status() == 200
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "listZones never answered; log:\n{}",
            p.runner.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every page of a list command's `key` items.
async fn all_pages(p: &Platform, params: &[(&str, &str)], response: &str, key: &str) -> Vec<Value> {
    let mut items = Vec::new();
    for page in 1.. {
        let page = page.to_string();
        let mut with_page = params.to_vec();
        with_page.extend([("page", page.as_str()), ("pagesize", "500")]);
        let (status, body) = p.get(&with_page).await;
        assert_eq!(status, 200, "{body}");
        let got = body[response][key].as_array().cloned().unwrap_or_default();
        if got.is_empty() {
            return items;
        }
        items.extend(got);
    }
    unreachable!()
}

/// Waits until the orchestrator's trigger consumes again: a consumer on the
/// broker, and the status saying so.
async fn wait_for_the_orchestrator_consumer(p: &Platform) -> Value {
    p.runner
        .wait_for(
            "the orchestrator's consumer back",
            Duration::from_secs(60),
            |s| {
                s["queue_triggers"].as_array().unwrap().iter().any(|t| {
                    t["function"] == "orchestrator"
                        && t["consumers"].as_u64() >= Some(1)
                        && t["pollers"] == t["wanted"]
                })
            },
        )
        .await
}

/// The status and the processes agree (retried briefly: an instance killed
/// a moment ago is listed until its exit is reaped).
async fn assert_status_tells_the_truth(p: &Platform) {
    // The status and /proc are read one after the other, and instances come
    // and go under the load: the two must agree at some moment within the
    // bound, and a status that lies never does.
    let started = Instant::now();
    loop {
        let status = p.runner.status().await;
        let Some(why) = faults::status_disagreement(&status, p.runner.pid()) else {
            return;
        };
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "for 10 s: {why}: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kills one instance of `function` with SIGKILL, if it has one; whether it did.
async fn kill_an_instance(p: &Platform, function: &str) -> bool {
    let f = p.runner.function(function).await;
    let pids: Vec<u32> = f["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_u64().unwrap() as u32)
        .collect();
    if pids.is_empty() {
        return false;
    }
    let pid = pids[rand::rng().random_range(0..pids.len())];
    faults::signal(pid, libc::SIGKILL);
    true
}

/// Every job submitted ended with success, exactly once: the orchestrator
/// recorded one ACCOUNT.DISABLE event per job, never two.
async fn assert_every_job_ended_once(p: &Platform, seen: &Seen) {
    let submitted: std::collections::BTreeSet<String> =
        seen.jobs.lock().unwrap().iter().cloned().collect();
    assert!(!submitted.is_empty(), "no job was submitted");
    let started = Instant::now();
    let jobs = loop {
        let jobs = all_pages(
            p,
            &[("command", "listAsyncJobs")],
            "listasyncjobsresponse",
            "asyncjobs",
        )
        .await;
        let pending = jobs.iter().filter(|j| j["jobstatus"] == 0).count();
        if pending == 0 {
            break jobs;
        }
        assert!(
            started.elapsed() < JOBS_END_BOUND,
            "{pending} of {} jobs still pending after {JOBS_END_BOUND:?}; status {:#}\nlog:\n{}",
            jobs.len(),
            p.runner.status().await,
            p.runner.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let disable_jobs: Vec<&Value> = jobs
        .iter()
        .filter(|j| {
            j["cmd"]
                .as_str()
                .is_some_and(|c| c.ends_with("DisableAccountCmd"))
        })
        .collect();
    let listed: std::collections::BTreeSet<String> = disable_jobs
        .iter()
        .map(|j| j["jobid"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&String> = submitted.difference(&listed).collect();
    assert!(
        lost.is_empty(),
        "jobs answered to clients but not recorded: {lost:?}"
    );
    let failed: Vec<&&Value> = disable_jobs
        .iter()
        .filter(|j| j["jobstatus"] != 1)
        .collect();
    assert!(failed.is_empty(), "jobs that did not succeed: {failed:#?}");
    let events = all_pages(
        p,
        &[("command", "listEvents"), ("type", "ACCOUNT.DISABLE")],
        "listeventsresponse",
        "event",
    )
    .await;
    assert_eq!(
        events.len(),
        disable_jobs.len(),
        "one ACCOUNT.DISABLE event per job: {} events for {} jobs",
        events.len(),
        disable_jobs.len()
    );
    eprintln!(
        "jobs: {} submitted by the clients, {} recorded, all ended with success, {} events",
        submitted.len(),
        disable_jobs.len(),
        events.len()
    );
}

fn accounts(p: &Platform) -> Vec<String> {
    (0..CLIENTS)
        .map(|i| p.create_user(&format!("load{i}")).account_id)
        .collect()
}

/// Allowed client failures: requests in flight on an API instance that was
/// killed end with API Gateway's 500; nothing else fails, and nothing hangs.
fn assert_only_killed_requests_failed(seen: &Seen, api_kills: usize) {
    let failures = seen.failures.lock().unwrap();
    assert_eq!(
        seen.hung.load(Ordering::Relaxed),
        0,
        "requests that hung: {failures:#?}"
    );
    for f in failures.iter() {
        assert!(
            f.contains(": 500 {\"message\":\"Internal Server Error\"}"),
            "a request failed: {f}\nall: {failures:#?}"
        );
    }
    assert!(
        failures.len() <= api_kills * CLIENTS,
        "{} failures for {api_kills} API instances killed: {failures:#?}",
        failures.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disruptive_jobs_and_requests_survive_broker_restarts_mid_batch() {
    const ROUNDS: usize = 10;
    let env = TestEnv::new("restarts");
    let p = Platform::start_with(&env, |m| {
        stratus_tests::cloudstack::set_env(m, "outbox-relay", "STRATUS_OUTBOX_GRACE_MS", "1000");
    });
    let load = Load::start(&p, &accounts(&p));
    let mut api_kills = 0;
    let mut figures = Vec::new();
    for round in 0..ROUNDS {
        // A random point in the stream: batches and publishes are in flight.
        let wait = rand::rng().random_range(300..2500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let fault = if round % 3 == 2 {
            BrokerFault::Kill
        } else {
            BrokerFault::StopApp
        };
        let jobs_before = load.seen.jobs.lock().unwrap().len();
        let broker_down = tokio::task::spawn_blocking(move || {
            faults::broker_down_and_up(fault, Duration::from_secs(3))
        });
        // In every other round, function instances die while the broker is away.
        if round % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            kill_an_instance(&p, "orchestrator").await;
            if kill_an_instance(&p, "api").await {
                api_kills += 1;
            }
        }
        broker_down.await.unwrap();
        let list_zones = time_to_list_zones(&p).await;
        let consumer = Instant::now();
        wait_for_the_orchestrator_consumer(&p).await;
        let consumer = consumer.elapsed();
        let jobs = load.seen.jobs.lock().unwrap().len();
        eprintln!(
            "round {round} ({fault:?} after {wait} ms): listZones answered in {} ms, the orchestrator consumed again after {} ms, {} jobs submitted meanwhile",
            list_zones.as_millis(),
            consumer.as_millis(),
            jobs - jobs_before
        );
        figures.push((list_zones, consumer));
        assert!(
            list_zones < LIST_ZONES_BOUND,
            "round {round}: listZones took {list_zones:?}; log:\n{}",
            p.runner.log()
        );
        assert_status_tells_the_truth(&p).await;
    }
    let seen = load.stop().await;
    eprintln!(
        "{} requests; slowest answer {} ms; failures {:?}",
        seen.requests.load(Ordering::Relaxed),
        seen.slowest_ms.load(Ordering::Relaxed),
        seen.failures.lock().unwrap()
    );
    assert_only_killed_requests_failed(&seen, api_kills);
    assert_every_job_ended_once(&p, &seen).await;
    wait_for_the_orchestrator_consumer(&p).await;
    assert_status_tells_the_truth(&p).await;
    let log = p.runner.log();
    assert!(
        log.contains("queue trigger lost its broker connection"),
        "no reconnect was logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn disruptive_a_broker_paused_past_its_heartbeat() {
    let env = TestEnv::new("paused");
    let p = Platform::start_with(&env, |m| {
        stratus_tests::cloudstack::set_env(m, "outbox-relay", "STRATUS_OUTBOX_GRACE_MS", "1000");
    });
    let load = Load::start(&p, &accounts(&p));
    tokio::time::sleep(Duration::from_millis(rand::rng().random_range(500..2000))).await;
    let broker = faults::broker_pid();
    faults::signal(broker, libc::SIGSTOP);
    // Paused past twice the heartbeat (10 s): every connection is given up on both sides.
    let paused = Instant::now();
    let mut during = Vec::new();
    while paused.elapsed() < Duration::from_secs(25) {
        // The API answers while the broker is paused: reads never touch it,
        // and a job's publish gives up within the broker wait (the relay sends it later).
        during.push(time_to_list_zones(&p).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let jobs_during = load.seen.jobs.lock().unwrap().len();
    faults::signal(broker, libc::SIGCONT);
    faults::wait_for_broker(Duration::from_secs(60));
    let resumed = Instant::now();
    wait_for_the_orchestrator_consumer(&p).await;
    let consumer = resumed.elapsed();
    let list_zones = time_to_list_zones(&p).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = load.stop().await;
    let slowest_during = during.iter().max().unwrap();
    eprintln!(
        "paused 25 s: listZones answered in at most {} ms during the pause ({} tries); {} jobs submitted by then; the orchestrator consumed again {} ms after the resume; listZones after it {} ms; slowest answer to a client {} ms",
        slowest_during.as_millis(),
        during.len(),
        jobs_during,
        consumer.as_millis(),
        list_zones.as_millis(),
        seen.slowest_ms.load(Ordering::Relaxed)
    );
    assert!(
        *slowest_during < LIST_ZONES_BOUND,
        "listZones took {slowest_during:?} while the broker was paused"
    );
    assert_only_killed_requests_failed(&seen, 0);
    assert_every_job_ended_once(&p, &seen).await;
    assert_status_tells_the_truth(&p).await;
}

// ---------------------------------------------------------------------------
// The VM sagas across broker restarts (issue 10): ten deploys in flight, the
// agents' steps slowed down (configureSimulator waits) so that the restart
// lands mid-saga; every job ends with its VM Running and whole; then every
// VM is destroyed (expunge=true) across a second restart (kill -9 and a
// fresh start) and the platform is as it was before the deploys. Like the
// tests above, it restarts the broker that rabbitmqctl's environment names
// (RABBITMQ_NODENAME etc. with STRATUS_AMQP_URL point it at a second node).
// The fleet, the waits and the checks are shared with tests/tests/vm_faults.rs.

use stratus_store::Store;
use stratus_tests::vm_flow::{
    assert_clean, assert_consistent, deploy, destroy, pending, prepare, progress, wait_for_jobs,
};

#[tokio::test(flavor = "multi_thread")]
async fn disruptive_a_broker_restart_mid_deploy_loses_no_job() {
    const DEPLOYS: usize = 10;
    let env = TestEnv::new("vm-restart");
    let p = Platform::start(&env);
    let store = Store::open(&env.config.store, &env.config.table_prefix)
        .await
        .unwrap();
    // Hosts Up, agents passing, the simulator slowed down (no failures).
    let fleet = prepare(&p, 0).await;

    let started = Instant::now();
    let mut jobs = deploy(&p, &fleet, "restart", DEPLOYS).await;
    // Mid-saga: the agents are in their slow steps.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let open = pending(&p, &mut jobs).await;
    let at = progress(&store).await;
    let restart_at = started.elapsed();
    tokio::task::spawn_blocking(|| {
        faults::broker_down_and_up(BrokerFault::StopApp, Duration::from_secs(3))
    })
    .await
    .unwrap();
    let back = started.elapsed();
    println!(
        "deploys: {DEPLOYS} submitted; broker stop_app at {:.1} s with {open} jobs open (sagas {at}), back at {:.1} s",
        restart_at.as_secs_f64(),
        back.as_secs_f64()
    );
    assert!(
        open > 0,
        "every job had ended before the restart: the test proved nothing"
    );
    let waited = wait_for_jobs(&p, &store, &mut jobs, "deploys").await;
    // Every VM Running and whole; the hosts and agents hold exactly them.
    let outcome = assert_consistent(&env, &store, &jobs).await;
    println!(
        "deploys: every job ended {:.1} s after the broker was back: {} succeeded, {} failed {:?}",
        waited.as_secs_f64(),
        outcome.succeeded,
        outcome.failed.len(),
        outcome.failed
    );
    assert!(
        outcome.failed.is_empty() && outcome.succeeded == DEPLOYS && outcome.undo_failed == 0,
        "deploys that failed across the restart: {:#?} (undo-failed steps: {})",
        outcome.failed,
        outcome.undo_failed
    );

    // Every VM destroyed and expunged, across a kill -9 of the broker.
    let vms: Vec<String> = jobs.iter().map(|j| j.vm.clone()).collect();
    let started = Instant::now();
    let mut destroys = destroy(&p, &vms).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let open = pending(&p, &mut destroys).await;
    let at = progress(&store).await;
    let restart_at = started.elapsed();
    tokio::task::spawn_blocking(|| {
        faults::broker_down_and_up(BrokerFault::Kill, Duration::from_secs(3))
    })
    .await
    .unwrap();
    let waited = wait_for_jobs(&p, &store, &mut destroys, "destroys").await;
    let failed: Vec<String> = destroys
        .iter()
        .filter(|j| j.status != 1)
        .map(|j| format!("{}: {}", j.vm, j.result))
        .collect();
    println!(
        "destroys: broker killed at {:.1} s with {open} jobs open (sagas {at}); every job ended {:.1} s after it was back; failed {failed:?}",
        restart_at.as_secs_f64(),
        waited.as_secs_f64()
    );
    assert!(failed.is_empty(), "destroys that failed: {failed:#?}");
    // No VM, NIC, volume, reservation or held address; the agents empty
    // (within a bound: a late copy of a command is undone again); capacity
    // as before the deploys.
    assert_clean(&env, &p, &store, &fleet).await;
    println!(
        "after the destroys: capacity {:?} as before; no VM, NIC or volume left; the agents hold nothing",
        fleet.capacity
    );
}
