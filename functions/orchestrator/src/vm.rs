//! The VM sagas: deploy, destroy and expunge, as data for the engine
//! ([`crate::saga`]): their steps, what each step sends, and the local steps.
//!
//! Deploy (startvm=true):
//!
//! | step | runs at | action | undo |
//! |---|---|---|---|
//! | create-record | here | the VM row, `Starting` | the VM row `Error` (expunged after `expunge.delay`) |
//! | allocate-nics | network | NICs, addresses, MACs (the default network on first use) | release-nics |
//! | reserve-capacity | compute | placement, CPU and memory held on the host | release-capacity |
//! | allocate-volumes | storage | root (and data) volume rows, pool capacity | release-volumes |
//! | create-volumes | host agent | the volumes on the host | destroy-volumes |
//! | start-vm | host agent | the VM defined and running | stop-vm |
//! | finish | here | the VM `Running` with its host and NICs, volumes `Ready`; the job's result | - |
//!
//! With startvm=false only create-record, allocate-nics, allocate-volumes
//! and finish run: the VM ends `Stopped` with no host, as CloudStack's.
//!
//! Destroy and expunge are forward sagas: past the stop there is nothing
//! to undo (a VM that was stopped stays stopped), so only their first step,
//! which moves the VM to a transitional state, has an undo.
//!
//! The deploy saga owns the VM's and its volumes' lifecycle states; the
//! components own what they allocate (NICs and addresses, capacity,
//! volume rows and pool capacity).

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stratus_cloudstack::{ApiError, views};
use stratus_contracts::message_types::{Placement, agent, compute, network, storage, vm};
use stratus_contracts::names::instance_routing_key;
use stratus_model::*;
use stratus_store::{Index, Store, StoreError, Transaction};

use crate::saga::{Command, Failure, Run, StepCtx, StepDef, StepError};

pub const DEPLOY: &str = "vm-deploy";
pub const DESTROY: &str = "vm-destroy";
pub const EXPUNGE: &str = "vm-expunge";

const DEPLOY_STEPS: &[StepDef] = &[
    StepDef {
        name: "create-record",
        action: Run::Local,
        undo: Some(Run::Local),
    },
    StepDef {
        name: "allocate-nics",
        action: Run::Command(network::ALLOCATE_NICS),
        undo: Some(Run::Command(network::RELEASE_NICS)),
    },
    StepDef {
        name: "reserve-capacity",
        action: Run::Command(compute::RESERVE_CAPACITY),
        undo: Some(Run::Command(compute::RELEASE_CAPACITY)),
    },
    StepDef {
        name: "allocate-volumes",
        action: Run::Command(storage::ALLOCATE_VOLUMES),
        undo: Some(Run::Command(storage::RELEASE_VOLUMES)),
    },
    StepDef {
        name: "create-volumes",
        action: Run::Agent(agent::CREATE_VOLUMES),
        undo: Some(Run::Agent(agent::DESTROY_VOLUMES)),
    },
    StepDef {
        name: "start-vm",
        action: Run::Agent(agent::START_VM),
        undo: Some(Run::Agent(agent::STOP_VM)),
    },
    StepDef {
        name: "finish",
        action: Run::Local,
        undo: None,
    },
];

const REMOVE_STEPS: &[StepDef] = &[
    StepDef {
        name: "mark",
        action: Run::Local,
        undo: Some(Run::Local),
    },
    StepDef {
        name: "stop-vm",
        action: Run::Agent(agent::STOP_VM),
        undo: None,
    },
    StepDef {
        name: "release-capacity",
        action: Run::Command(compute::RELEASE_CAPACITY),
        undo: None,
    },
    StepDef {
        name: "finish-destroy",
        action: Run::Local,
        undo: None,
    },
    StepDef {
        name: "mark-expunging",
        action: Run::Local,
        undo: None,
    },
    StepDef {
        name: "destroy-volumes",
        action: Run::Agent(agent::DESTROY_VOLUMES),
        undo: None,
    },
    StepDef {
        name: "release-volumes",
        action: Run::Command(storage::RELEASE_VOLUMES),
        undo: None,
    },
    StepDef {
        name: "release-nics",
        action: Run::Command(network::RELEASE_NICS),
        undo: None,
    },
    StepDef {
        name: "finish-expunge",
        action: Run::Local,
        undo: None,
    },
];

