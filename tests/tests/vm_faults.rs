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

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::Value;
use stratus_agent::sim::{STATE_FILE, SimState, state_dir};
use stratus_model::*;
use stratus_store::{Index, Store};
use stratus_tests::TestEnv;
use stratus_tests::cloudstack::Platform;
use stratus_tests::faults;

/// Deploys at once.
const DEPLOYS: usize = 10;
/// Every job ends within this after the last fault.
const JOBS_END: Duration = Duration::from_secs(180);
/// `saga.step.timeout` for these tests: far above a step's time under load
/// (a few seconds), far below the wait for the jobs.
const STEP_TIMEOUT_S: u64 = 60;

/// What the deploys work with, and the capacity before them.
struct Fleet {
    zone: String,
    offering: String,
    template: String,
    capacity: Vec<(u64, u64, u64)>,
}

/// A job the test submitted: its VM and, once ended, its status and result.
#[derive(Debug, Clone)]
struct Job {
    vm: String,
    job: String,
    status: u64,
    result: Value,
}

/// listCapacity as (type, used, total), sorted.
async fn capacity(p: &Platform) -> Vec<(u64, u64, u64)> {
    let (status, body) = p.get(&[("command", "listCapacity")]).await;
    assert_eq!(status, 200, "{body}");
    let mut c: Vec<(u64, u64, u64)> = body["listcapacityresponse"]["capacity"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|c| {
            (
                c["type"].as_u64().unwrap(),
                c["capacityused"].as_u64().unwrap(),
                c["capacitytotal"].as_u64().unwrap(),
            )
        })
        .collect();
    c.sort();
    c
}

