//! Virtual machines: deploy, destroy and expunge start their sagas in the
//! orchestrator (the job and its command are written together, see
//! [`crate::jobs`]); the checks here are the ones CloudStack makes before it
//! answers with a job. And the simulator's `configureSimulator` /
//! `cleanupSimulatorMock`, which keep their mocks in Consul's KV for the
//! host agents' simulator driver.

use base64::Engine as _;
use futures::FutureExt;
use serde_json::{Value, json};
use stratus_cloudstack::{ApiError, Params};
use stratus_contracts::message_types::vm;
use stratus_contracts::simulator::{self, MOCK_PREFIX, Mock};
use stratus_model::samples::{Fixture, Sample};
use stratus_model::*;
use stratus_store::Index;

use super::{flag, named, walk};
use crate::registry::{ADMINS, ALL, Command, Kind, ROOT, Role, param, required};
use crate::scope::{self, Names};
use crate::{Ctx, jobs, store_error};
use stratus_cloudstack::views;

const DEPLOY_CMD: &str = "org.apache.cloudstack.api.command.user.vm.DeployVMCmd";
const DEPLOY_CMD_ADMIN: &str = "org.apache.cloudstack.api.command.admin.vm.DeployVMCmdByAdmin";
const DESTROY_CMD: &str = "org.apache.cloudstack.api.command.user.vm.DestroyVMCmd";
const DESTROY_CMD_ADMIN: &str = "org.apache.cloudstack.api.command.admin.vm.DestroyVMCmdByAdmin";
const EXPUNGE_CMD: &str = "org.apache.cloudstack.api.command.admin.vm.ExpungeVMCmd";

/// CloudStack's limit on `userdata` once decoded (`vm.userdata.max.length`'s default).
const USER_DATA_MAX: usize = 32768;

