//! The VM flow under faults, for the tests that put work in flight and then
//! break something (tests/tests/vm_faults.rs kills processes,
//! tests/tests/disruptive.rs restarts the broker): a fleet of deploys and
//! destroys through the API, the waits for their jobs, and the checks that
//! every job ended with its VM Running and whole or failed with a clean
//! slate, and that after the destroys nothing is left.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::Value;
use stratus_agent::sim::{STATE_FILE, SimState, state_dir};
use stratus_model::*;
use stratus_store::{Index, Store};

use crate::TestEnv;
use crate::cloudstack::Platform;

/// Every job ends within this after the last fault.
pub const JOBS_END: Duration = Duration::from_secs(180);
/// `saga.step.timeout` for these tests: far above a step's time under load
/// (a few seconds), far below the wait for the jobs.
pub const STEP_TIMEOUT_S: u64 = 60;

/// What the deploys work with, and the capacity before them.
pub struct Fleet {
    pub zone: String,
    pub offering: String,
    pub template: String,
    pub capacity: Vec<(u64, u64, u64)>,
}

/// A job the test submitted: its VM and, once ended, its status and result.
#[derive(Debug, Clone)]
pub struct Job {
    pub vm: String,
    pub job: String,
    pub status: u64,
    pub result: Value,
}

/// listCapacity as (type, used, total), sorted.
pub async fn capacity(p: &Platform) -> Vec<(u64, u64, u64)> {
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
pub async fn first_id(p: &Platform, params: &[(&str, &str)], response: &str, key: &str) -> String {
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
pub async fn prepare(p: &Platform, failures: u32) -> Fleet {
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

/// Submits `n` deploys at once (named `<prefix>-<i>`); their VMs and jobs.
pub async fn deploy(p: &Platform, fleet: &Fleet, prefix: &str, n: usize) -> Vec<Job> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
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
pub async fn destroy(p: &Platform, vms: &[String]) -> Vec<Job> {
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
pub async fn pending(p: &Platform, jobs: &mut [Job]) -> usize {
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
pub async fn wait_for_jobs(p: &Platform, store: &Store, jobs: &mut [Job], what: &str) -> Duration {
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
pub const LOG_TAIL: usize = 200;

/// The last [`LOG_TAIL`] lines of the runner's log.
pub fn log_tail(p: &Platform) -> String {
    let log = p.runner.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}

/// A saga in one line: kind, status, and each step's state.
pub fn saga_line(s: &Saga) -> String {
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
pub async fn progress(store: &Store) -> String {
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

/// Every object of a kind.
pub async fn every<T: Object>(store: &Store) -> Vec<T> {
    store
        .walk::<T>(&Index::All)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.value)
        .collect()
}

/// What every agent holds, by host name.
pub fn agent_states(env: &TestEnv, hosts: &[Host]) -> BTreeMap<String, SimState> {
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
pub struct Outcome {
    pub succeeded: usize,
    pub failed: Vec<String>,
    pub timed_out_steps: usize,
    pub parked: usize,
    pub undo_failed: usize,
}

/// How long the platform may take, after the jobs ended, to be consistent:
/// a late copy of a command (the outbox relay sends a row again when its
/// publisher died before removing it) may act on a host after its saga
/// ended, and the saga then undoes it again (a late success of an undone
/// step); that takes a few seconds, and what never settles fails.
pub const SETTLE: Duration = Duration::from_secs(30);

/// [`consistency`], until it finds nothing wrong or [`SETTLE`] has passed.
pub async fn assert_consistent(env: &TestEnv, store: &Store, jobs: &[Job]) -> Outcome {
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
pub async fn consistency(
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
    let nics: Vec<Nic> = every::<Nic>(store).await;
    let volumes: Vec<Volume> = every::<Volume>(store).await;
    let hosts: Vec<Host> = every::<Host>(store).await;
    let pools: Vec<StoragePool> = every::<StoragePool>(store).await;
    let reservations: Vec<Reservation> = every::<Reservation>(store).await;
    let addresses: Vec<IpAddress> = every::<IpAddress>(store).await;
    let sagas: Vec<Saga> = every::<Saga>(store).await;
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
pub async fn assert_clean(env: &TestEnv, p: &Platform, store: &Store, fleet: &Fleet) {
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
    let hosts: Vec<Host> = every::<Host>(store).await;
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

/// The runner's counts for the functions and agents of the VM flow, and
/// the batches its triggers returned to the queue (an invocation that failed:
/// an instance killed with the batch in hand), by function.
pub async fn runner_figures(p: &Platform) -> (String, BTreeMap<String, u64>) {
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