/// The first item of a list answer.
async fn first_id(p: &Platform, params: &[(&str, &str)], response: &str, key: &str) -> String {
    let (status, body) = p.get(params).await;
    assert_eq!(status, 200, "{body}");
    body[response][key][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {body}"))
        .to_string()
}

/// Waits for the hosts to be Up and their agents passing in Consul, then
/// slows the simulator down (and makes the next `failures` starts fail, so
/// that deploys unwind under the faults too), lowers the step timeout and
/// reads the capacity.
async fn prepare(p: &Platform, failures: u32) -> Fleet {
    let consul = p.runner.consul_client();
    let started = Instant::now();
    loop {
        let (_, hosts) = p
            .get(&[("command", "listHosts"), ("type", "Routing")])
            .await;
        let up = hosts["listhostsresponse"]["host"]
            .as_array()
            .map_or(0, |h| h.iter().filter(|h| h["state"] == "Up").count());
        let passing = consul
            .health_service(
                stratus_contracts::names::AGENT_SERVICE,
                true,
                &Default::default(),
            )
            .await
            .map_or(0, |r| r.value.len());
        if up == 3 && passing == 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "hosts Up {up}, agents passing {passing} after 90 s; log:\n{}",
            p.runner.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (name, value) in [
        ("CreateCommand", "wait:1000"),
        ("StartCommand", "wait:2000"),
        ("StopCommand", "wait:1000"),
        ("DestroyCommand", "wait:1000"),
    ] {
        let (status, body) = p
            .get(&[
                ("command", "configureSimulator"),
                ("name", name),
                ("value", value),
            ])
            .await;
        assert_eq!(status, 200, "{body}");
    }
    if failures > 0 {
        // Newer than the plain wait, so it is taken first while it has uses.
        let count = failures.to_string();
        let (status, body) = p
            .get(&[
                ("command", "configureSimulator"),
                ("name", "StartCommand"),
                ("value", "wait:2000;result:fail"),
                ("count", &count),
            ])
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let timeout = STEP_TIMEOUT_S.to_string();
    let (status, body) = p
        .get(&[
            ("command", "updateConfiguration"),
            ("name", "saga.step.timeout"),
            ("value", &timeout),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    let fleet = Fleet {
        zone: first_id(p, &[("command", "listZones")], "listzonesresponse", "zone").await,
        offering: first_id(
            p,
            &[
                ("command", "listServiceOfferings"),
                ("name", "Small Instance"),
            ],
            "listserviceofferingsresponse",
            "serviceoffering",
        )
        .await,
        template: first_id(
            p,
            &[("command", "listTemplates"), ("templatefilter", "all")],
            "listtemplatesresponse",
            "template",
        )
        .await,
        capacity: capacity(p).await,
    };
    // The orchestrator reads settings through a 3 s cache.
    tokio::time::sleep(Duration::from_secs(4)).await;
    fleet
}

/// Submits `n` deploys at once; their VMs and jobs.
async fn deploy(p: &Platform, fleet: &Fleet, n: usize) -> Vec<Job> {
    let names: Vec<String> = (0..n).map(|i| format!("fault-{i}")).collect();
    let answers = join_all(names.iter().map(|name| async move {
        p.get(&[
            ("command", "deployVirtualMachine"),
            ("zoneid", &fleet.zone),
            ("serviceofferingid", &fleet.offering),
            ("templateid", &fleet.template),
            ("name", name),
        ])
        .await
    }))
    .await;
    answers
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, 200, "{body}");
            let r = &body["deployvirtualmachineresponse"];
            Job {
                vm: r["id"].as_str().unwrap_or_else(|| panic!("{body}")).into(),
                job: r["jobid"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{body}"))
                    .into(),
                status: 0,
                result: Value::Null,
            }
        })
        .collect()
}

/// Submits a destroy with expunge=true of each VM at once; their jobs.
async fn destroy(p: &Platform, vms: &[String]) -> Vec<Job> {
    let answers = join_all(vms.iter().map(|vm| async move {
        p.get(&[
            ("command", "destroyVirtualMachine"),
            ("id", vm),
            ("expunge", "true"),
        ])
        .await
    }))
    .await;
    vms.iter()
        .zip(answers)
        .map(|(vm, (status, body))| {
            assert_eq!(status, 200, "{body}");
            Job {
                vm: vm.clone(),
                job: body["destroyvirtualmachineresponse"]["jobid"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{body}"))
                    .into(),
                status: 0,
                result: Value::Null,
            }
        })
        .collect()
}

/// The jobs not ended yet.
async fn pending(p: &Platform, jobs: &mut [Job]) -> usize {
    let answers = join_all(jobs.iter().map(|j| async move {
        p.get(&[("command", "queryAsyncJobResult"), ("jobid", &j.job)])
            .await
    }))
    .await;
    for (j, (status, body)) in jobs.iter_mut().zip(answers) {
        assert_eq!(status, 200, "{body}");
        let r = &body["queryasyncjobresultresponse"];
        j.status = r["jobstatus"].as_u64().unwrap();
        j.result = r["jobresult"].clone();
    }
    jobs.iter().filter(|j| j.status == 0).count()
}

/// Waits until every job has ended (bounded), and reports the sagas that have not.
async fn wait_for_jobs(p: &Platform, store: &Store, jobs: &mut [Job], what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let left = pending(p, jobs).await;
        if left == 0 {
            return started.elapsed();
        }
        if started.elapsed() > JOBS_END {
            let sagas = store.walk::<Saga>(&Index::All).await.unwrap();
            let open: Vec<String> = sagas
                .iter()
                .filter(|s| matches!(s.value.status, SagaStatus::Running | SagaStatus::Unwinding))
                .map(|s| saga_line(&s.value))
                .collect();
            panic!(
                "{what}: {left} of {} jobs still pending after {JOBS_END:?}; open sagas:\n{}\nrunner: {}\nthe log's last {LOG_TAIL} lines:\n{}",
                jobs.len(),
                open.join("\n"),
                runner_figures(p).await.0,
                log_tail(p)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Lines of the runner's log a failure shows.
const LOG_TAIL: usize = 200;

/// The last [`LOG_TAIL`] lines of the runner's log.
fn log_tail(p: &Platform) -> String {
    let log = p.runner.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}

/// A saga in one line: kind, status, and each step's state.
fn saga_line(s: &Saga) -> String {
    let steps: Vec<String> = s
        .steps
        .iter()
        .map(|st| format!("{}={:?}", st.name, st.state))
        .collect();
    format!(
        "{} {} {:?} cursor {} [{}] log {:?}",
        s.id,
        s.kind,
        s.status,
        s.cursor,
        steps.join(" "),
        s.step_log
    )
}

/// How the sagas of the test are doing: how many are open, and the step each is at.
async fn progress(store: &Store) -> String {
    let sagas = store.walk::<Saga>(&Index::All).await.unwrap_or_default();
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sagas {
        let s = &s.value;
        let key = match s.status {
            SagaStatus::Done => "done".to_string(),
            SagaStatus::Failed => "failed".to_string(),
            _ => format!(
                "{}:{}",
                if s.status == SagaStatus::Unwinding {
                    "undo"
                } else {
                    "at"
                },
                s.steps.get(s.cursor).map_or("-", |st| st.name.as_str())
            ),
        };
        *at.entry(key).or_default() += 1;
    }
    format!("{at:?}")
}

/// What every agent holds, by host name.
fn agent_states(env: &TestEnv, hosts: &[Host]) -> BTreeMap<String, SimState> {
    hosts
        .iter()
        .map(|h| {
            let path = state_dir(&env.home, &h.name).join(STATE_FILE);
            let state = match std::fs::read(&path) {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                Err(_) => SimState::default(),
            };
            (h.name.clone(), state)
        })
        .collect()
}

/// The figures of one run, for the report.
#[derive(Default, Debug)]
struct Outcome {
    succeeded: usize,
    failed: Vec<String>,
    timed_out_steps: usize,
    parked: usize,
    undo_failed: usize,
}

/// How long the platform may take, after the jobs ended, to be consistent:
/// a late copy of a command (the outbox relay sends a row again when its
/// publisher died before removing it) may act on a host after its saga
/// ended, and the saga then undoes it again (a late success of an undone
/// step); that takes a few seconds, and what never settles fails.
const SETTLE: Duration = Duration::from_secs(30);

/// [`consistency`], until it finds nothing wrong or [`SETTLE`] has passed.
async fn assert_consistent(env: &TestEnv, store: &Store, jobs: &[Job]) -> Outcome {
    let started = Instant::now();
    loop {
        let (outcome, problems, sagas) = consistency(env, store, jobs).await;
        if problems.is_empty() {
            if started.elapsed() > Duration::from_secs(1) {
                println!(
                    "  consistent {:.1} s after the jobs ended",
                    started.elapsed().as_secs_f64()
                );
            }
            return outcome;
        }
        if started.elapsed() > SETTLE {
            panic!(
                "inconsistent {SETTLE:?} after the jobs ended:\n{}\nsagas:\n{}",
                problems.join("\n"),
                sagas.iter().map(saga_line).collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every job ended either with its VM Running and whole, or failed with a
/// clean slate for its VM; the hosts' and pools' allocations are exactly
/// what the Running VMs hold; the agents hold exactly the Running VMs and
/// their volumes. The figures, what is wrong, and the sagas.
async fn consistency(
    env: &TestEnv,
    store: &Store,
    jobs: &[Job],
) -> (Outcome, Vec<String>, Vec<Saga>) {
    let all = Index::All;
    let vms: BTreeMap<String, Vm> = store
        .walk::<Vm>(&all)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.value.id.to_string(), v.value))
        .collect();
    let nics: Vec<Nic> = store
        .walk::<Nic>(&all)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .collect();
    let volumes: Vec<Volume> = store
        .walk::<Volume>(&all)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .collect();
    let hosts: Vec<Host> = store
        .walk::<Host>(&all)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .collect();
    let pools: Vec<StoragePool> = store
        .walk::<StoragePool>(&all)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .collect();
    let reservations: Vec<Reservation> = store
        .walk::<Reservation>(&all)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .collect();
    let addresses: Vec<IpAddress> = store
        .walk::<IpAddress>(&all)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .collect();
    let sagas: Vec<Saga> = store
        .walk::<Saga>(&all)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .collect();
    let agents = agent_states(env, &hosts);
    let host_name = |id: Id<Host>| hosts.iter().find(|h| h.id == id).map(|h| h.name.clone());
    let mut outcome = Outcome::default();
    let mut problems: Vec<String> = Vec::new();

    for j in jobs {
        let vm = vms.get(&j.vm);
        let vm_nics: Vec<&Nic> = nics
            .iter()
            .filter(|n| n.vm_id.to_string() == j.vm)
            .collect();
        let vm_volumes: Vec<&Volume> = volumes
            .iter()
            .filter(|v| v.vm_id.is_some_and(|id| id.to_string() == j.vm))
            .collect();
        let on_agents: Vec<String> = agents
            .iter()
            .filter(|(_, s)| {
                s.vms.contains_key(&j.vm) || s.volumes.values().any(|v| v.vm_id == j.vm)
            })
            .map(|(h, _)| h.clone())
            .collect();
        match j.status {
            1 => {
                outcome.succeeded += 1;
                let Some(vm) = vm else {
                    problems.push(format!("{}: job succeeded but no VM row", j.vm));
                    continue;
                };
                if vm.state != VmState::Running {
                    problems.push(format!("{}: job succeeded, VM {:?}", j.vm, vm.state));
                }
                if j.result["virtualmachine"]["state"] != "Running" {
                    problems.push(format!("{}: the job's result {}", j.vm, j.result));
                }
                let Some(host) = vm.host_id.and_then(host_name) else {
                    problems.push(format!("{}: Running with no known host", j.vm));
                    continue;
                };
                let shown: BTreeSet<String> = vm.nics.iter().map(|n| n.id.to_string()).collect();
                let rows: BTreeSet<String> = vm_nics.iter().map(|n| n.id.to_string()).collect();
                if rows.is_empty() || rows != shown {
                    problems.push(format!(
                        "{}: NIC rows {rows:?}, the VM shows {shown:?}",
                        j.vm
                    ));
                }
                for n in &vm_nics {
                    if !addresses
                        .iter()
                        .any(|a| a.nic_id == Some(n.id) && a.address == n.ip_address)
                    {
                        problems.push(format!(
                            "{}: NIC {} has no address row for {}",
                            j.vm, n.id, n.ip_address
                        ));
                    }
                }
                if vm_volumes.is_empty() {
                    problems.push(format!("{}: Running with no volume", j.vm));
                }
                let agent = &agents[&host];
                match agent.vms.get(&j.vm) {
                    Some(sim) => {
                        if sim.power_state
                            != stratus_contracts::message_types::agent::PowerState::PowerOn
                        {
                            problems.push(format!("{}: on {host} {:?}", j.vm, sim.power_state));
                        }
                        let want: BTreeSet<String> =
                            vm_volumes.iter().map(|v| v.id.to_string()).collect();
                        let have: BTreeSet<String> = sim.volume_ids.iter().cloned().collect();
                        if want != have {
                            problems
                                .push(format!("{}: volumes {want:?}, on {host} {have:?}", j.vm));
                        }
                    }
                    None => problems.push(format!(
                        "{}: Running on {host}, which does not hold it",
                        j.vm
                    )),
                }
                for v in &vm_volumes {
                    if v.state != VolumeState::Ready || v.pool_id.is_none() {
                        problems.push(format!(
                            "{}: volume {} {:?} pool {:?}",
                            j.vm, v.id, v.state, v.pool_id
                        ));
                    }
                    if !agent.volumes.contains_key(&v.id.to_string()) {
                        problems.push(format!("{}: volume {} not on {host}", j.vm, v.id));
                    }
                }
                if on_agents != vec![host.clone()] {
                    problems.push(format!(
                        "{}: on hosts {on_agents:?}, placed on {host}",
                        j.vm
                    ));
                }
            }
            2 => {
                outcome.failed.push(format!(
                    "{}: {}",
                    j.vm,
                    j.result["errortext"].as_str().unwrap_or("?")
                ));
                if let Some(vm) = vm
                    && vm.state != VmState::Error
                {
                    problems.push(format!("{}: job failed, VM {:?}", j.vm, vm.state));
                }
                if !vm_nics.is_empty() {
                    problems.push(format!(
                        "{}: job failed, {} NIC rows left",
                        j.vm,
                        vm_nics.len()
                    ));
                }
                if !vm_volumes.is_empty() {
                    problems.push(format!(
                        "{}: job failed, {} volume rows left",
                        j.vm,
                        vm_volumes.len()
                    ));
                }
                if !on_agents.is_empty() {
                    problems.push(format!("{}: job failed, still on {on_agents:?}", j.vm));
                }
                if reservations
                    .iter()
                    .any(|r| r.key == format!("vm/{}/host", j.vm))
                {
                    problems.push(format!("{}: job failed, capacity still reserved", j.vm));
                }
            }
            other => problems.push(format!("{}: job status {other}", j.vm)),
        }
    }

    // No VM of any kind is half made.
    for vm in vms.values() {
        if !matches!(vm.state, VmState::Running | VmState::Error) {
            problems.push(format!("VM {} left {:?}", vm.id, vm.state));
        }
    }
    // No NIC, volume or address without its VM.
    for n in &nics {
        if !vms.contains_key(&n.vm_id.to_string()) {
            problems.push(format!(
                "NIC {} of a VM {} that does not exist",
                n.id, n.vm_id
            ));
        }
    }
    for v in &volumes {
        if v.vm_id.is_none_or(|id| !vms.contains_key(&id.to_string())) {
            problems.push(format!("volume {} without its VM {:?}", v.id, v.vm_id));
        }
    }
    for a in &addresses {
        if let Some(nic) = a.nic_id
            && !nics.iter().any(|n| n.id == nic)
        {
            problems.push(format!(
                "address {} held for a NIC {nic} that does not exist",
                a.address
            ));
        }
    }
    // The hosts hold exactly the Running VMs' capacity, as reservations and as totals.
    for h in &hosts {
        let running: Vec<&Vm> = vms
            .values()
            .filter(|v| v.state == VmState::Running && v.host_id == Some(h.id))
            .collect();
        let cpu: u64 = running
            .iter()
            .map(|v| v.cpu_number as u64 * v.cpu_speed as u64)
            .sum();
        let memory: u64 = running.iter().map(|v| v.memory as u64 * 1024 * 1024).sum();
        if (h.cpu_allocated, h.memory_allocated) != (cpu, memory) {
            problems.push(format!(
                "host {}: allocated cpu {} memory {}, its {} Running VMs hold {cpu} and {memory}",
                h.name,
                h.cpu_allocated,
                h.memory_allocated,
                running.len()
            ));
        }
        let held: Vec<&Reservation> = reservations.iter().filter(|r| r.host_id == h.id).collect();
        let reserved: (u64, u64) = (
            held.iter().map(|r| r.cpu).sum(),
            held.iter().map(|r| r.memory).sum(),
        );
        if reserved != (cpu, memory) || held.len() != running.len() {
            problems.push(format!(
                "host {}: {} reservations of {reserved:?}, {} Running VMs of {:?}",
                h.name,
                held.len(),
                running.len(),
                (cpu, memory)
            ));
        }
        // The agent holds exactly those VMs, and only their volumes.
        let agent = &agents[&h.name];
        let want: BTreeSet<String> = running.iter().map(|v| v.id.to_string()).collect();
        let have: BTreeSet<String> = agent.vms.keys().cloned().collect();
        if want != have {
            problems.push(format!(
                "agent {}: holds VMs {have:?}, the store has {want:?} Running there",
                h.name
            ));
        }
        for v in agent.volumes.values() {
            if !want.contains(&v.vm_id) {
                problems.push(format!(
                    "agent {}: volume {} of VM {} that is not Running there",
                    h.name, v.id, v.vm_id
                ));
            }
        }
    }
    for pool in &pools {
        let used: u64 = volumes
            .iter()
            .filter(|v| v.pool_id == Some(pool.id))
            .map(|v| v.size)
            .sum();
        if pool.disk_size_allocated != used {
            problems.push(format!(
                "pool {}: allocated {}, its volumes {used}",
                pool.name, pool.disk_size_allocated
            ));
        }
    }
    for s in &sagas {
        if matches!(s.status, SagaStatus::Running | SagaStatus::Unwinding) {
            problems.push(format!("a saga still open: {}", saga_line(s)));
        }
        outcome.timed_out_steps += s
            .step_log
            .iter()
            .filter(|l| l.get("timeout").is_some())
            .count();
        outcome.parked += s
            .step_log
            .iter()
            .filter(|l| l.get("parked").is_some())
            .count();
        outcome.undo_failed += s
            .steps
            .iter()
            .filter(|st| st.state == StepState::UndoFailed)
            .count();
    }
    (outcome, problems, sagas)
}

/// After every VM was destroyed with expunge: no VM, NIC or volume row, no
/// reservation, no address held by a NIC, capacity as before, agents empty.
async fn assert_clean(env: &TestEnv, p: &Platform, store: &Store, fleet: &Fleet) {
    let all = Index::All;
    let vms = store.walk::<Vm>(&all).await.unwrap();
    let nics = store.walk::<Nic>(&all).await.unwrap();
    let volumes = store.walk::<Volume>(&all).await.unwrap();
    let reservations = store.walk::<Reservation>(&all).await.unwrap();
    let held: Vec<String> = store
        .walk::<IpAddress>(&all)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.value.nic_id.is_some())
        .map(|a| a.value.address)
        .collect();
    let hosts: Vec<Host> = store
        .walk::<Host>(&all)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .collect();
    assert!(
        vms.is_empty()
            && nics.is_empty()
            && volumes.is_empty()
            && reservations.is_empty()
            && held.is_empty(),
        "left after the destroys: {} VMs {:?}, {} NICs, {} volumes, {} reservations, addresses {held:?}",
        vms.len(),
        vms.iter()
            .map(|v| (v.value.id.to_string(), v.value.state))
            .collect::<Vec<_>>(),
        nics.len(),
        volumes.len(),
        reservations.len()
    );
    let left = |agents: &BTreeMap<String, SimState>| -> Vec<String> {
        agents
            .iter()
            .filter(|(_, s)| !s.vms.is_empty() || !s.volumes.is_empty())
            .map(|(h, s)| format!("{h}: {s:?}"))
            .collect()
    };
    let first = agent_states(env, &hosts);
    if !left(&first).is_empty() {
        // What is on a host with nothing in the store: the sagas of those VMs
        // and what the log says of them, then whether it goes (bounded).
        let ids: BTreeSet<String> = first
            .values()
            .flat_map(|s| {
                s.vms
                    .keys()
                    .cloned()
                    .chain(s.volumes.values().map(|v| v.vm_id.clone()))
            })
            .collect();
        let sagas: Vec<String> = store
            .walk::<Saga>(&all)
            .await
            .unwrap()
            .iter()
            .filter(|s| {
                ids.iter()
                    .any(|id| s.value.parameters.to_string().contains(id))
            })
            .map(|s| saga_line(&s.value))
            .collect();
        let log = p.runner.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("republishing from the outbox")
                    || (ids.iter().any(|id| l.contains(id))
                        && ["volumes", "does not wait", "saga ended"]
                            .iter()
                            .any(|w| l.contains(w)))
            })
            .collect();
        println!(
            "the agents hold after the destroys: {:#?}\nsagas of those VMs:\n{}\nlog lines naming them (last 60):\n{}",
            left(&first),
            sagas.join("\n"),
            lines[lines.len().saturating_sub(60)..].join("\n")
        );
        let started = Instant::now();
        loop {
            let now = left(&agent_states(env, &hosts));
            if now.is_empty() {
                println!(
                    "... and it went {:.1} s later",
                    started.elapsed().as_secs_f64()
                );
                break;
            }
            assert!(
                started.elapsed() < SETTLE,
                "the agents still hold, {SETTLE:?} after the destroys ended: {now:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let after = capacity(p).await;
    assert_eq!(
        after, fleet.capacity,
        "listCapacity (type, used, total) before the deploys and after the destroys"
    );
}

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

/// The runner's counts for the functions and agents of the VM flow, and
/// the batches its triggers returned to the queue (an invocation that failed:
/// an instance killed with the batch in hand), by function.
async fn runner_figures(p: &Platform) -> (String, BTreeMap<String, u64>) {
    const FLOW: [&str; 4] = ["orchestrator", "network", "compute", "storage"];
    let status = p.runner.status().await;
    let mut returned: BTreeMap<String, u64> = BTreeMap::new();
    for t in status["queue_triggers"].as_array().unwrap() {
        let f = t["function"].as_str().unwrap_or("");
        if FLOW.contains(&f) {
            *returned.entry(f.to_string()).or_default() +=
                t["failed_batches"].as_u64().unwrap_or(0);
        }
    }
    let mut out = Vec::new();
    for f in status["functions"].as_array().unwrap() {
        let name = f["function"].as_str().unwrap_or("");
        if FLOW.contains(&name) {
            out.push(format!(
                "{name} {} invocations, {} errors, {} crashes, {} batches returned to the queue",
                f["invocations"],
                f["errors"],
                f["crashes"],
                returned.get(name).copied().unwrap_or(0)
            ));
        }
    }
    let restarts: u64 = status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|pr| pr["restarts"].as_u64())
        .sum();
    out.push(format!("agent restarts {restarts}"));
    (out.join("; "), returned)
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
    let mut jobs = deploy(&p, &fleet, DEPLOYS).await;
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
/// was destroyed and expunged, the agent makes the volumes again, and the
/// orchestrator, whose deploy saga is Done, records the result as ignored
/// without undoing it (`unawaited` undoes a late success only for a step in
/// Undoing/Undone/UndoFailed): the volume stays on the host for good, with
/// no row in the store. The orchestrator test met it once in about fifteen
/// runs; here the late copy is sent by hand, as the relay would.
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
    let mut deployed = deploy(&p, &fleet, 1).await;
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
