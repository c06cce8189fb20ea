//! VM deploy and destroy end to end, as CloudStack clients drive them: the
//! real `cs` client (and signed requests of our own where many jobs run at
//! once) against the whole local platform (`Platform::start`): API,
//! orchestrator sagas, network, compute, storage and the three simulated
//! host agents of the real manifest.
//!
//! Every test starts its own platform, so they run in parallel; every wait
//! is bounded, and what a reader needs (counts, latencies) is printed.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use stratus_tests::TestEnv;
use stratus_tests::cloudstack::Platform;

/// The bound on one job's end (deploy or destroy) on a busy 2-core machine.
const JOB_BOUND: Duration = Duration::from_secs(150);
/// The bound on the hosts coming Up after the platform starts.
const HOSTS_BOUND: Duration = Duration::from_secs(90);
/// Memory of one Large Instance, in bytes (listCapacity's unit for memory).
const GIB: u64 = 1 << 30;

// Capacity types, as CloudStack numbers them.
const MEMORY: u64 = 0;
const CPU: u64 = 1;
const STORAGE: u64 = 3;

/// What a test deploys with: the zone, the offerings by name, the template.
struct Zone {
    id: String,
    small: String,
    large: String,
    template: String,
    /// Name to id of the zone's hosts.
    hosts: BTreeMap<String, String>,
}

/// A copy of the platform's `cs` configuration with a bound on each job
/// (`cs` would otherwise poll a job for ever).
fn bounded_ini(ini: &Path) -> PathBuf {
    let bounded = ini.with_extension("bounded.ini");
    if !bounded.exists() {
        let text = std::fs::read_to_string(ini).unwrap();
        std::fs::write(
            &bounded,
            format!("{text}job_timeout = {}\n", JOB_BOUND.as_secs()),
        )
        .unwrap();
    }
    bounded
}

/// `cs` as the root admin.
fn cs(p: &Platform, args: &[&str]) -> Result<Value, String> {
    p.cs_with(&bounded_ini(&p.ini), args)
}

/// `cs` with another account's configuration.
fn cs_as(p: &Platform, ini: &Path, args: &[&str]) -> Result<Value, String> {
    p.cs_with(&bounded_ini(ini), args)
}