pub fn commands() -> Vec<Command> {
    let f = Fixture::default();
    let vm_view = views::vm(&Vm::sample(&f));
    vec![
        Command {
            is_async: true,
            ..Command::sync(
                "deployVirtualMachine",
                "Creates and automatically starts a virtual machine based on a service offering, disk offering, and template.",
                ALL,
                vec![
                    required("zoneid", Kind::Uuid, "availability zone for the virtual machine")
                        .naming(Names::public(Zone::KIND)),
                    required(
                        "serviceofferingid",
                        Kind::Uuid,
                        "the ID of the service offering for the virtual machine",
                    )
                    .naming(Names::public(ServiceOffering::KIND)),
                    required(
                        "templateid",
                        Kind::Uuid,
                        "the ID of the template for the virtual machine",
                    )
                    .naming(Names::template(scope::Outside::Denied(scope::not_permitted))),
                    param(
                        "startvm",
                        Kind::Boolean,
                        "true if start vm after creating; defaulted to true if not specified",
                    ),
                    param(
                        "networkids",
                        Kind::List,
                        "list of network ids used by virtual machine. Can't be specified with ipToNetworkList parameter",
                    )
                    .naming(scope::act_on::<Network>()),
                    param(
                        "ipaddress",
                        Kind::String,
                        "the ip address for default vm's network",
                    ),
                    param("keypair", Kind::String, "name of the ssh key pair used to login to the virtual machine"),
                    param(
                        "userdata",
                        Kind::String,
                        "an optional binary data that can be sent to the virtual machine upon a successful deployment. This binary data must be base64 encoded before adding it to the request.",
                    ),
                    param(
                        "hostid",
                        Kind::Uuid,
                        "destination Host ID to deploy the VM to - parameter available for root admin only",
                    )
                    .naming(Names::public(Host::KIND)),
                    param(
                        "rootdisksize",
                        Kind::Long,
                        "Optional field to resize root disk on deploy. Value is in GB.",
                    ),
                    param(
                        "diskofferingid",
                        Kind::Uuid,
                        "the ID of the disk offering for the virtual machine.",
                    )
                    .naming(Names::public(DiskOffering::KIND)),
                    param(
                        "size",
                        Kind::Long,
                        "the arbitrary size for the DATADISK volume. Mutually exclusive with diskOfferingId",
                    ),
                    param("name", Kind::String, "host name for the virtual machine"),
                    param(
                        "displayname",
                        Kind::String,
                        "an optional user generated name for the virtual machine",
                    ),
                    param(
                        "account",
                        Kind::String,
                        "an optional account for the virtual machine. Must be used with domainId.",
                    ),
                    param(
                        "domainid",
                        Kind::Uuid,
                        "an optional domainId for the virtual machine. If the account parameter is used, domainId must also be used.",
                    )
                    .naming(scope::within_domain()),
                ],
                "virtualmachine",
                vm_view.clone(),
                |c, p| deploy(c, p).boxed(),
            )
        },
        Command {
            is_async: true,
            ..Command::sync(
                "destroyVirtualMachine",
                "Destroys a virtual machine.",
                ALL,
                vec![
                    required("id", Kind::Uuid, "The ID of the virtual machine")
                        .naming(scope::act_on::<Vm>()),
                    param(
                        "expunge",
                        Kind::Boolean,
                        "If true is passed, the vm is expunged immediately. False by default.",
                    ),
                    param(
                        "volumeids",
                        Kind::List,
                        "Comma separated list of UUIDs for volumes that will be deleted",
                    ),
                ],
                "virtualmachine",
                vm_view.clone(),
                |c, p| destroy(c, p).boxed(),
            )
        },
        Command {
            is_async: true,
            ..Command::sync(
                "expungeVirtualMachine",
                "Expunge a virtual machine. Once expunged, it cannot be recoverd.",
                ADMINS,
                vec![
                    required("id", Kind::Uuid, "The ID of the virtual machine")
                        .naming(scope::act_on::<Vm>()),
                ],
                "success",
                json!({"success": true}),
                |c, p| expunge(c, p).boxed(),
            )
        },
        Command::sync(
            "configureSimulator",
            "configure simulator",
            ROOT,
            vec![
                required(
                    "name",
                    Kind::String,
                    "which command needs to be configured",
                ),
                required(
                    "value",
                    Kind::String,
                    "configuration options for this command, which is separated by ;",
                ),
                param("count", Kind::Integer, "number of times the mock is active"),
                param("zoneid", Kind::Uuid, "configure range: in a zone")
                    .naming(Names::public(Zone::KIND)),
                param("podid", Kind::Uuid, "configure range: in a pod")
                    .naming(Names::public(Pod::KIND)),
                param("clusterid", Kind::Uuid, "configure range: in a cluster")
                    .naming(Names::public(Cluster::KIND)),
                param("hostid", Kind::Uuid, "configure range: in a host")
                    .naming(Names::public(Host::KIND)),
                param(
                    "jsonresponse",
                    Kind::String,
                    "agent command response to be returned",
                ),
            ],
            "simulatormock",
            mock_view(&sample_mock()),
            |c, p| configure_simulator(c, p).boxed(),
        ),
        Command::sync(
            "cleanupSimulatorMock",
            "cleanup simulator mock",
            ROOT,
            vec![required("id", Kind::String, "id of the configured mock")],
            "success",
            json!({"success": true}),
            |c, p| cleanup_simulator_mock(c, p).boxed(),
        ),
    ]
}

/// `name`'s rules, as CloudStack's `NetUtils.verifyDomainNameLabel` for a VM's host name.
fn valid_host_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !b[0].is_ascii_digit()
}

fn long_param(ctx: &Ctx, p: &Params, name: &str) -> Result<Option<u64>, ApiError> {
    p.get(name)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| ApiError::invalid_value(ctx.command, name, v))
        })
        .transpose()
}

/// The account a deploy is for: the caller's, or `account` in `domainid`
/// (the domain passed the scope check).
async fn owner(ctx: &Ctx, p: &Params) -> Result<Account, ApiError> {
    match (p.get("account"), p.get("domainid")) {
        (Some(name), Some(domain)) => {
            let account = super::accounts::account_by_name(ctx, p, name).await?.value;
            if ctx.caller.role == Role::User && account.id != ctx.caller.account.id {
                return Err(ApiError::permission_denied(format!(
                    "Account {} does not have permission to operate within domain id={domain}",
                    ctx.caller.account.name
                )));
            }
            Ok(account)
        }
        (Some(_), None) => Err(ApiError::invalid_parameter(
            "Account name and domain id must be specified together",
        )),
        _ => Ok(ctx.caller.account.clone()),
    }
}