/// A step of a saga kind.
pub fn definition(kind: &str, step: &str) -> Option<&'static StepDef> {
    let steps = match kind {
        DEPLOY => DEPLOY_STEPS,
        DESTROY | EXPUNGE => REMOVE_STEPS,
        _ => return None,
    };
    steps.iter().find(|s| s.name == step)
}

/// What a deploy saga works from: the request and what it looked up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployParams {
    pub request: vm::Deploy,
    pub cpu_number: u32,
    pub cpu_speed: u32,
    pub memory_mb: u32,
    pub host_tags: Option<String>,
    pub zone_name: String,
    pub template_name: String,
    pub offering_name: String,
}

/// What a destroy or expunge saga works from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveParams {
    pub vm_id: String,
    pub account_id: String,
    pub zone_id: String,
    /// Expunge too (destroyVirtualMachine expunge=true, or expungeVirtualMachine).
    pub expunge: bool,
    /// This is expungeVirtualMachine (its result is `success`).
    pub expunge_only: bool,
    /// Where the VM runs or last ran (its volumes are there).
    pub placement: Option<Placement>,
    /// The VM has a host now (it runs there): stop it.
    pub running: bool,
    pub previous_state: VmState,
    pub nic_count: u32,
}

/// The steps a saga of `kind` with `parameters` runs, in order.
pub fn plan(kind: &str, parameters: &Value) -> Result<Vec<&'static str>, Failure> {
    match kind {
        DEPLOY => {
            let p: DeployParams = parse(parameters)?;
            Ok(if p.request.start {
                DEPLOY_STEPS.iter().map(|s| s.name).collect()
            } else {
                vec![
                    "create-record",
                    "allocate-nics",
                    "allocate-volumes",
                    "finish",
                ]
            })
        }
        DESTROY | EXPUNGE => {
            let p: RemoveParams = parse(parameters)?;
            let mut steps = vec!["mark"];
            if p.running {
                steps.push("stop-vm");
            }
            steps.push("release-capacity");
            if p.expunge {
                steps.push("mark-expunging");
                if p.placement.is_some() {
                    steps.push("destroy-volumes");
                }
                steps.extend(["release-volumes", "release-nics", "finish-expunge"]);
            } else {
                steps.push("finish-destroy");
            }
            Ok(steps)
        }
        other => Err(Failure::internal(format!("no saga kind {other}"))),
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, Failure> {
    serde_json::from_value(v.clone())
        .map_err(|e| Failure::internal(format!("saga parameters do not decode: {e}")))
}

/// The VM a deploy saga makes (None for other kinds).
pub fn vm_of(saga: &Saga) -> Option<Id<Vm>> {
    if saga.kind != DEPLOY {
        return None;
    }
    saga.parameters["request"]["vm_id"]
        .as_str()
        .and_then(|v| v.parse().ok())
}

/// The zone a saga works in, for alerts.
pub fn zone_of(parameters: &Value) -> Option<Id<Zone>> {
    parameters["request"]["zone_id"]
        .as_str()
        .or(parameters["zone_id"].as_str())
        .and_then(|z| z.parse().ok())
}

fn id<T>(s: &str, what: &str) -> Result<Id<T>, Failure> {
    s.parse()
        .map_err(|_| Failure::internal(format!("{what} {s:?} is not a uuid")))
}

fn output<T: serde::de::DeserializeOwned>(cx: &StepCtx<'_>, step: &str) -> Result<T, Failure> {
    let v = cx
        .output(step)
        .ok_or_else(|| Failure::internal(format!("step {step} has no output")))?;
    parse(v)
}

fn agent_key(message_type: &str, p: &Placement) -> String {
    instance_routing_key(message_type, &p.host_name)
}

/// The command a remote step (or its undo) sends.
pub async fn command(
    cx: &StepCtx<'_>,
    step: &str,
    undo: bool,
    run: Run,
) -> Result<Command, StepError> {
    let (message_type, is_agent) = match run {
        Run::Command(t) => (t, false),
        Run::Agent(t) => (t, true),
        Run::Local => return Err(Failure::internal("a local step sends nothing").into()),
    };
    let (input, placement): (Value, Option<Placement>) = match cx.saga.kind.as_str() {
        DEPLOY => deploy_input(cx, step, undo)?,
        _ => remove_input(cx, step)?,
    };
    let routing_key = if is_agent {
        let p = placement
            .ok_or_else(|| Failure::internal(format!("step {step} has no host to go to")))?;
        agent_key(message_type, &p)
    } else {
        message_type.to_string()
    };
    Ok(Command {
        message_type,
        routing_key,
        input,
    })
}

fn deploy_input(
    cx: &StepCtx<'_>,
    step: &str,
    undo: bool,
) -> Result<(Value, Option<Placement>), Failure> {
    let p: DeployParams = parse(&cx.saga.parameters)?;
    let r = &p.request;
    let to = |v: &dyn erased::Ser| v.value();
    let placement = || output::<Placement>(cx, "reserve-capacity");
    let volumes = || output::<storage::VolumesAllocated>(cx, "allocate-volumes");
    Ok(match (step, undo) {
        ("allocate-nics", false) => (
            to(&network::AllocateNics {
                vm_id: r.vm_id.clone(),
                vm_name: r.name.clone(),
                account_id: r.account_id.clone(),
                zone_id: r.zone_id.clone(),
                network_ids: r.network_ids.clone(),
                ip_address: r.ip_address.clone(),
            }),
            None,
        ),
        ("allocate-nics", true) => (
            to(&network::ReleaseNics {
                vm_id: r.vm_id.clone(),
                count: r.network_ids.len().max(1) as u32,
            }),
            None,
        ),
        ("reserve-capacity", false) => (
            to(&compute::ReserveCapacity {
                vm_id: r.vm_id.clone(),
                zone_id: r.zone_id.clone(),
                cpu_number: p.cpu_number,
                cpu_speed: p.cpu_speed,
                memory_mb: p.memory_mb,
                host_tags: p.host_tags.clone(),
                host_id: r.host_id.clone(),
            }),
            None,
        ),
        ("reserve-capacity", true) => (
            to(&compute::ReleaseCapacity {
                vm_id: r.vm_id.clone(),
            }),
            None,
        ),
        ("allocate-volumes", false) => (
            to(&storage::AllocateVolumes {
                vm_id: r.vm_id.clone(),
                vm_name: r.name.clone(),
                account_id: r.account_id.clone(),
                zone_id: r.zone_id.clone(),
                template_id: r.template_id.clone(),
                root_disk_size_gb: r.root_disk_size_gb,
                disk_offering_id: r.disk_offering_id.clone(),
                size_gb: r.size_gb,
                cluster_id: cx
                    .output("reserve-capacity")
                    .and_then(|_| placement().ok())
                    .map(|p| p.cluster_id),
            }),
            None,
        ),
        ("allocate-volumes", true) => (
            to(&storage::ReleaseVolumes {
                vm_id: r.vm_id.clone(),
            }),
            None,
        ),
        ("create-volumes", false) => {
            let at = placement()?;
            (
                to(&agent::CreateVolumes {
                    vm_id: r.vm_id.clone(),
                    placement: at.clone(),
                    volumes: volumes()?.volumes,
                }),
                Some(at),
            )
        }
        ("create-volumes", true) => {
            let at = placement()?;
            (
                to(&agent::DestroyVolumes {
                    vm_id: r.vm_id.clone(),
                    placement: at.clone(),
                    volume_ids: volumes()?
                        .volumes
                        .into_iter()
                        .map(|v| v.volume_id)
                        .collect(),
                }),
                Some(at),
            )
        }
        ("start-vm", false) => {
            let at = placement()?;
            let nics: network::NicsAllocated = output(cx, "allocate-nics")?;
            (
                to(&agent::StartVm {
                    vm_id: r.vm_id.clone(),
                    vm_name: r.name.clone(),
                    placement: at.clone(),
                    cpu_number: p.cpu_number,
                    cpu_speed: p.cpu_speed,
                    memory_mb: p.memory_mb,
                    nics: nics.nics,
                    volume_ids: volumes()?
                        .volumes
                        .into_iter()
                        .map(|v| v.volume_id)
                        .collect(),
                    user_data: r.user_data.clone(),
                }),
                Some(at),
            )
        }
        ("start-vm", true) => {
            let at = placement()?;
            (
                to(&agent::StopVm {
                    vm_id: r.vm_id.clone(),
                    placement: at.clone(),
                }),
                Some(at),
            )
        }
        (other, _) => {
            return Err(Failure::internal(format!(
                "deploy step {other} sends no command"
            )));
        }
    })
}

fn remove_input(cx: &StepCtx<'_>, step: &str) -> Result<(Value, Option<Placement>), Failure> {
    let p: RemoveParams = parse(&cx.saga.parameters)?;
    let to = |v: &dyn erased::Ser| v.value();
    Ok(match step {
        "stop-vm" => {
            let at = p
                .placement
                .clone()
                .ok_or_else(|| Failure::internal("the VM has no host"))?;
            (
                to(&agent::StopVm {
                    vm_id: p.vm_id.clone(),
                    placement: at.clone(),
                }),
                Some(at),
            )
        }
        "release-capacity" => (
            to(&compute::ReleaseCapacity {
                vm_id: p.vm_id.clone(),
            }),
            None,
        ),
        "destroy-volumes" => {
            let at = p
                .placement
                .clone()
                .ok_or_else(|| Failure::internal("the VM's volumes have no host"))?;
            let ids = cx
                .output("mark")
                .and_then(|m| m["volume_ids"].as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            (
                to(&agent::DestroyVolumes {
                    vm_id: p.vm_id.clone(),
                    placement: at.clone(),
                    volume_ids: ids,
                }),
                Some(at),
            )
        }
        "release-volumes" => (
            to(&storage::ReleaseVolumes {
                vm_id: p.vm_id.clone(),
            }),
            None,
        ),
        "release-nics" => (
            to(&network::ReleaseNics {
                vm_id: p.vm_id.clone(),
                count: p.nic_count.max(1),
            }),
            None,
        ),
        other => {
            return Err(Failure::internal(format!(
                "remove step {other} sends no command"
            )));
        }
    })
}

/// Serialising through a trait object, so that the step table above reads
/// as one `match`.
mod erased {
    pub trait Ser {
        fn value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}

/// Runs a local step (or its undo), its writes in `tx`.
pub async fn local(
    cx: &StepCtx<'_>,
    step: &str,
    undo: bool,
    tx: &mut Transaction,
) -> Result<Value, StepError> {
    match (cx.saga.kind.as_str(), step, undo) {
        (DEPLOY, "create-record", false) => create_record(cx, tx).await,
        (DEPLOY, "create-record", true) => mark_error(cx, tx).await,
        (DEPLOY, "finish", false) => finish_deploy(cx, tx).await,
        (DESTROY | EXPUNGE, "mark", false) => mark(cx, tx).await,
        (DESTROY | EXPUNGE, "mark", true) => unmark(cx, tx).await,
        (DESTROY | EXPUNGE, "finish-destroy", false) => finish_destroy(cx, tx).await,
        (DESTROY | EXPUNGE, "mark-expunging", false) => mark_expunging(cx, tx).await,
        (DESTROY | EXPUNGE, "finish-expunge", false) => finish_expunge(cx, tx).await,
        (kind, step, undo) => {
            Err(Failure::internal(format!("{kind} has no local step {step} (undo: {undo})")).into())
        }
    }
}

fn event(
    cx: &StepCtx<'_>,
    account: Id<Account>,
    vm: Id<Vm>,
    kind: &str,
    level: EventLevel,
    description: String,
) -> Event {
    Event {
        id: Id::new(),
        event_type: kind.into(),
        level,
        state: EventState::Completed,
        description,
        account_id: account,
        resource_type: Some("VirtualMachine".into()),
        resource_id: Some(vm.uuid()),
        created: cx.now,
    }
}

async fn create_record(cx: &StepCtx<'_>, tx: &mut Transaction) -> Result<Value, StepError> {
    let p: DeployParams = parse(&cx.saga.parameters)?;
    let r = &p.request;
    let vm_id: Id<Vm> = id(&r.vm_id, "vm id")?;
    // Made in this saga's own committed transaction before: nothing to do.
    if cx.store.get(vm_id).await?.is_some() {
        return Ok(json!({}));
    }
    let vm = Vm {
        id: vm_id,
        name: r.name.clone(),
        display_name: r.display_name.clone(),
        account_id: id(&r.account_id, "account id")?,
        domain_id: id(&r.domain_id, "domain id")?,
        zone_id: id(&r.zone_id, "zone id")?,
        host_id: None,
        last_host_id: None,
        template_id: id(&r.template_id, "template id")?,
        service_offering_id: id(&r.service_offering_id, "service offering id")?,
        state: VmState::Starting,
        power_state: PowerState::PowerOff,
        ha_enabled: false,
        cpu_number: p.cpu_number,
        cpu_speed: p.cpu_speed,
        memory: p.memory_mb,
        user_data: r.user_data.clone(),
        ssh_key_pairs: r.keypairs.clone(),
        created: cx.now,
        zone_name: p.zone_name.clone(),
        host_name: None,
        template_name: p.template_name.clone(),
        service_offering_name: p.offering_name.clone(),
        nics: vec![],
        state_changed: Some(cx.now),
        saga_id: Some(cx.saga.id),
    };
    tx.create(&vm);
    Ok(json!({}))
}

/// The undo of create-record: the VM row stays, `Error`, until the expunge
/// sweep removes it after `expunge.delay` (as CloudStack keeps a failed
/// deploy's VM in Error).
async fn mark_error(cx: &StepCtx<'_>, tx: &mut Transaction) -> Result<Value, StepError> {
    let p: DeployParams = parse(&cx.saga.parameters)?;
    let vm_id: Id<Vm> = id(&p.request.vm_id, "vm id")?;
    let Some(mut vm) = cx.store.get(vm_id).await? else {
        return Ok(json!({}));
    };
    if vm.value.state != VmState::Error {
        vm.value.state = VmState::Error;
        vm.value.power_state = PowerState::PowerOff;
        vm.value.host_id = None;
        vm.value.nics.clear();
        vm.value.state_changed = Some(cx.now);
        vm.value.saga_id = None;
        tx.update(&vm);
        let why = cx
            .saga
            .error
            .as_ref()
            .and_then(|e| e["errortext"].as_str())
            .unwrap_or("");
        tx.create(&event(
            cx,
            vm.value.account_id,
            vm.value.id,
            "VM.CREATE",
            EventLevel::Error,
            format!("Error while deploying VM {}: {why}", vm.value.name),
        ));
    }
    Ok(json!({}))
}

fn nic_of(n: &network::NicInfo, vm: &Vm) -> Result<Nic, Failure> {
    Ok(Nic {
        id: id(&n.nic_id, "nic id")?,
        vm_id: vm.id,
        network_id: id(&n.network_id, "network id")?,
        account_id: vm.account_id,
        ip_address: n.ip_address.clone(),
        netmask: n.netmask.clone(),
        gateway: n.gateway.clone(),
        mac_address: n.mac_address.clone(),
        is_default: n.is_default,
        device_id: n.device_id,
    })
}

async fn finish_deploy(cx: &StepCtx<'_>, tx: &mut Transaction) -> Result<Value, StepError> {
    let p: DeployParams = parse(&cx.saga.parameters)?;
    let vm_id: Id<Vm> = id(&p.request.vm_id, "vm id")?;
    let mut vm = cx
        .store
        .get(vm_id)
        .await?
        .ok_or_else(|| Failure::internal(format!("VM {vm_id} vanished during its deploy")))?;
    let nics: network::NicsAllocated = output(cx, "allocate-nics")?;
    let volumes: storage::VolumesAllocated = output(cx, "allocate-volumes")?;
    let started = cx.state("start-vm") == Some(StepState::Done);
    let v = &mut vm.value;
    v.nics = nics
        .nics
        .iter()
        .map(|n| nic_of(n, v))
        .collect::<Result<_, _>>()?;
    if started {
        let at: Placement = output(cx, "reserve-capacity")?;
        v.state = VmState::Running;
        v.power_state = PowerState::PowerOn;
        v.host_id = Some(id(&at.host_id, "host id")?);
        v.last_host_id = v.host_id;
        v.host_name = Some(at.host_name.clone());
    } else {
        v.state = VmState::Stopped;
        v.power_state = PowerState::PowerOff;
    }
    v.state_changed = Some(cx.now);
    v.saga_id = None;
    for info in &volumes.volumes {
        let vid: Id<Volume> = id(&info.volume_id, "volume id")?;
        let Some(mut vol) = cx.store.get(vid).await? else {
            return Err(
                Failure::internal(format!("volume {vid} vanished during the deploy")).into(),
            );
        };
        let state = if started {
            VolumeState::Ready
        } else {
            VolumeState::Allocated
        };
        if vol.value.state != state || vol.value.vm_id != Some(vm_id) {
            vol.value.state = state;
            vol.value.vm_id = Some(vm_id);
            tx.update(&vol);
        }
    }
    tx.update(&vm);
    tx.create(&event(
        cx,
        vm.value.account_id,
        vm_id,
        "VM.CREATE",
        EventLevel::Info,
        format!("Successfully completed deploying Vm. Vm Id: {vm_id}"),
    ));
    Ok(json!({ "virtualmachine": views::vm(&vm.value) }))
}

/// Volumes of a VM (root and data), by its account.
async fn volumes_of(store: &Store, vm: &Vm) -> Result<Vec<Volume>, StoreError> {
    Ok(store
        .walk::<Volume>(&Index::Account(vm.account_id.uuid()))
        .await?
        .into_iter()
        .map(|v| v.value)
        .filter(|v| v.vm_id == Some(vm.id))
        .collect())
}

async fn mark(cx: &StepCtx<'_>, tx: &mut Transaction) -> Result<Value, StepError> {
    let p: RemoveParams = parse(&cx.saga.parameters)?;
    let vm_id: Id<Vm> = id(&p.vm_id, "vm id")?;
    let command = if p.expunge_only {
        "expungeVirtualMachine"
    } else {
        "destroyVirtualMachine"
    };
    let Some(mut vm) = cx.store.get(vm_id).await? else {
        return Err(Failure::from_api(ApiError::entity_not_found(command, "id", &p.vm_id)).into());
    };
    let state = vm.value.state;
    if let Some(other) = vm.value.saga_id
        && other != cx.saga.id
        && let Some(holder) = cx.store.get(other).await?
        && matches!(
            holder.value.status,
            SagaStatus::Running | SagaStatus::Unwinding
        )
    {
        return Err(Failure::param(format!(
            "Unable to {} VM {vm_id}: another job is working on it{}",
            if p.expunge_only { "expunge" } else { "destroy" },
            holder
                .value
                .job_id
                .map(|j| format!(" (job {j})"))
                .unwrap_or_default()
        ))
        .into());
    }
    let allowed = if p.expunge_only {
        matches!(
            state,
            VmState::Destroyed | VmState::Error | VmState::Expunging
        )
    } else {
        matches!(
            state,
            VmState::Running | VmState::Stopped | VmState::Error | VmState::Destroyed
        ) && (state != VmState::Destroyed || p.expunge)
    };
    if !allowed {
        return Err(Failure::param(if p.expunge_only {
            format!(
                "Please specify a VM that is either Stopped or Expunged. VM {vm_id} is {}",
                state_name(&state)
            )
        } else {
            format!(
                "Unable to destroy VM {vm_id}: it is in state {}",
                state_name(&state)
            )
        })
        .into());
    }
    let volume_ids: Vec<String> = volumes_of(cx.store, &vm.value)
        .await?
        .iter()
        .map(|v| v.id.to_string())
        .collect();
    // As CloudStack: a running VM is Stopping until it stops; one that is
    // not running goes to Expunging when it is expunged, else stays.
    let next = if p.running {
        VmState::Stopping
    } else if p.expunge {
        VmState::Expunging
    } else {
        state
    };
    vm.value.state = next;
    if next != state {
        vm.value.state_changed = Some(cx.now);
    }
    // Held by this saga (written even when the state stays, so that two
    // jobs marking at once collide on the VM's version).
    vm.value.saga_id = Some(cx.saga.id);
    tx.update(&vm);
    Ok(json!({ "volume_ids": volume_ids }))
}

/// The undo of mark: the VM back in the state the saga left it in for
/// good. Once its expunge began (volumes or NICs may be gone) it stays
/// `Expunging`, and the sweep expunges it again later; once it stopped it is
/// `Stopped`; else it is as it was. Its lock is released.
async fn unmark(cx: &StepCtx<'_>, tx: &mut Transaction) -> Result<Value, StepError> {
    let p: RemoveParams = parse(&cx.saga.parameters)?;
    let vm_id: Id<Vm> = id(&p.vm_id, "vm id")?;
    let Some(mut vm) = cx.store.get(vm_id).await? else {
        return Ok(json!({}));
    };
    let began = |step: &str| cx.state(step).is_some_and(|s| s != StepState::Pending);
    let expunging = [
        "mark-expunging",
        "destroy-volumes",
        "release-volumes",
        "release-nics",
    ]
    .into_iter()
    .any(began);
    // Its output, not its state: unwinding marks a step with no undo Undone.
    let stopped = cx.output("stop-vm").is_some();
    let back = if expunging {
        VmState::Expunging
    } else if stopped {
        VmState::Stopped
    } else {
        p.previous_state
    };
    let v = &mut vm.value;
    if stopped || expunging {
        off_host(v);
    }
    v.state = back;
    v.state_changed = Some(cx.now);
    v.saga_id = None;
    tx.update(&vm);
    Ok(json!({}))
}

/// The VM of a remove saga, read for a step of it.
async fn removed_vm(
    cx: &StepCtx<'_>,
    what: &str,
) -> Result<(RemoveParams, stratus_store::Versioned<Vm>), StepError> {
    let p: RemoveParams = parse(&cx.saga.parameters)?;
    let vm_id: Id<Vm> = id(&p.vm_id, "vm id")?;
    let vm = cx
        .store
        .get(vm_id)
        .await?
        .ok_or_else(|| Failure::internal(format!("VM {vm_id} vanished during its {what}")))?;
    Ok((p, vm))
}

/// The VM no longer on a host: stopped, its last host kept.
fn off_host(v: &mut Vm) {
    if v.host_id.is_some() {
        v.last_host_id = v.host_id;
    }
    v.host_id = None;
    v.power_state = PowerState::PowerOff;
}

/// The VM, stopped, goes to `Expunging`: past this nothing is undone.
async fn mark_expunging(cx: &StepCtx<'_>, tx: &mut Transaction) -> Result<Value, StepError> {
    let (_, mut vm) = removed_vm(cx, "expunge").await?;
    let v = &mut vm.value;
    off_host(v);
    if v.state != VmState::Expunging {
        v.state = VmState::Expunging;
        v.state_changed = Some(cx.now);
    }
    tx.update(&vm);
    Ok(json!({}))
}

async fn finish_destroy(cx: &StepCtx<'_>, tx: &mut Transaction) -> Result<Value, StepError> {
    let (_, mut vm) = removed_vm(cx, "destroy").await?;
    let vm_id = vm.value.id;
    let v = &mut vm.value;
    off_host(v);
    v.state = VmState::Destroyed;
    v.state_changed = Some(cx.now);
    v.saga_id = None;
    tx.update(&vm);
    tx.create(&event(
        cx,
        vm.value.account_id,
        vm_id,
        "VM.DESTROY",
        EventLevel::Info,
        format!("Successfully completed destroying Vm. Vm Id: {vm_id}"),
    ));
    Ok(json!({ "virtualmachine": views::vm(&vm.value) }))
}

async fn finish_expunge(cx: &StepCtx<'_>, tx: &mut Transaction) -> Result<Value, StepError> {
    let p: RemoveParams = parse(&cx.saga.parameters)?;
    let vm_id: Id<Vm> = id(&p.vm_id, "vm id")?;
    let Some(vm) = cx.store.get(vm_id).await? else {
        return Ok(json!({ "success": true }));
    };
    tx.delete(&vm);
    tx.create(&event(
        cx,
        vm.value.account_id,
        vm_id,
        "VM.EXPUNGE",
        EventLevel::Info,
        format!("Successfully completed expunging Vm. Vm Id: {vm_id}"),
    ));
    if p.expunge_only {
        return Ok(json!({ "success": true }));
    }
    let mut shown = vm.value.clone();
    shown.state = VmState::Expunging;
    shown.host_id = None;
    Ok(json!({ "virtualmachine": views::vm(&shown) }))
}

impl Failure {
    pub fn from_api(e: ApiError) -> Self {
        Failure::new(e.code.code(), e.text)
    }
}

/// The parameters of a destroy or expunge saga for `vm` as it is now.
pub async fn remove_params(
    store: &Store,
    vm: &Vm,
    expunge: bool,
    expunge_only: bool,
) -> Result<RemoveParams, StoreError> {
    let host = vm.host_id.or(vm.last_host_id);
    let placement = match host {
        Some(h) => store.get(h).await?.map(|h| Placement {
            zone_id: h.value.zone_id.to_string(),
            pod_id: h.value.pod_id.to_string(),
            cluster_id: h.value.cluster_id.to_string(),
            host_id: h.value.id.to_string(),
            host_name: h.value.name.clone(),
        }),
        None => None,
    };
    // The NIC rows, not the VM's copy: a failed deploy's VM has none in its
    // copy, yet an undo that failed may have left some.
    let nics = store
        .walk::<Nic>(&Index::Account(vm.account_id.uuid()))
        .await?
        .into_iter()
        .filter(|n| n.value.vm_id == vm.id)
        .map(|n| n.value.device_id + 1)
        .max()
        .unwrap_or(0);
    Ok(RemoveParams {
        vm_id: vm.id.to_string(),
        account_id: vm.account_id.to_string(),
        zone_id: vm.zone_id.to_string(),
        expunge,
        expunge_only,
        running: vm.host_id.is_some() && placement.is_some(),
        placement,
        previous_state: vm.state,
        nic_count: nics.max(vm.nics.len() as u32).max(1),
    })
}

/// The parameters of a deploy saga: the request and what it names, looked up.
pub async fn deploy_params(store: &Store, r: &vm::Deploy) -> Result<DeployParams, StepError> {
    let not_found = |param: &str, value: &str| {
        Failure::from_api(ApiError::entity_not_found(
            "deployVirtualMachine",
            param,
            value,
        ))
    };
    let offering = match r.service_offering_id.parse::<Id<ServiceOffering>>() {
        Ok(i) => store.get(i).await?,
        Err(_) => None,
    }
    .ok_or_else(|| not_found("serviceofferingid", &r.service_offering_id))?
    .value;
    let template = match r.template_id.parse::<Id<Template>>() {
        Ok(i) => store.get(i).await?,
        Err(_) => None,
    }
    .ok_or_else(|| not_found("templateid", &r.template_id))?
    .value;
    let zone = match r.zone_id.parse::<Id<Zone>>() {
        Ok(i) => store.get(i).await?,
        Err(_) => None,
    }
    .ok_or_else(|| not_found("zoneid", &r.zone_id))?
    .value;
    Ok(DeployParams {
        request: r.clone(),
        cpu_number: offering.cpu_number,
        cpu_speed: offering.cpu_speed,
        memory_mb: offering.memory,
        host_tags: offering.host_tags.clone(),
        zone_name: zone.name,
        template_name: template.name,
        offering_name: offering.name,
    })
}

/// When a VM is due to be expunged: `Error` or `Destroyed` for `delay_s`
/// (`expunge.delay`), or left `Expunging` by a failed expunge, no saga
/// holding it, for `retry_s`.
pub fn expunge_due(vm: &Vm, delay_s: i64, retry_s: i64, now: chrono::DateTime<Utc>) -> bool {
    let after = match vm.state {
        VmState::Error | VmState::Destroyed => delay_s,
        VmState::Expunging if vm.saga_id.is_none() => retry_s,
        _ => return false,
    };
    vm.state_changed
        .unwrap_or(vm.created)
        .checked_add_signed(chrono::Duration::seconds(after))
        .is_some_and(|due| due <= now)
}