/// Waits until every host of the zone is Up (the agents' heartbeats reached
/// the fabric monitor), then looks up what deploys need, the way a client
/// does: listZones, listServiceOfferings, listTemplates featured.
async fn zone(p: &Platform) -> Zone {
    let started = Instant::now();
    let hosts = loop {
        let (status, body) = p
            .get(&[("command", "listHosts"), ("type", "Routing")])
            .await;
        assert_eq!(status, 200, "{body}");
        let hosts = body["listhostsresponse"]["host"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if hosts.len() == 3 && hosts.iter().all(|h| h["state"] == "Up") {
            break hosts;
        }
        assert!(
            started.elapsed() < HOSTS_BOUND,
            "the hosts are not all Up after {HOSTS_BOUND:?}: {body}\n{}",
            log_tail(p)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("hosts Up after {:.1} s", started.elapsed().as_secs_f64());
    let zones = cs(p, &["listZones"]).unwrap();
    assert_eq!(zones["count"], 1, "{zones}");
    let offerings = cs(p, &["listServiceOfferings"]).unwrap();
    let offering = |name: &str| {
        offerings["serviceoffering"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("no offering {name}: {offerings}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let templates = cs(p, &["listTemplates", "templatefilter=featured"]).unwrap();
    assert!(templates["count"].as_u64() >= Some(1), "{templates}");
    Zone {
        id: zones["zone"][0]["id"].as_str().unwrap().to_string(),
        small: offering("Small Instance"),
        large: offering("Large Instance"),
        template: templates["template"][0]["id"].as_str().unwrap().to_string(),
        hosts: hosts
            .iter()
            .map(|h| {
                (
                    h["name"].as_str().unwrap().to_string(),
                    h["id"].as_str().unwrap().to_string(),
                )
            })
            .collect(),
    }
}

/// listCapacity of the zone: used, by capacity type.
async fn used(p: &Platform, zone: &str) -> BTreeMap<u64, u64> {
    capacity(p, zone).await.0
}

/// listCapacity of the zone: (used, total), by capacity type.
async fn capacity(p: &Platform, zone: &str) -> (BTreeMap<u64, u64>, BTreeMap<u64, u64>) {
    let (status, body) = p
        .get(&[("command", "listCapacity"), ("zoneid", zone)])
        .await;
    assert_eq!(status, 200, "{body}");
    let items = body["listcapacityresponse"]["capacity"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    let mut used = BTreeMap::new();
    let mut total = BTreeMap::new();
    for c in items {
        let t = c["type"].as_u64().unwrap();
        used.insert(t, c["capacityused"].as_u64().unwrap());
        total.insert(t, c["capacitytotal"].as_u64().unwrap());
    }
    assert_eq!(
        used.keys().copied().collect::<Vec<_>>(),
        vec![MEMORY, CPU, STORAGE],
        "{body}"
    );
    (used, total)
}

/// The deploy parameters of `offering` in the zone.
fn deploy_params<'a>(z: &'a Zone, offering: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("command", "deployVirtualMachine"),
        ("zoneid", z.id.as_str()),
        ("serviceofferingid", offering),
        ("templateid", z.template.as_str()),
    ]
}

/// Submits an async command with a signed GET: (the object's id, the job id).
async fn submit(
    p: &Platform,
    key: &str,
    secret: &str,
    params: &[(&str, &str)],
) -> (String, String) {
    let (status, body) = p.get_as(key, secret, params).await;
    assert_eq!(status, 200, "{params:?}: {body}");
    let inner = body.as_object().unwrap().values().next().unwrap();
    (
        inner["id"].as_str().unwrap_or_default().to_string(),
        inner["jobid"]
            .as_str()
            .unwrap_or_else(|| panic!("no jobid: {body}"))
            .to_string(),
    )
}

/// Polls queryAsyncJobResult until the job has ended (bounded): the job.
async fn wait_job(p: &Platform, job: &str, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = p
            .get(&[("command", "queryAsyncJobResult"), ("jobid", job)])
            .await;
        assert_eq!(status, 200, "{body}");
        let j = &body["queryasyncjobresultresponse"];
        if j["jobstatus"] != 0 {
            return j.clone();
        }
        assert!(
            started.elapsed() < within,
            "job {job} has not ended after {within:?}: {body}\n{}",
            log_tail(p)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Asserts that the job succeeded; its result.
fn succeeded(job: &Value) -> &Value {
    assert_eq!(
        (&job["jobstatus"], &job["jobresultcode"]),
        (&Value::from(1), &Value::from(0)),
        "the job failed: {job}"
    );
    &job["jobresult"]
}

/// Asserts that the job failed with `code`; its error text.
fn failed(job: &Value, code: u64) -> String {
    assert_eq!(job["jobstatus"], 2, "the job did not fail: {job}");
    assert_eq!(job["jobresultcode"], code, "{job}");
    assert_eq!(job["jobresult"]["errorcode"], code, "{job}");
    job["jobresult"]["errortext"]
        .as_str()
        .unwrap_or_else(|| panic!("no errortext: {job}"))
        .to_string()
}

/// Deploys with the admin's keys and waits for the job: (vm id, the ended job).
async fn deploy(p: &Platform, z: &Zone, offering: &str, extra: &[(&str, &str)]) -> (String, Value) {
    let mut params = deploy_params(z, offering);
    params.extend_from_slice(extra);
    let (vm, job) = submit(p, &p.key, &p.secret, &params).await;
    let ended = wait_job(p, &job, JOB_BOUND).await;
    (vm, ended)
}

/// destroyVirtualMachine expunge=true with the admin's keys: the ended job.
async fn destroy(p: &Platform, vm: &str) -> Value {
    let (_, job) = submit(
        p,
        &p.key,
        &p.secret,
        &[
            ("command", "destroyVirtualMachine"),
            ("id", vm),
            ("expunge", "true"),
        ],
    )
    .await;
    wait_job(p, &job, JOB_BOUND).await
}

/// The VM as listVirtualMachines shows it to the admin, or None when it is gone
/// (count 0, or the 431 of an id that names nothing).
async fn vm_view(p: &Platform, vm: &str) -> Option<Value> {
    let (status, body) = p
        .get(&[
            ("command", "listVirtualMachines"),
            ("id", vm),
            ("listall", "true"),
        ])
        .await;
    let inner = &body["listvirtualmachinesresponse"];
    match status {
        200 => match inner["count"].as_u64().unwrap_or(0) {
            0 => None,
            1 => Some(inner["virtualmachine"][0].clone()),
            n => panic!("{n} VMs with id {vm}: {body}"),
        },
        431 => {
            let text = inner["errortext"].as_str().unwrap_or_default();
            assert!(text.contains("entity does not exist"), "{body}");
            None
        }
        _ => panic!("listVirtualMachines id={vm}: {status} {body}"),
    }
}

/// The volumes listVolumes shows of a VM (empty when none).
async fn volumes(p: &Platform, vm: &str) -> Vec<Value> {
    let (status, body) = p
        .get(&[
            ("command", "listVolumes"),
            ("virtualmachineid", vm),
            ("listall", "true"),
        ])
        .await;
    match status {
        200 => body["listvolumesresponse"]["volume"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        // The VM itself is gone: an id that names nothing.
        431 => vec![],
        _ => panic!("listVolumes virtualmachineid={vm}: {status} {body}"),
    }
}

/// Every volume in the platform the admin can see.
async fn all_volumes(p: &Platform) -> Vec<Value> {
    let (status, body) = p
        .get(&[("command", "listVolumes"), ("listall", "true")])
        .await;
    assert_eq!(status, 200, "{body}");
    body["listvolumesresponse"]["volume"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// What the simulated hosts' state files hold of `vm`: its VM entry and
/// its volumes, described (empty when nothing).
fn on_hosts(env: &TestEnv, vm: &str) -> Vec<String> {
    let mut held = vec![];
    let Ok(dirs) = std::fs::read_dir(env.home.join("agents")) else {
        return held;
    };
    for dir in dirs {
        let dir = dir.unwrap().path();
        let Ok(text) = std::fs::read(dir.join("state.json")) else {
            continue;
        };
        let state: Value = serde_json::from_slice(&text).unwrap();
        let host = dir.file_name().unwrap().to_string_lossy().to_string();
        if state["vms"].get(vm).is_some() {
            held.push(format!("{host}: VM {vm}"));
        }
        for (id, v) in state["volumes"].as_object().into_iter().flatten() {
            if v["vm_id"] == vm {
                held.push(format!("{host}: volume {id}"));
            }
        }
    }
    held
}

/// The NIC addresses of a VM view.
fn address(vm: &Value) -> Ipv4Addr {
    vm["nic"][0]["ipaddress"]
        .as_str()
        .unwrap_or_else(|| panic!("no NIC address: {vm}"))
        .parse()
        .unwrap()
}

fn in_guest_cidr(a: Ipv4Addr) -> bool {
    a.octets()[..3] == [10, 1, 1]
}

fn date(s: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_str(s.as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%z")
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The clean slate after a failed deploy: capacity as before, no volume, the
/// VM in Error without NICs (or already gone), nothing on any host.
async fn assert_clean(
    p: &Platform,
    env: &TestEnv,
    z: &Zone,
    vm: &str,
    before: &BTreeMap<u64, u64>,
) {
    assert_eq!(&used(p, &z.id).await, before, "capacity after VM {vm}");
    assert_eq!(
        volumes(p, vm).await,
        Vec::<Value>::new(),
        "volumes of VM {vm}"
    );
    if let Some(v) = vm_view(p, vm).await {
        assert_eq!(v["state"], "Error", "{v}");
        assert!(v["nic"].is_null(), "the failed VM keeps NICs: {v}");
        assert!(v["hostid"].is_null(), "{v}");
    }
    assert_eq!(on_hosts(env, vm), Vec::<String>::new(), "left on the hosts");
}

/// configureSimulator, zone-wide: the mock's id.
fn mock(p: &Platform, z: &Zone, name: &str, value: &str, count: u32) -> String {
    let m = cs(
        p,
        &[
            "configureSimulator",
            &format!("name={name}"),
            &format!("value={value}"),
            &format!("count={count}"),
            &format!("zoneid={}", z.id),
        ],
    )
    .unwrap();
    m["simulatormock"]["id"].as_str().unwrap().to_string()
}

/// The runner log's last lines at WARN or above, for a failure's message.
fn log_tail(p: &Platform) -> String {
    let log = p.runner.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
        .collect();
    let tail = &lines[lines.len().saturating_sub(30)..];
    format!("runner log, last warnings and errors:\n{}", tail.join("\n"))
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn deploy_use_destroy_as_a_cloudstack_client_does() {
    let env = TestEnv::new("vm-lifecycle");
    let p = Platform::start(&env);
    let z = zone(&p).await;
    let (before, totals) = capacity(&p, &z.id).await;
    println!("capacity before: used {before:?} of {totals:?}");

    // Deploy as cs does: it polls the job and prints the VM.
    let started = Instant::now();
    let done = cs(
        &p,
        &[
            "deployVirtualMachine",
            &format!("zoneid={}", z.id),
            &format!("serviceofferingid={}", z.small),
            &format!("templateid={}", z.template),
            "name=web-1",
            "displayname=Web server 1",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", log_tail(&p)));
    println!(
        "deploy through cs: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let vm = &done["virtualmachine"];
    let id = vm["id"].as_str().unwrap().to_string();
    assert_eq!(vm["state"], "Running", "{vm}");
    assert_eq!(vm["name"], "web-1");
    assert_eq!(vm["displayname"], "Web server 1");
    assert_eq!(vm["serviceofferingid"], z.small.as_str());
    let host_id = vm["hostid"]
        .as_str()
        .unwrap_or_else(|| panic!("no hostid: {vm}"));
    let host_name = vm["hostname"]
        .as_str()
        .unwrap_or_else(|| panic!("no hostname: {vm}"));
    assert_eq!(
        z.hosts.get(host_name).map(String::as_str),
        Some(host_id),
        "{vm}"
    );
    let nic = &vm["nic"][0];
    assert!(in_guest_cidr(address(vm)), "{nic}");
    let mac = nic["macaddress"].as_str().unwrap();
    assert_eq!(mac.split(':').count(), 6, "{nic}");
    assert_eq!(nic["isdefault"], true, "{nic}");
    let network = nic["networkid"].as_str().unwrap();
    assert_eq!(vm["nic"].as_array().unwrap().len(), 1, "{vm}");
    println!("VM {id} on {host_name}, {} {mac}", address(vm));

    // listVirtualMachines by id shows it, as the job said.
    let listed = cs(&p, &["listVirtualMachines", &format!("id={id}")]).unwrap();
    assert_eq!(listed["count"], 1, "{listed}");
    let l = &listed["virtualmachine"][0];
    assert_eq!(
        (
            &l["id"],
            &l["state"],
            &l["hostid"],
            &l["nic"][0]["ipaddress"]
        ),
        (&vm["id"], &vm["state"], &vm["hostid"], &nic["ipaddress"]),
        "{l}"
    );
    // Its root volume, Ready.
    let vols = cs(&p, &["listVolumes", &format!("virtualmachineid={id}")]).unwrap();
    assert_eq!(vols["count"], 1, "{vols}");
    let root = &vols["volume"][0];
    assert_eq!(
        (&root["type"], &root["state"]),
        (&"ROOT".into(), &"Ready".into()),
        "{root}"
    );
    let root_size = root["size"].as_u64().unwrap();
    // The account's isolated network, with its VLAN.
    let nets = cs(&p, &["listNetworks"]).unwrap();
    let net = nets["network"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == network)
        .unwrap_or_else(|| panic!("network {network} not listed: {nets}"));
    assert_eq!(net["type"], "Isolated", "{net}");
    assert!(
        net["vlan"].as_str().is_some_and(|v| !v.is_empty()),
        "no vlan: {net}"
    );
    assert_eq!(net["cidr"], "10.1.1.0/24", "{net}");
    // The capacity it holds: 1 x 500 MHz, 512 MiB, its root volume.
    let during = used(&p, &z.id).await;
    println!("capacity with the VM: {during:?}");
    assert_eq!(during[&MEMORY], before[&MEMORY] + 512 * 1024 * 1024);
    assert_eq!(during[&CPU], before[&CPU] + 500);
    assert_eq!(during[&STORAGE], before[&STORAGE] + root_size);
    // The deploy's job: ended, with its times.
    let jobs = cs(&p, &["listAsyncJobs"]).unwrap();
    let job = jobs["asyncjobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["jobinstanceid"] == id.as_str())
        .unwrap_or_else(|| panic!("no job of VM {id}: {jobs}"));
    assert_eq!(
        job["cmd"],
        "org.apache.cloudstack.api.command.admin.vm.DeployVMCmdByAdmin"
    );
    let q = cs(
        &p,
        &[
            "queryAsyncJobResult",
            &format!("jobid={}", job["jobid"].as_str().unwrap()),
        ],
    )
    .unwrap();
    assert_eq!(
        (&q["jobstatus"], &q["jobresultcode"]),
        (&1.into(), &0.into()),
        "{q}"
    );
    assert_eq!(q["jobinstancetype"], "VirtualMachine", "{q}");
    assert_eq!(q["jobresult"]["virtualmachine"]["id"], id.as_str(), "{q}");
    let (created, completed) = (date(&q["created"]), date(&q["completed"]));
    assert!(completed >= created, "{q}");
    println!(
        "deploy job: created {created}, completed {completed} ({} s)",
        (completed - created).num_seconds()
    );

    // Destroy with expunge: gone, and everything it held given back.
    let gone = cs(
        &p,
        &["destroyVirtualMachine", &format!("id={id}"), "expunge=true"],
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", log_tail(&p)));
    assert_eq!(gone["virtualmachine"]["id"], id.as_str(), "{gone}");
    assert_eq!(vm_view(&p, &id).await, None);
    assert_eq!(volumes(&p, &id).await, Vec::<Value>::new());
    assert_eq!(all_volumes(&p).await, Vec::<Value>::new());
    assert_eq!(used(&p, &z.id).await, before, "capacity after the destroy");
    assert_eq!(on_hosts(&env, &id), Vec::<String>::new());

    // A user deploys: no host in what they see, and no hostid or expunge for them.
    let carol = p.create_user("carol");
    let mine = cs_as(
        &p,
        &carol.ini,
        &[
            "deployVirtualMachine",
            &format!("zoneid={}", z.id),
            &format!("serviceofferingid={}", z.small),
            &format!("templateid={}", z.template),
            "name=carol-1",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", log_tail(&p)));
    let cvm = &mine["virtualmachine"];
    let cid = cvm["id"].as_str().unwrap().to_string();
    assert_eq!(cvm["state"], "Running", "{cvm}");
    assert_eq!(cvm["accountid"], carol.account_id.as_str(), "{cvm}");
    let theirs = cs_as(
        &p,
        &carol.ini,
        &["listVirtualMachines", &format!("id={cid}")],
    )
    .unwrap();
    let shown = &theirs["virtualmachine"][0];
    assert_eq!(shown["state"], "Running", "{theirs}");
    assert!(
        shown.get("hostid").is_none() && shown.get("hostname").is_none(),
        "the user sees where the VM runs: {shown}"
    );
    assert!(in_guest_cidr(address(shown)), "{shown}");
    // Her own network, not the admin's.
    assert_ne!(shown["nic"][0]["networkid"], network, "{shown}");
    // (The deploy job's result as she polls it still names the host: see
    // a_users_deploy_job_result_does_not_name_the_host.)
    println!(
        "the user's deploy job result: hostid {}, hostname {}",
        cvm["hostid"], cvm["hostname"]
    );
    let err = cs_as(
        &p,
        &carol.ini,
        &[
            "deployVirtualMachine",
            &format!("zoneid={}", z.id),
            &format!("serviceofferingid={}", z.small),
            &format!("templateid={}", z.template),
            &format!("hostid={host_id}"),
        ],
    )
    .unwrap_err();
    assert!(err.contains("531"), "{err}");
    let err = cs_as(
        &p,
        &carol.ini,
        &[
            "destroyVirtualMachine",
            &format!("id={cid}"),
            "expunge=true",
        ],
    )
    .unwrap_err();
    assert!(err.contains("531"), "{err}");
    // She destroys it (Destroyed, kept for expunge.delay), the admin expunges it.
    let destroyed = cs_as(
        &p,
        &carol.ini,
        &["destroyVirtualMachine", &format!("id={cid}")],
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", log_tail(&p)));
    assert_eq!(
        destroyed["virtualmachine"]["state"], "Destroyed",
        "{destroyed}"
    );
    let released = used(&p, &z.id).await;
    assert_eq!(
        (released[&MEMORY], released[&CPU]),
        (before[&MEMORY], before[&CPU]),
        "a destroyed VM holds no CPU or memory"
    );
    let e = cs(&p, &["expungeVirtualMachine", &format!("id={cid}")]).unwrap();
    assert_eq!(e["success"], true, "{e}");
    assert_eq!(vm_view(&p, &cid).await, None);
    assert_eq!(all_volumes(&p).await, Vec::<Value>::new());
    assert_eq!(used(&p, &z.id).await, before, "capacity at the end");
    assert_eq!(on_hosts(&env, &cid), Vec::<String>::new());
}

/// CloudStack answers a user's deployVirtualMachine (DeployVMCmd, the
/// restricted response view) without hostid and hostname, as
/// listVirtualMachines does for her; the job result here carries the admin's
/// view of the VM.
#[tokio::test(flavor = "multi_thread")]
async fn a_users_deploy_job_result_does_not_name_the_host() {
    let env = TestEnv::new("vm-user-view");
    let p = Platform::start(&env);
    let z = zone(&p).await;
    let dave = p.create_user("dave");
    let mut params = deploy_params(&z, &z.small);
    params.push(("name", "dave-1"));
    let (vm, job) = submit(&p, &dave.key, &dave.secret, &params).await;
    let ended = wait_job(&p, &job, JOB_BOUND).await;
    succeeded(&ended);
    // As she polls it, with her keys.
    let (status, body) = p
        .get_as(
            &dave.key,
            &dave.secret,
            &[("command", "queryAsyncJobResult"), ("jobid", &job)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let shown = &body["queryasyncjobresultresponse"]["jobresult"]["virtualmachine"];
    assert_eq!(shown["id"], vm.as_str(), "{body}");
    assert_eq!(shown["state"], "Running", "{body}");
    for field in ["hostid", "hostname"] {
        assert!(
            shown.get(field).is_none_or(Value::is_null),
            "the user's deploy job result names the host ({field}): {shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_deploys_then_destroys_return_the_zone_to_where_it_was() {
    const N: usize = 20;
    let env = TestEnv::new("vm-twenty");
    let p = Platform::start(&env);
    let z = zone(&p).await;
    let before = used(&p, &z.id).await;
    println!("capacity before: {before:?}");
    let names: Vec<String> = (0..N).map(|i| format!("burst-{i}")).collect();
    let started = Instant::now();
    let submitted = futures::future::join_all(names.iter().map(|name| {
        let mut params = deploy_params(&z, &z.small);
        params.push(("name", name.as_str()));
        let p = &p;
        async move { submit(p, &p.key, &p.secret, &params).await }
    }))
    .await;
    let jobs = futures::future::join_all(
        submitted
            .iter()
            .map(|(_, job)| wait_job(&p, job, JOB_BOUND)),
    )
    .await;
    println!(
        "{N} deploys ended {:.1} s after the first was submitted",
        started.elapsed().as_secs_f64()
    );
    let mut latencies = vec![];
    let mut hosts: BTreeMap<String, usize> = BTreeMap::new();
    let mut addresses = HashSet::new();
    for ((vm, _), job) in submitted.iter().zip(&jobs) {
        let v = &succeeded(job)["virtualmachine"];
        assert_eq!(
            (&v["id"], &v["state"]),
            (&Value::from(vm.as_str()), &"Running".into()),
            "{job}"
        );
        *hosts
            .entry(v["hostname"].as_str().unwrap().to_string())
            .or_default() += 1;
        let a = address(v);
        assert!(in_guest_cidr(a), "{v}");
        assert!(addresses.insert(a), "address {a} given twice");
        latencies.push((date(&job["completed"]) - date(&job["created"])).num_seconds());
    }
    latencies.sort();
    println!(
        "deploy latency (job created -> completed): p50 {} s, max {} s; VMs per host {hosts:?}",
        percentile(&latencies, 0.5),
        latencies.last().unwrap()
    );
    assert!(hosts.len() > 1, "every VM on one host: {hosts:?}");
    let during = used(&p, &z.id).await;
    assert_eq!(
        during[&MEMORY],
        before[&MEMORY] + N as u64 * 512 * 1024 * 1024
    );
    assert_eq!(during[&CPU], before[&CPU] + N as u64 * 500);
    assert_eq!(all_volumes(&p).await.len(), N);

    let started = Instant::now();
    let destroyed =
        futures::future::join_all(submitted.iter().map(|(vm, _)| destroy(&p, vm))).await;
    println!(
        "{N} destroys ended in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for job in &destroyed {
        succeeded(job);
    }
    assert_eq!(used(&p, &z.id).await, before, "capacity after the destroys");
    assert_eq!(all_volumes(&p).await, Vec::<Value>::new());
    for (vm, _) in &submitted {
        assert_eq!(vm_view(&p, vm).await, None);
        assert_eq!(on_hosts(&env, vm), Vec::<String>::new());
    }
    // Their addresses are free again: a VM asking for one gets it.
    let first = address(&jobs[0]["jobresult"]["virtualmachine"]).to_string();
    let (vm, job) = deploy(&p, &z, &z.small, &[("ipaddress", first.as_str())]).await;
    assert_eq!(
        succeeded(&job)["virtualmachine"]["nic"][0]["ipaddress"],
        first.as_str()
    );
    succeeded(&destroy(&p, &vm).await);
    assert_eq!(used(&p, &z.id).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn filling_the_zone_ends_in_533_with_nothing_held() {
    let env = TestEnv::new("vm-fill");
    let p = Platform::start(&env);
    let z = zone(&p).await;
    let (before, totals) = capacity(&p, &z.id).await;
    // What fits, host by host (overprovisioning factors 1): 2 x 2000 MHz and 4 GiB a VM.
    let (_, body) = p
        .get(&[("command", "listHosts"), ("type", "Routing")])
        .await;
    let hosts = body["listhostsresponse"]["host"].as_array().unwrap();
    let (mut fit, mut cpu_total, mut memory_total) = (0, 0, 0);
    for h in hosts {
        let cpu = h["cpunumber"].as_u64().unwrap() * h["cpuspeed"].as_u64().unwrap();
        let memory = h["memorytotal"].as_u64().unwrap();
        let here = (cpu / 4000).min(memory / (4 * GIB));
        println!(
            "{}: {cpu} MHz, {} GiB: {here} Large VMs",
            h["name"],
            memory / GIB
        );
        fit += here;
        cpu_total += cpu;
        memory_total += memory;
    }
    assert_eq!(
        (totals[&CPU], totals[&MEMORY]),
        (cpu_total, memory_total),
        "listCapacity's totals are the hosts'"
    );
    println!("{fit} Large VMs fit in the zone");

    let mut vms: Vec<(String, Value)> = vec![];
    let started = Instant::now();
    let (failed_vm, failed_job) = loop {
        assert!(
            vms.len() as u64 <= fit + 2,
            "more deploys than fit succeeded: {}",
            vms.len()
        );
        let name = format!("large-{}", vms.len());
        let (vm, job) = deploy(&p, &z, &z.large, &[("name", name.as_str())]).await;
        if job["jobstatus"] != 1 {
            break (vm, job);
        }
        vms.push((vm, succeeded(&job)["virtualmachine"].clone()));
    };
    println!(
        "{} deploys succeeded, then one failed ({:.1} s)",
        vms.len(),
        started.elapsed().as_secs_f64()
    );
    let text = failed(&failed_job, 533);
    assert!(
        text.contains("Unable to create a deployment for VM"),
        "{text}"
    );
    assert_eq!(vms.len() as u64, fit, "successful deploys");
    // Exactly what the successful VMs hold, nothing of the failed one.
    let mut storage = 0;
    for (vm, _) in &vms {
        let vols = volumes(&p, vm).await;
        assert_eq!(vols.len(), 1, "{vols:?}");
        storage += vols[0]["size"].as_u64().unwrap();
    }
    let full = used(&p, &z.id).await;
    println!("capacity when full: {full:?} of {totals:?}");
    let n = vms.len() as u64;
    assert_eq!(full[&MEMORY], before[&MEMORY] + n * 4 * GIB);
    assert_eq!(full[&CPU], before[&CPU] + n * 4000);
    assert_eq!(full[&STORAGE], before[&STORAGE] + storage);
    assert_clean(&p, &env, &z, &failed_vm, &full).await;
    let error_vm = vm_view(&p, &failed_vm)
        .await
        .expect("the failed VM is kept, in Error");
    let distinct: HashSet<Ipv4Addr> = vms.iter().map(|(_, v)| address(v)).collect();
    assert_eq!(distinct.len(), vms.len(), "addresses are distinct");

    // A second failed deploy asks for an address: it does not keep it either.
    const ASKED: &str = "10.1.1.250";
    let (second_vm, job) = deploy(&p, &z, &z.large, &[("ipaddress", ASKED)]).await;
    failed(&job, 533);
    assert_clean(&p, &env, &z, &second_vm, &full).await;
    // One VM goes; the next deploy gets its room and the address the failed one asked for.
    succeeded(&destroy(&p, &vms[0].0).await);
    vms.remove(0);
    let (vm, job) = deploy(&p, &z, &z.large, &[("ipaddress", ASKED)]).await;
    let v = succeeded(&job)["virtualmachine"].clone();
    assert_eq!(v["nic"][0]["ipaddress"], ASKED, "{v}");
    vms.push((vm, v));
    assert_eq!(used(&p, &z.id).await, full, "full again");

    // Everything goes, the failed VMs too: the zone is back where it started.
    let mut all: Vec<String> = vms.iter().map(|(vm, _)| vm.clone()).collect();
    all.push(failed_vm.clone());
    all.push(second_vm.clone());
    assert_eq!(error_vm["state"], "Error");
    let started = Instant::now();
    let ended = futures::future::join_all(all.iter().map(|vm| destroy(&p, vm))).await;
    for job in &ended {
        succeeded(job);
    }
    println!(
        "{} destroys in {:.1} s",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(used(&p, &z.id).await, before, "capacity at the end");
    assert_eq!(all_volumes(&p).await, Vec::<Value>::new());
    for vm in &all {
        assert_eq!(vm_view(&p, vm).await, None);
        assert_eq!(on_hosts(&env, vm), Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_simulated_failure_at_each_agent_command_fails_the_job_cleanly() {
    let env = TestEnv::new("vm-sim-fail");
    let p = Platform::start(&env);
    let z = zone(&p).await;
    let before = used(&p, &z.id).await;

    // Deploy: the volume's creation, then the start, fail once.
    for command in ["CreateCommand", "StartCommand"] {
        mock(&p, &z, command, "result:fail", 1);
        let (vm, job) = deploy(&p, &z, &z.small, &[]).await;
        let text = failed(&job, 530);
        assert!(text.contains("Simulated failure"), "{command}: {text}");
        println!("{command} fails: the deploy job fails with 530 {text:?}");
        assert_clean(&p, &env, &z, &vm, &before).await;
        let v = vm_view(&p, &vm)
            .await
            .expect("the failed VM is kept, in Error");
        assert_eq!(v["state"], "Error", "{v}");
    }

    // Destroy: the stop fails once. The saga undoes its mark: the VM runs on,
    // where it was, holding what it held.
    let (vm, job) = deploy(&p, &z, &z.small, &[]).await;
    let running = succeeded(&job)["virtualmachine"].clone();
    let holding = used(&p, &z.id).await;
    let id = mock(&p, &z, "StopCommand", "result:fail", 1);
    let text = failed(&destroy(&p, &vm).await, 530);
    assert!(text.contains("Simulated failure"), "{text}");
    let v = vm_view(&p, &vm).await.expect("the VM is still there");
    println!(
        "StopCommand fails: the destroy job fails with 530 {text:?}; the VM is {}",
        v["state"]
    );
    assert_eq!(
        (&v["state"], &v["hostid"], &v["nic"]),
        (&"Running".into(), &running["hostid"], &running["nic"]),
        "{v}"
    );
    assert_eq!(used(&p, &z.id).await, holding);
    assert_eq!(volumes(&p, &vm).await.len(), 1);
    assert_eq!(on_hosts(&env, &vm).len(), 2, "{:?}", on_hosts(&env, &vm));
    cs(&p, &["cleanupSimulatorMock", &format!("id={id}")]).unwrap();
    succeeded(&destroy(&p, &vm).await);
    assert_eq!(vm_view(&p, &vm).await, None);
    assert_clean(&p, &env, &z, &vm, &before).await;

    // Destroy: the volumes' destruction fails once, after the stop and the
    // capacity's release. Past the stop nothing is undone: the VM is left
    // Expunging, with no host, its CPU and memory given back, its disk
    // still on the host (and its volume row), for the sweep or an
    // expungeVirtualMachine to finish.
    let (vm, job) = deploy(&p, &z, &z.small, &[]).await;
    succeeded(&job);
    let id = mock(&p, &z, "DestroyCommand", "result:fail", 1);
    let text = failed(&destroy(&p, &vm).await, 530);
    assert!(text.contains("Simulated failure"), "{text}");
    let v = vm_view(&p, &vm).await.expect("the VM is still there");
    println!(
        "DestroyCommand fails: the destroy job fails with 530 {text:?}; the VM is {}",
        v["state"]
    );
    assert_eq!(v["state"], "Expunging", "{v}");
    assert!(v["hostid"].is_null(), "{v}");
    let now = used(&p, &z.id).await;
    assert_eq!((now[&MEMORY], now[&CPU]), (before[&MEMORY], before[&CPU]));
    let vols = volumes(&p, &vm).await;
    assert_eq!(vols.len(), 1, "{vols:?}");
    let held = on_hosts(&env, &vm);
    assert!(
        held.len() == 1 && held[0].contains("volume"),
        "the disk stays on the host, the VM does not: {held:?}"
    );
    cs(&p, &["cleanupSimulatorMock", &format!("id={id}")]).unwrap();
    // The admin expunges it (expungeVirtualMachine takes an Expunging VM;
    // destroyVirtualMachine refuses it with 431).
    let (_, job) = submit(
        &p,
        &p.key,
        &p.secret,
        &[("command", "expungeVirtualMachine"), ("id", &vm)],
    )
    .await;
    let e = wait_job(&p, &job, JOB_BOUND).await;
    assert_eq!(succeeded(&e)["success"], true, "{e}");
    assert_eq!(vm_view(&p, &vm).await, None);
    assert_clean(&p, &env, &z, &vm, &before).await;
    assert_eq!(all_volumes(&p).await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_that_never_answers_fails_the_deploy_after_saga_step_timeout() {
    let env = TestEnv::new("vm-sim-fault");
    let p = Platform::start(&env);
    let z = zone(&p).await;
    let before = used(&p, &z.id).await;
    // The start never answers: the step times out after saga.step.timeout.
    cs(
        &p,
        &["updateConfiguration", "name=saga.step.timeout", "value=10"],
    )
    .unwrap();
    // The orchestrator reads its settings at most 3 s stale.
    tokio::time::sleep(Duration::from_secs(4)).await;
    mock(&p, &z, "StartCommand", "result:fault", 1);
    let started = Instant::now();
    let (vm, job) = deploy(&p, &z, &z.small, &[]).await;
    let text = failed(&job, 530);
    println!(
        "StartCommand never answers: the deploy job fails after {:.1} s with 530 {text:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(text.contains("timed out"), "{text}");
    assert_clean(&p, &env, &z, &vm, &before).await;
    assert_eq!(all_volumes(&p).await, Vec::<Value>::new());
    // The mock was used up: the next deploy runs.
    let (vm, job) = deploy(&p, &z, &z.small, &[]).await;
    succeeded(&job);
    succeeded(&destroy(&p, &vm).await);
    assert_eq!(used(&p, &z.id).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_deploy_is_expunged_after_expunge_delay() {
    let env = TestEnv::new("vm-expunge-delay");
    let p = Platform::start(&env);
    let z = zone(&p).await;
    let before = used(&p, &z.id).await;
    // A delay far longer than the test first: the failed VM stays in Error.
    mock(&p, &z, "StartCommand", "result:fail", 1);
    let (vm, job) = deploy(&p, &z, &z.small, &[]).await;
    failed(&job, 530);
    let v = vm_view(&p, &vm).await.expect("the failed VM is kept");
    assert_eq!(v["state"], "Error", "{v}");
    cs(
        &p,
        &["updateConfiguration", "name=expunge.delay", "value=5"],
    )
    .unwrap();
    let started = Instant::now();
    let bound = Duration::from_secs(60);
    while vm_view(&p, &vm).await.is_some() {
        assert!(
            started.elapsed() < bound,
            "the Error VM is still listed {bound:?} after expunge.delay became 5 s\n{}",
            log_tail(&p)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "the Error VM was expunged {:.1} s after expunge.delay became 5 s",
        started.elapsed().as_secs_f64()
    );
    assert_clean(&p, &env, &z, &vm, &before).await;
    // Its expunge recorded the event CloudStack records.
    let events = cs(&p, &["listEvents", "type=VM.EXPUNGE"]).unwrap();
    assert!(
        events["event"].as_array().is_some_and(|e| e
            .iter()
            .any(|e| e["description"].as_str().is_some_and(|d| d.contains(&vm)))),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_reboot_that_loses_running_vms_is_reconciled() {
    let env = TestEnv::new("vm-reboot");
    let p = Platform::start(&env);
    let z = zone(&p).await;
    let before = used(&p, &z.id).await;
    let (vm, job) = deploy(&p, &z, &z.small, &[]).await;
    let v = succeeded(&job)["virtualmachine"].clone();
    let host = v["hostname"].as_str().unwrap().to_string();
    let holding = used(&p, &z.id).await;
    assert_ne!(holding, before);
    let alerts_before = alerts(&p).await;
    // The host reboots: its agent dies, and starts again on a host without VMs.
    let process = format!("agent-{host}");
    let status = p.runner.status().await;
    let agent = status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == process.as_str())
        .unwrap_or_else(|| panic!("no process {process}: {status:#}"));
    let pid = agent["pid"].as_u64().unwrap_or_else(|| panic!("{agent}")) as i32;
    let restarts = agent["restarts"].as_u64().unwrap();
    std::fs::write(env.home.join("agents").join(&host).join("reboot"), b"").unwrap();
    // SAFETY: a process of this test's runner, by its pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill {pid}");
    println!("killed {process} (pid {pid}) with the reboot marker in place");
    let started = Instant::now();
    let bound = Duration::from_secs(90);
    let stopped = loop {
        let v = vm_view(&p, &vm).await.expect("the VM is still there");
        if v["state"] == "Stopped" {
            break v;
        }
        assert!(
            started.elapsed() < bound,
            "the VM is not Stopped {bound:?} after its host rebooted: {v}\n{}",
            log_tail(&p)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "the VM was Stopped {:.1} s after the kill",
        started.elapsed().as_secs_f64()
    );
    assert!(stopped["hostid"].is_null(), "{stopped}");
    let after = used(&p, &z.id).await;
    assert_eq!(
        (after[&MEMORY], after[&CPU]),
        (before[&MEMORY], before[&CPU]),
        "its capacity is given back"
    );
    assert_eq!(after[&STORAGE], holding[&STORAGE], "its volume stays");
    let new: Vec<Value> = alerts(&p)
        .await
        .into_iter()
        .filter(|a| !alerts_before.contains(a))
        .collect();
    println!("new alerts: {new:?}");
    assert!(
        new.iter().any(|a| a["type"] == 27
            && a["description"]
                .as_str()
                .is_some_and(|d| d.contains("VM state sync alert") && d.contains(&vm))),
        "no sync alert about VM {vm}: {new:?}"
    );
    // The agent was restarted by the runner, and the host holds no VM now.
    let status = p.runner.status().await;
    let agent = status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == process.as_str())
        .unwrap()
        .clone();
    assert!(agent["restarts"].as_u64().unwrap() > restarts, "{agent}");
    assert!(!env.home.join("agents").join(&host).join("reboot").exists());
    // The Stopped VM is destroyed for good: its disk goes from the host.
    succeeded(&destroy(&p, &vm).await);
    assert_eq!(used(&p, &z.id).await, before);
    assert_eq!(on_hosts(&env, &vm), Vec::<String>::new());
}

async fn alerts(p: &Platform) -> Vec<Value> {
    let (status, body) = p.get(&[("command", "listAlerts")]).await;
    assert_eq!(status, 200, "{body}");
    body["listalertsresponse"]["alert"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}