async fn deploy(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let zone = named::<Zone>(ctx, p, "zoneid").await?.value;
    let offering = named::<ServiceOffering>(ctx, p, "serviceofferingid")
        .await?
        .value;
    let template = named::<Template>(ctx, p, "templateid").await?.value;
    let account = owner(ctx, p).await?;
    if zone.allocation_state != AllocationState::Enabled && ctx.caller.role != Role::RootAdmin {
        return Err(ApiError::permission_denied(format!(
            "Cannot perform this operation, Zone is currently disabled: {}",
            zone.id
        )));
    }
    if !template.is_ready {
        return Err(ApiError::invalid_parameter(format!(
            "Template {} has not been completely downloaded to zone {}",
            template.id, zone.id
        )));
    }
    if p.has("hostid") && ctx.caller.role != Role::RootAdmin {
        return Err(ApiError::permission_denied(
            "Parameter hostid can only be specified by a Root Admin, permission denied",
        ));
    }
    let host_id = match p.get("hostid") {
        Some(_) => Some(named::<Host>(ctx, p, "hostid").await?.value.id.to_string()),
        None => None,
    };
    let disk_offering_id = match p.get("diskofferingid") {
        Some(_) => Some(
            named::<DiskOffering>(ctx, p, "diskofferingid")
                .await?
                .value
                .id
                .to_string(),
        ),
        None => None,
    };
    let size_gb = long_param(ctx, p, "size")?;
    let root_disk_size_gb = long_param(ctx, p, "rootdisksize")?;
    let mut network_ids = Vec::new();
    if let Some(list) = p.get("networkids") {
        for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let network = match raw.parse::<Id<Network>>() {
                Ok(id) => ctx.store.get(id).await.map_err(store_error)?,
                Err(_) => None,
            }
            .ok_or_else(|| ApiError::entity_not_found(ctx.command, "networkids", raw))?
            .value;
            if network.zone_id != zone.id {
                return Err(ApiError::invalid_parameter(format!(
                    "Network id={} doesn't belong to zone {}",
                    network.id, zone.id
                )));
            }
            network_ids.push(network.id.to_string());
        }
    }
    if let Some(ip) = p.get("ipaddress")
        && ip.parse::<std::net::Ipv4Addr>().is_err()
    {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid format for IPv4 address: {ip}"
        )));
    }
    let mut keypairs = Vec::new();
    if let Some(name) = p.get("keypair") {
        let found = walk::<SshKeyPair>(ctx, &Index::Account(account.id.uuid()))
            .await?
            .into_iter()
            .any(|k| k.name == name);
        if !found {
            return Err(ApiError::invalid_parameter(format!(
                "A key pair with name '{name}' was not found."
            )));
        }
        keypairs.push(name.to_string());
    }
    let user_data = match p.get("userdata") {
        Some(data) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|_| ApiError::invalid_parameter("User data is not base64 encoded"))?;
            if decoded.len() > USER_DATA_MAX {
                return Err(ApiError::invalid_parameter(format!(
                    "User data is too long for an http GET request. Maximum allowed length is {USER_DATA_MAX} bytes"
                )));
            }
            Some(data.trim().to_string())
        }
        None => None,
    };
    let vm_id = Id::<Vm>::new();
    let name = match p.get("name") {
        Some(n) => n.to_string(),
        None => format!("VM-{vm_id}"),
    };
    if p.has("name") && !valid_host_name(&name) {
        return Err(ApiError::invalid_parameter(
            "Invalid name. Vm name can contain ASCII letters 'a' through 'z', the digits '0' through '9', and the hyphen ('-'), must be between 1 and 63 characters long, and can't start or end with \"-\" and can't start with digit",
        ));
    }
    let display_name = p.get("displayname").unwrap_or(&name).to_string();
    let body = vm::Deploy {
        vm_id: vm_id.to_string(),
        name,
        display_name,
        account_id: account.id.to_string(),
        domain_id: account.domain_id.to_string(),
        zone_id: zone.id.to_string(),
        service_offering_id: offering.id.to_string(),
        template_id: template.id.to_string(),
        start: p
            .get("startvm")
            .is_none_or(|s| s.eq_ignore_ascii_case("true")),
        network_ids,
        ip_address: p.get("ipaddress").map(str::to_string),
        keypairs,
        user_data,
        host_id,
        root_disk_size_gb,
        disk_offering_id,
        size_gb,
    };
    let class = if ctx.caller.role == Role::User {
        DEPLOY_CMD
    } else {
        DEPLOY_CMD_ADMIN
    };
    let mut answer = jobs::submit(
        ctx,
        class,
        jobs::Instance {
            kind: "VirtualMachine",
            id: vm_id.uuid(),
        },
        vm::DEPLOY,
        &body,
    )
    .await?;
    answer["id"] = json!(vm_id.to_string());
    Ok(answer)
}

