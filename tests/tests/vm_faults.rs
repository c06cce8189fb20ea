//! The VM sagas with work in flight under process faults: ten deploys at
//! once while orchestrator instances, host agents, or the network, compute
//! and storage instances are killed with SIGKILL. Every job ends, and each
//! ends either with its VM Running and whole (NICs, volumes Ready, capacity
//! held, the VM and its volumes on the host) or failed with a clean slate for
//! that VM (VM Error, no NIC, no volume, no capacity, nothing on any host);
//! never a VM half made. Then every VM is destroyed with expunge=true and the
//! platform is as it was: capacity back, no VM, NIC or volume row left, the
//! agents' state files empty.
//!
//! The agents' simulator is slowed down (configureSimulator waits) so that
//! the kills land while sagas are in their agent steps, and the next two
//! starts fail on purpose, so that two deploys unwind under the kills too.
//! A kill may fail no job: the only failures allowed are those two.
//!
//! `saga.step.timeout` is set to 60 s so that a step lost to a kill fails
//! its job by timeout (a failure the tests refuse) well within the wait for
//! the jobs, instead of leaving it pending past it.

use std::time::{Duration, Instant};

use stratus_model::*;
use stratus_store::{Index, Store};
use stratus_tests::TestEnv;
use stratus_tests::cloudstack::Platform;
use stratus_tests::faults;
use stratus_tests::vm_flow::*;

/// Deploys at once.
const DEPLOYS: usize = 10;

/// Which processes the test kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victims {
    /// Every orchestrator function instance.
    Orchestrator,
    /// Every host agent (the runner's supervisor restarts them).
    Agents,
    /// The network, compute and storage function instances, busy ones first.
    Components,
}

/// The host agents' pids (those running now).
async fn agent_pids(p: &Platform) -> Vec<u32> {
    p.runner.status().await["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pr| pr["name"].as_str().is_some_and(|n| n.starts_with("agent-")))
        .filter_map(|pr| pr["pid"].as_u64())
        .map(|p| p as u32)
        .collect()
}

/// The live instances of `function` the runner `runner` started, from
/// /proc: pid, and whether it runs (an idle instance is frozen, `T`).
fn function_instances(runner: u32, function: &str) -> Vec<(u32, bool)> {
    // The kernel keeps 15 bytes of the name.
    let comm: String = format!("stratus-fn-{function}").chars().take(15).collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().unwrap_or("");
        let ppid: u32 = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == runner && stat[open + 1..close] == comm && state != "Z" {
            found.push((pid, !matches!(state, "T" | "t")));
        }
    }
    found
}

