//! The real `stratus-agent` binary on the real RabbitMQ (127.0.0.1:5672,
//! guest), in a vhost of its own, without Consul: volumes made and a VM
//! started through saga step commands, the agent killed with SIGKILL and
//! started again (its full report still lists the VM running), the VM
//! stopped (a full report after the next restart lists nothing), and an
//! undecodable command dead-lettered to the parking queue.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use serde_json::json;
use stratus_agent::agent::envelope_of;
use stratus_contracts::config::Config;
use stratus_contracts::message_types::Placement;
use stratus_contracts::message_types::agent::{self, PowerState, VmPower, VmReport};
use stratus_contracts::message_types::network::NicInfo;
use stratus_contracts::message_types::saga::{Outcome, Step, StepRef, StepResult};
use stratus_contracts::message_types::storage::VolumeInfo;
use stratus_contracts::names;
use stratus_messaging::Envelope;
use stratus_messaging::broker;
use stratus_messaging::publisher::{Outgoing, Publisher};

const HOST: &str = "SimHost-it-h0";
const VM: &str = "0b0c9d7e-1f2a-4b3c-8d4e-5f6a7b8c9d01";
const ROOT: &str = "1c1d0e8f-2a3b-4c4d-9e5f-6a7b8c9d0e02";

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (is RabbitMQ installed?)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A vhost and a `STRATUS_HOME` of the test's own, removed on drop.
struct TestEnv {
    vhost: String,
    home: PathBuf,
    config: Config,
}