async fn destroy(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let vm = named::<Vm>(ctx, p, "id").await?.value;
    let expunge = flag(p, "expunge");
    if expunge && ctx.caller.role == Role::User {
        return Err(ApiError::permission_denied(
            "Parameter expunge can be passed by Admin only. Or when the allow.user.expunge.recover.vm key is set.",
        ));
    }
    let class = if ctx.caller.role == Role::User {
        DESTROY_CMD
    } else {
        DESTROY_CMD_ADMIN
    };
    jobs::submit(
        ctx,
        class,
        jobs::Instance {
            kind: "VirtualMachine",
            id: vm.id.uuid(),
        },
        vm::DESTROY,
        &vm::Destroy {
            vm_id: vm.id.to_string(),
            expunge,
        },
    )
    .await
}

async fn expunge(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let vm = named::<Vm>(ctx, p, "id").await?.value;
    if !matches!(
        vm.state,
        VmState::Destroyed | VmState::Error | VmState::Expunging
    ) {
        return Err(ApiError::invalid_parameter(
            "Please specify a VM that is either Stopped or Expunged",
        ));
    }
    jobs::submit(
        ctx,
        EXPUNGE_CMD,
        jobs::Instance {
            kind: "VirtualMachine",
            id: vm.id.uuid(),
        },
        vm::EXPUNGE,
        &vm::Expunge {
            vm_id: vm.id.to_string(),
        },
    )
    .await
}

fn sample_mock() -> Mock {
    Mock {
        id: "6f1c3e2a-4b5d-4e6f-8a7b-9c0d1e2f3a4b".into(),
        name: "StartCommand".into(),
        value: "result:fail".into(),
        wait_ms: 0,
        result: simulator::MockResult::Fail,
        count: Some(1),
        zone_id: None,
        pod_id: None,
        cluster_id: None,
        host_id: None,
    }
}

fn mock_view(m: &Mock) -> Value {
    json!({
        "id": m.id,
        "name": m.name,
        "count": m.count,
        "zoneid": m.zone_id,
        "podid": m.pod_id,
        "clusterid": m.cluster_id,
        "hostid": m.host_id,
    })
}

fn consul(ctx: &Ctx) -> Result<&stratus_discovery::Client, ApiError> {
    ctx.consul.as_ref().ok_or_else(|| {
        ApiError::internal(
            "The simulator's mocks are kept in Consul, and this API has no Consul (CONSUL_HTTP_ADDR is not set)",
        )
    })
}

async fn configure_simulator(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let name = p.get("name").unwrap_or_default();
    if simulator::command_name_known(name).is_none() {
        let known: Vec<&str> = simulator::COMMANDS.iter().map(|(n, _)| *n).collect();
        return Err(ApiError::invalid_parameter(format!(
            "Unsupported simulator command {name}: the simulator takes {}",
            known.join(", ")
        )));
    }
    let value = p.get("value").unwrap_or_default();
    let (wait_ms, result) = simulator::parse_value(value)
        .map_err(|e| ApiError::invalid_parameter(format!("Invalid value {value:?}: {e}")))?;
    let count = match p.get("count") {
        Some(c) => Some(
            c.trim()
                .parse::<u32>()
                .map_err(|_| ApiError::invalid_value(ctx.command, "count", c))?,
        ),
        None => None,
    };
    let mock = Mock {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        value: value.to_string(),
        wait_ms,
        result,
        count,
        zone_id: p.get("zoneid").map(str::to_lowercase),
        pod_id: p.get("podid").map(str::to_lowercase),
        cluster_id: p.get("clusterid").map(str::to_lowercase),
        host_id: p.get("hostid").map(str::to_lowercase),
    };
    let bytes = serde_json::to_vec(&mock).map_err(|e| ApiError::internal(e.to_string()))?;
    consul(ctx)?
        .kv_put(
            &format!("{MOCK_PREFIX}{}", mock.id),
            &bytes,
            &Default::default(),
        )
        .await
        .map_err(|e| ApiError::internal(format!("could not store the mock in Consul: {e}")))?;
    tracing::info!(mock_id = %mock.id, name = %mock.name, value = %mock.value, count = ?mock.count, "simulator mock configured");
    Ok(json!({ "simulatormock": mock_view(&mock) }))
}

async fn cleanup_simulator_mock(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let id = p.get("id").unwrap_or_default();
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(ApiError::entity_not_found(ctx.command, "id", id));
    }
    consul(ctx)?
        .kv_delete(&format!("{MOCK_PREFIX}{id}"), false, None)
        .await
        .map_err(|e| ApiError::internal(format!("could not remove the mock from Consul: {e}")))?;
    Ok(json!({ "success": true }))
}