/// Kills every instance of each of `functions` as soon as one of its
/// instances runs (mid-batch: idle instances are frozen) within `window`,
/// or whatever instances it has at the end of the window. What was killed,
/// as (what, pid).
async fn kill_functions(p: &Platform, functions: &[&str], window: Duration) -> Vec<(String, u32)> {
    let runner = p.runner.pid();
    let mut killed = Vec::new();
    let mut left: Vec<&str> = functions.to_vec();
    let started = Instant::now();
    while !left.is_empty() {
        let last = started.elapsed() >= window;
        left.retain(|f| {
            let instances = function_instances(runner, f);
            if !(last || instances.iter().any(|(_, running)| *running)) {
                return true;
            }
            for (pid, running) in instances {
                faults::signal(pid, libc::SIGKILL);
                killed.push((
                    format!("{f} ({})", if running { "running" } else { "frozen" }),
                    pid,
                ));
            }
            false
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    killed
}

/// One round of kills; what was killed, as (what, pid).
async fn kill_round(p: &Platform, victims: Victims) -> Vec<(String, u32)> {
    match victims {
        Victims::Orchestrator => {
            kill_functions(p, &["orchestrator"], Duration::from_millis(1000)).await
        }
        Victims::Agents => {
            let mut killed = Vec::new();
            for pid in agent_pids(p).await {
                faults::signal(pid, libc::SIGKILL);
                killed.push(("agent".to_string(), pid));
            }
            killed
        }
        Victims::Components => {
            kill_functions(
                p,
                &["network", "compute", "storage"],
                Duration::from_millis(1000),
            )
            .await
        }
    }
}

/// One round of kills as it went: what was killed, how many jobs were open.
struct Round {
    killed: Vec<(String, u32)>,
    open_jobs: usize,
}

/// Kill rounds while the sagas run: `rounds` rounds, `every` apart, the first
/// after `first`. Prints each round with the sagas' progress at that moment.
#[allow(clippy::too_many_arguments)]
async fn kill_rounds(
    p: &Platform,
    store: &Store,
    jobs: &mut [Job],
    victims: Victims,
    first: Duration,
    every: Duration,
    rounds: usize,
    started: Instant,
) -> Vec<Round> {
    let mut all = Vec::new();
    tokio::time::sleep(first).await;
    for round in 0..rounds {
        if round > 0 {
            tokio::time::sleep(every).await;
        }
        let open_jobs = pending(p, jobs).await;
        let sagas = progress(store).await;
        let at = started.elapsed();
        let killed = kill_round(p, victims).await;
        println!(
            "  kill round {round} at {:.1} s: {open_jobs} jobs open, sagas {sagas}; killed {:?}",
            at.as_secs_f64(),
            killed
        );
        all.push(Round { killed, open_jobs });
    }
    all
}

/// The kills landed while jobs were open; how many processes were killed.
fn assert_kills_landed(rounds: &[Round], what: &str) -> usize {
    let mid = rounds
        .iter()
        .filter(|r| r.open_jobs > 0 && !r.killed.is_empty())
        .count();
    assert!(
        mid > 0,
        "{what}: no round killed anything while jobs were open: the test proved nothing"
    );
    rounds.iter().map(|r| r.killed.len()).sum()
}

/// Ten deploys with `victims` killed while they run; every job ends and the
/// platform is consistent; then every VM is destroyed (with the same kills
/// during the destroys when `during_destroy`), and the platform is clean.
async fn deploys_survive(name: &str, victims: Victims, during_destroy: bool) -> Outcome {
    /// Starts that fail on purpose: those deploys unwind while the kills go on.
    const FAILED_STARTS: u32 = 2;
    let env = TestEnv::new(name);
    let p = Platform::start(&env);
    let store = Store::open(&env.config.store, &env.config.table_prefix)
        .await
        .unwrap();
    let fleet = prepare(&p, FAILED_STARTS).await;
    let started = Instant::now();
    let mut jobs = deploy(&p, &fleet, "fault", DEPLOYS).await;
    println!(
        "{name}: {} deploys submitted in {:.1} s",
        jobs.len(),
        started.elapsed().as_secs_f64()
    );
    let (first, every, rounds) = match victims {
        // The orchestrator and the agents: a second apart, three times, while
        // the agents' slow steps run.
        Victims::Orchestrator => (Duration::from_millis(300), Duration::from_secs(1), 3),
        Victims::Agents => (Duration::from_millis(1000), Duration::from_secs(1), 3),
        // The components' steps come first in the saga and are short.
        Victims::Components => (Duration::ZERO, Duration::from_millis(300), 4),
    };
    let rounds = kill_rounds(
        &p, &store, &mut jobs, victims, first, every, rounds, started,
    )
    .await;
    let kills = assert_kills_landed(&rounds, "deploys");
    let last_fault = Instant::now();
    let waited = wait_for_jobs(&p, &store, &mut jobs, "deploys").await;
    println!(
        "{name}: {kills} processes killed in {} rounds; every deploy ended {:.1} s after the last kill ({:.1} s after the submits)",
        rounds.len(),
        waited.as_secs_f64(),
        (last_fault - started).as_secs_f64() + waited.as_secs_f64()
    );
    let (figures, returned) = runner_figures(&p).await;
    println!("{name}: runner: {figures}");
    // Mid-batch: some kill found an invocation in flight, whose batch went back to the queue.
    let killed_functions: &[&str] = match victims {
        Victims::Orchestrator => &["orchestrator"],
        Victims::Components => &["network", "compute", "storage"],
        Victims::Agents => &[],
    };
    if !killed_functions.is_empty() {
        let mid_batch: u64 = killed_functions
            .iter()
            .filter_map(|f| returned.get(*f))
            .sum();
        assert!(
            mid_batch > 0,
            "no kill hit an invocation in flight ({returned:?}): the test proved nothing"
        );
    }
    let outcome = assert_consistent(&env, &store, &jobs).await;
    println!(
        "{name}: deploys: {} succeeded, {} failed {:?}; steps timed out {}, parked messages {}, undo-failed steps {}",
        outcome.succeeded,
        outcome.failed.len(),
        outcome.failed,
        outcome.timed_out_steps,
        outcome.parked,
        outcome.undo_failed
    );
    // The kills fail no job: the only failures are the starts failed on
    // purpose (a step lost to a kill would fail its job by timeout, cleanly).
    let by_fault: Vec<&String> = outcome
        .failed
        .iter()
        .filter(|f| !f.ends_with(": Simulated failure"))
        .collect();
    assert!(
        by_fault.is_empty() && outcome.failed.len() <= FAILED_STARTS as usize,
        "jobs failed by the kills: {by_fault:#?} (all failures: {:#?})",
        outcome.failed
    );

    // Destroy all, expunged.
    let vms: Vec<String> = jobs.iter().map(|j| j.vm.clone()).collect();
    let started = Instant::now();
    let mut destroys = destroy(&p, &vms).await;
    let mut destroy_kills = 0;
    if during_destroy {
        let rounds = kill_rounds(
            &p,
            &store,
            &mut destroys,
            victims,
            Duration::from_millis(500),
            Duration::from_secs(1),
            2,
            started,
        )
        .await;
        destroy_kills = assert_kills_landed(&rounds, "destroys");
    }
    let waited = wait_for_jobs(&p, &store, &mut destroys, "destroys").await;
    let failed: Vec<String> = destroys
        .iter()
        .filter(|j| j.status != 1)
        .map(|j| format!("{}: {}", j.vm, j.result))
        .collect();
    println!(
        "{name}: {} destroys ({destroy_kills} processes killed during them) ended {:.1} s after the submits (the wait {:.1} s); failed: {failed:?}",
        destroys.len(),
        started.elapsed().as_secs_f64(),
        waited.as_secs_f64()
    );
    assert!(failed.is_empty(), "destroys that failed: {failed:#?}");
    assert_clean(&env, &p, &store, &fleet).await;
    println!(
        "{name}: after the destroys: capacity {:?} as before, no VM, NIC or volume left, the agents hold nothing",
        fleet.capacity
    );
    outcome
}

#[tokio::test(flavor = "multi_thread")]
async fn an_orchestrator_killed_mid_saga_still_ends_every_job() {
    deploys_survive("vmf-orch", Victims::Orchestrator, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_restarted_mid_saga_still_ends_every_job() {
    deploys_survive("vmf-agent", Victims::Agents, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_killed_mid_batch_loses_no_step() {
    let outcome = deploys_survive("vmf-comp", Victims::Components, false).await;
    assert_eq!(
        outcome.timed_out_steps, 0,
        "a step timed out: a killed component's message was lost"
    );
}

/// What a kill between the orchestrator's publish of a step command and the
/// removal of its outbox row leads to: the outbox relay sends the same
/// command again once the row is older than its grace (5 s). When that late
/// copy of a deploy's `agent.create-volumes` reaches the host after the VM
/// was destroyed and expunged, the agent makes the volumes again; the
/// orchestrator, whose deploy saga is Done and whose VM is gone, undoes them
/// again (`unawaited`), so nothing stays on the host. The orchestrator test
/// met the leak this guards against once in about fifteen runs; here the
/// late copy is sent by hand, as the relay would.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_copy_of_create_volumes_after_the_destroy_leaves_nothing() {
    use stratus_contracts::message_types::saga::{Step, StepRef};
    use stratus_contracts::message_types::{Placement, agent, storage};
    use stratus_contracts::names::{COMMANDS_EXCHANGE, instance_routing_key};
    use stratus_messaging::Envelope;
    use stratus_messaging::publisher::Outgoing;

    let env = TestEnv::new("vmf-late");
    let p = Platform::start(&env);
    let store = Store::open(&env.config.store, &env.config.table_prefix)
        .await
        .unwrap();
    let fleet = prepare(&p, 0).await;
    let mut deployed = deploy(&p, &fleet, "fault", 1).await;
    wait_for_jobs(&p, &store, &mut deployed, "deploy").await;
    assert_eq!(deployed[0].status, 1, "{}", deployed[0].result);
    // The deploy's create-volumes command, as the orchestrator sent it.
    let saga = store
        .walk::<Saga>(&Index::All)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.value.kind == "vm-deploy")
        .unwrap()
        .value;
    let output = |name: &str| {
        saga.steps
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.output.clone())
            .unwrap_or_else(|| panic!("no output of {name}"))
    };
    let placement: Placement = serde_json::from_value(output("reserve-capacity")).unwrap();
    let volumes: storage::VolumesAllocated =
        serde_json::from_value(output("allocate-volumes")).unwrap();
    let mut command = Envelope::new(
        agent::CREATE_VOLUMES,
        &Step {
            saga: StepRef {
                saga_id: saga.id.to_string(),
                step: "create-volumes".into(),
                undo: false,
            },
            input: agent::CreateVolumes {
                vm_id: deployed[0].vm.clone(),
                placement: placement.clone(),
                volumes: volumes.volumes,
            },
        },
    );
    command.job_id = saga.job_id.map(|j| j.to_string());
    let mut destroyed = destroy(&p, &[deployed[0].vm.clone()]).await;
    wait_for_jobs(&p, &store, &mut destroyed, "destroy").await;
    assert_eq!(destroyed[0].status, 1, "{}", destroyed[0].result);
    let hosts: Vec<Host> = store
        .walk::<Host>(&Index::All)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.value)
        .collect();
    let held = || -> Vec<String> {
        agent_states(&env, &hosts)
            .into_iter()
            .filter(|(_, s)| !s.vms.is_empty() || !s.volumes.is_empty())
            .map(|(h, s)| format!("{h}: {s:?}"))
            .collect()
    };
    assert!(held().is_empty(), "before the late copy: {:?}", held());
    // The relay's late copy.
    let publisher = env.publisher(stratus_messaging::broker::topology(&env.config).unwrap());
    publisher
        .publish(Outgoing::envelope(
            COMMANDS_EXCHANGE,
            &instance_routing_key(agent::CREATE_VOLUMES, &placement.host_name),
            &command,
        ))
        .await
        .unwrap();
    // The copy runs (the simulator waits 1 s), its result comes back, and
    // whatever it made must be undone within the bound.
    let sent = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    loop {
        let now = held();
        if now.is_empty() {
            println!(
                "the late copy left nothing after {:.1} s",
                sent.elapsed().as_secs_f64()
            );
            break;
        }
        let saga = store.get::<Saga>(saga.id).await.unwrap().unwrap().value;
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "30 s after a late copy of create-volumes (the VM expunged before it), the hosts hold: {now:#?}\nthe deploy saga's log: {:?}",
            saga.step_log
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