impl TestEnv {
    fn new() -> Self {
        let vhost = format!("test-agent-{:016x}", rand::random::<u64>());
        rabbitmqctl(&["-q", "add_vhost", &vhost]);
        rabbitmqctl(&[
            "-q",
            "set_permissions",
            "-p",
            &vhost,
            "guest",
            ".*",
            ".*",
            ".*",
        ]);
        let home = std::env::temp_dir().join(format!("stratus-{vhost}"));
        std::fs::create_dir_all(&home).unwrap();
        let config = Config::from_lookup(|k| match k {
            "STRATUS_AMQP_VHOST" => Some(vhost.clone()),
            "STRATUS_HOME" => Some(home.display().to_string()),
            "CONSUL_HTTP_ADDR" | "CONSUL_HTTP_TOKEN" | "STRATUS_TOPOLOGY" => None,
            _ => std::env::var(k).ok(),
        })
        .unwrap();
        Self {
            vhost,
            home,
            config,
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.vhost])
            .output();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// The real agent binary, killed (SIGKILL) on drop.
struct AgentProcess {
    child: Child,
    log: PathBuf,
}

impl AgentProcess {
    fn start(env: &TestEnv, run: u32) -> Self {
        let log = env.home.join(format!("agent-{run}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_stratus-agent"));
        command
            .args(["--host", HOST])
            .env_remove("CONSUL_HTTP_ADDR")
            .env_remove("CONSUL_HTTP_TOKEN")
            .env_remove("STRATUS_TOPOLOGY")
            .env("RUST_LOG", "info,lapin=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env.config.to_env() {
            command.env(k, v);
        }
        Self {
            child: command.spawn().expect("the stratus-agent binary starts"),
            log,
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A queue of the test's own on an exchange, read as envelopes.
struct Watch {
    _channel: Channel,
    consumer: lapin::Consumer,
}

impl Watch {
    async fn bind(connection: &Connection, exchange: &str, key: &str) -> Self {
        let channel = connection.create_channel().await.unwrap();
        let queue = format!("test.watch.{:016x}", rand::random::<u64>());
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self::on(channel, &queue).await
    }

    async fn on(channel: Channel, queue: &str) -> Self {
        let consumer = channel
            .basic_consume(
                queue.into(),
                "test".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self {
            _channel: channel,
            consumer,
        }
    }

    /// The next delivery's properties and body.
    async fn next_raw(&mut self, deadline: Instant) -> Option<(BasicProperties, Vec<u8>)> {
        let left = deadline.saturating_duration_since(Instant::now());
        let delivery = tokio::time::timeout(left, self.consumer.next())
            .await
            .ok()??
            .unwrap();
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        Some((delivery.properties.clone(), delivery.data.clone()))
    }

    /// The first event that `pick` takes, within 10 s (others are skipped).
    async fn expect<T>(
        &mut self,
        agent: &AgentProcess,
        what: &str,
        mut pick: impl FnMut(&Envelope) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some((props, body)) = self.next_raw(deadline).await {
            let env = envelope_of(&props, &body).unwrap();
            if let Some(found) = pick(&env) {
                return found;
            }
        }
        panic!("no {what} within 10 s; agent log:\n{}", agent.log());
    }
}

fn placement() -> Placement {
    Placement {
        zone_id: "2d2e1f90-3b4c-4d5e-8f60-7b8c9d0e1f03".into(),
        pod_id: "3e3f2a01-4c5d-4e6f-9071-8c9d0e1f2a04".into(),
        cluster_id: "4f4a3b12-5d6e-4f70-8182-9d0e1f2a3b05".into(),
        host_id: "5a5b4c23-6e7f-4081-9293-0e1f2a3b4c06".into(),
        host_name: HOST.into(),
    }
}

fn step<T>(name: &str, input: T) -> Step<T> {
    Step {
        saga: StepRef {
            saga_id: "6b6c5d34-7f80-4192-a3a4-1f2a3b4c5d07".into(),
            step: name.into(),
            undo: false,
        },
        input,
    }
}

async fn send<T: serde::Serialize>(publisher: &Publisher, message_type: &str, body: &T) {
    let env = Envelope::new(message_type, body).with_job_id("7c7d6e45-8091-42a3-b4b5-2a3b4c5d6e08");
    publisher
        .publish(Outgoing::envelope(
            names::COMMANDS_EXCHANGE,
            &names::instance_routing_key(message_type, HOST),
            &env,
        ))
        .await
        .unwrap();
}

fn start_vm() -> Step<agent::StartVm> {
    step(
        "start-vm",
        agent::StartVm {
            vm_id: VM.into(),
            vm_name: "i-2-12-VM".into(),
            placement: placement(),
            cpu_number: 1,
            cpu_speed: 500,
            memory_mb: 512,
            nics: vec![NicInfo {
                nic_id: "af0a9178-b3c4-45d6-a7e8-5d6e7f801911".into(),
                network_id: "b01ba289-c4d5-46e7-b8f9-6e7f80192a12".into(),
                ip_address: "10.1.1.23".into(),
                netmask: "255.255.255.0".into(),
                gateway: "10.1.1.1".into(),
                mac_address: "02:00:4c:5a:00:17".into(),
                vlan: Some("vlan://101".into()),
                is_default: true,
                device_id: 0,
            }],
            volume_ids: vec![ROOT.into()],
            user_data: None,
        },
    )
}

/// Closes the agent's connections in `vhost` from the broker's side; how many.
fn close_agent_connections(vhost: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_connections",
            "pid",
            "vhost",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    let mut closed = 0;
    for line in listing.lines() {
        let mut fields = line.split('\t');
        let (Some(pid), Some(v)) = (fields.next(), fields.next()) else {
            continue;
        };
        if v == vhost && line.contains(&format!("stratus-agent {HOST}")) {
            rabbitmqctl(&[
                "-q",
                "close_connection",
                pid,
                "test: broker drops the agent",
            ]);
            closed += 1;
        }
    }
    closed
}

fn step_result(env: &Envelope, step_name: &str) -> Option<Outcome> {
    if env.message_type != agent::STEP_RESULT {
        return None;
    }
    let result: StepResult = env.body().unwrap();
    (result.saga.step == step_name).then_some(result.outcome)
}

fn report(env: &Envelope, full: bool) -> Option<VmReport> {
    if env.message_type != agent::VM_REPORT {
        return None;
    }
    let report: VmReport = env.body().unwrap();
    (report.full == full && report.host_name == HOST).then_some(report)
}

fn state_file(home: &Path) -> PathBuf {
    home.join("agents").join(HOST).join("state.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_steps_and_keeps_its_vms_across_a_kill() {
    let started = Instant::now();
    let env = TestEnv::new();
    let connection = broker::connect(&env.config, "agent test").await.unwrap();
    let topology = broker::topology(&env.config).unwrap();
    broker::declare_topology(&connection, &topology)
        .await
        .unwrap();
    let publisher = Publisher::new(env.config.clone(), Arc::new(topology), "agent test");
    let mut events = Watch::bind(&connection, names::INTERNAL_EVENTS_EXCHANGE, "agent.#").await;

    // First start: an empty host reports in full once it consumes.
    let agent = AgentProcess::start(&env, 1);
    let first = events
        .expect(&agent, "first full report", |e| report(e, true))
        .await;
    assert!(first.vms.is_empty(), "{first:?}");

    send(
        &publisher,
        agent::CREATE_VOLUMES,
        &step(
            "create-volumes",
            agent::CreateVolumes {
                vm_id: VM.into(),
                placement: placement(),
                volumes: vec![VolumeInfo {
                    volume_id: ROOT.into(),
                    name: "ROOT-12".into(),
                    volume_type: "ROOT".into(),
                    size: 2 << 30,
                    pool_id: "8d8e7f56-91a2-43b4-85c6-3b4c5d6e7f09".into(),
                    device_id: 0,
                    template_id: Some("9e9f8067-a2b3-44c5-96d7-4c5d6e7f8010".into()),
                }],
            },
        ),
    )
    .await;
    let created = events
        .expect(&agent, "create-volumes result", |e| {
            step_result(e, "create-volumes")
        })
        .await;
    assert_eq!(created, Outcome::Done { output: json!({}) });

    send(&publisher, agent::START_VM, &start_vm()).await;
    let on = VmPower {
        vm_id: VM.into(),
        power_state: PowerState::PowerOn,
    };
    let start_result = events
        .expect(&agent, "start-vm result", |e| step_result(e, "start-vm"))
        .await;
    assert_eq!(
        start_result,
        Outcome::Done {
            output: json!({ "power_state": "PowerOn" })
        }
    );
    let changed = events
        .expect(&agent, "VM report", |e| report(e, false))
        .await;
    assert_eq!(changed.vms, vec![on.clone()]);
    let mode = std::fs::metadata(state_file(&env.home))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Killed without a word, started again: the VM is still there.
    agent.kill();
    let agent = AgentProcess::start(&env, 2);
    let after_kill = events
        .expect(&agent, "full report after the kill", |e| report(e, true))
        .await;
    assert_eq!(after_kill.vms, vec![on.clone()]);

    // The broker drops the agent's connections (as in a broker restart): it
    // reconnects and consumes again, and a repeated start is answered Done.
    let closed = close_agent_connections(&env.vhost);
    assert!(closed >= 1, "no agent connection found to close");
    send(&publisher, agent::START_VM, &start_vm()).await;
    let again = events
        .expect(&agent, "repeated start-vm result", |e| {
            step_result(e, "start-vm")
        })
        .await;
    assert_eq!(
        again,
        Outcome::Done {
            output: json!({ "power_state": "PowerOn" })
        }
    );
    assert!(
        agent.log().contains("reconnecting"),
        "the agent never saw its connection go: {}",
        agent.log()
    );

    // A command that is not an envelope is dead-lettered to the parking queue.
    let parked_channel = connection.create_channel().await.unwrap();
    let mut parked = Watch::on(parked_channel, names::PARKED_QUEUE).await;
    let raw = connection.create_channel().await.unwrap();
    raw.basic_publish(
        names::COMMANDS_EXCHANGE.into(),
        names::instance_routing_key(agent::STOP_VM, HOST)
            .as_str()
            .into(),
        BasicPublishOptions::default(),
        b"not json",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (_, body) = parked
        .next_raw(deadline)
        .await
        .unwrap_or_else(|| panic!("nothing parked; agent log:\n{}", agent.log()));
    assert_eq!(body, b"not json");

    send(
        &publisher,
        agent::STOP_VM,
        &step(
            "stop-vm",
            agent::StopVm {
                vm_id: VM.into(),
                placement: placement(),
            },
        ),
    )
    .await;
    let stopped = events
        .expect(&agent, "stop-vm result", |e| step_result(e, "stop-vm"))
        .await;
    assert_eq!(stopped, Outcome::Done { output: json!({}) });
    let changed = events
        .expect(&agent, "VM report", |e| report(e, false))
        .await;
    assert_eq!(
        changed.vms,
        vec![VmPower {
            vm_id: VM.into(),
            power_state: PowerState::PowerOff
        }]
    );

    agent.kill();
    let agent = AgentProcess::start(&env, 3);
    let last = events
        .expect(&agent, "full report after the stop", |e| report(e, true))
        .await;
    assert!(last.vms.is_empty(), "{last:?}");
    assert!(agent.log().contains("no heartbeat runs"), "{}", agent.log());
    agent.kill();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
