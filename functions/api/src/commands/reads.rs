//! The read commands: fabric (root admins), offerings and templates (all),
//! and each account's own objects (isolated by owner), jobs and settings.

use futures::FutureExt;
use serde_json::{Value, json};
use stratus_cloudstack::{ApiError, Params, envelope};
use stratus_contracts::settings::{Scope, ScopeId, names};
use stratus_model::samples::{Fixture, Sample};
use stratus_model::*;
use stratus_store::Index;

use super::{eq_param, flag, id_param, list, named, owners};
use crate::Ctx;
use crate::registry::{ALL, Command, Handler, Kind, ROOT, Role, list_of, param, required};
use crate::scope::{self, Names, Outside};
use stratus_cloudstack::views;

/// A list command of objects `names` names: the common list parameters plus `extra`.
#[allow(clippy::too_many_arguments)]
fn list_command(
    name: &'static str,
    description: &'static str,
    roles: &'static [Role],
    names: Names,
    extra: &[crate::registry::Param],
    item: &'static str,
    sample: Value,
    handler: Handler,
) -> Command {
    Command::sync(
        name,
        description,
        roles,
        list_of(names, extra),
        item,
        sample,
        handler,
    )
}

/// The `listall`, `account` and `domainid` parameters of lists of owned objects.
fn owned(extra: &[crate::registry::Param]) -> Vec<crate::registry::Param> {
    let mut v = vec![
        param(
            "listall",
            Kind::Boolean,
            "If set to false, list only resources belonging to the command's caller; if set to true, list resources that the caller is authorized to see",
        ),
        param(
            "account",
            Kind::String,
            "list resources by account. Must be used with the domainId parameter.",
        ),
        param(
            "domainid",
            Kind::Uuid,
            "list only resources belonging to the domain specified",
        )
        .naming(scope::within_domain()),
    ];
    v.extend_from_slice(extra);
    v
}

pub fn commands() -> Vec<Command> {
    let f = Fixture::default();
    vec![
        list_command(
            "listPods",
            "Lists all Pods.",
            ROOT,
            Names::public(Pod::KIND),
            &[
                param("zoneid", Kind::Uuid, "list Pods by Zone ID")
                    .naming(Names::public(Zone::KIND)),
                param("name", Kind::String, "list Pods by name"),
                param(
                    "allocationstate",
                    Kind::String,
                    "list pods by allocation state",
                ),
            ],
            "pod",
            views::pod(&Pod::sample(&f)),
            |c, p| list_pods(c, p).boxed(),
        ),
        list_command(
            "listClusters",
            "Lists clusters.",
            ROOT,
            Names::public(Cluster::KIND),
            &[
                param("zoneid", Kind::Uuid, "lists clusters by Zone ID")
                    .naming(Names::public(Zone::KIND)),
                param("podid", Kind::Uuid, "lists clusters by Pod ID")
                    .naming(Names::public(Pod::KIND)),
                param("name", Kind::String, "lists clusters by the cluster name"),
                param(
                    "hypervisor",
                    Kind::String,
                    "lists clusters by hypervisor type",
                ),
            ],
            "cluster",
            views::cluster(&Cluster::sample(&f)),
            |c, p| list_clusters(c, p).boxed(),
        ),
        list_command(
            "listHosts",
            "Lists hosts.",
            ROOT,
            Names::public(Host::KIND),
            &[
                param("zoneid", Kind::Uuid, "the Zone ID for the host")
                    .naming(Names::public(Zone::KIND)),
                param("podid", Kind::Uuid, "the Pod ID for the host")
                    .naming(Names::public(Pod::KIND)),
                param(
                    "clusterid",
                    Kind::Uuid,
                    "lists hosts existing in particular cluster",
                )
                .naming(Names::public(Cluster::KIND)),
                param("name", Kind::String, "the name of the host"),
                param("state", Kind::String, "the state of the host"),
                param(
                    "resourcestate",
                    Kind::String,
                    "list hosts by resource state",
                ),
                param("type", Kind::String, "the host type"),
                param("hypervisor", Kind::String, "hypervisor type of host"),
            ],
            "host",
            views::host(&Host::sample(&f)),
            |c, p| list_hosts(c, p).boxed(),
        ),
        list_command(
            "listStoragePools",
            "Lists storage pools.",
            ROOT,
            Names::public(StoragePool::KIND),
            &[
                param("zoneid", Kind::Uuid, "the Zone ID for the storage pool")
                    .naming(Names::public(Zone::KIND)),
                param("podid", Kind::Uuid, "the Pod ID for the storage pool")
                    .naming(Names::public(Pod::KIND)),
                param(
                    "clusterid",
                    Kind::Uuid,
                    "list storage pools belongig to the specific cluster",
                )
                .naming(Names::public(Cluster::KIND)),
                param("name", Kind::String, "the name of the storage pool"),
            ],
            "storagepool",
            views::storage_pool(&StoragePool::sample(&f)),
            |c, p| list_storage_pools(c, p).boxed(),
        ),
        list_command(
            "listServiceOfferings",
            "Lists all available service offerings.",
            ALL,
            Names::public(ServiceOffering::KIND),
            &[
                param("name", Kind::String, "name of the service offering"),
                param(
                    "zoneid",
                    Kind::Uuid,
                    "id of zone disk offering is associated with",
                )
                .naming(Names::public(Zone::KIND)),
                param("issystem", Kind::Boolean, "is this a system vm offering"),
            ],
            "serviceoffering",
            views::service_offering(&ServiceOffering::sample(&f)),
            |c, p| list_service_offerings(c, p).boxed(),
        ),
        list_command(
            "listDiskOfferings",
            "Lists all available disk offerings.",
            ALL,
            Names::public(DiskOffering::KIND),
            &[
                param("name", Kind::String, "name of the disk offering"),
                param(
                    "zoneid",
                    Kind::Uuid,
                    "id of zone disk offering is associated with",
                )
                .naming(Names::public(Zone::KIND)),
            ],
            "diskoffering",
            views::disk_offering(&DiskOffering::sample(&f)),
            |c, p| list_disk_offerings(c, p).boxed(),
        ),
        list_command(
            "listTemplates",
            "List all public, private, and privileged templates.",
            ALL,
            Names::template(Outside::Unseen),
            &[
                required(
                    "templatefilter",
                    Kind::String,
                    "possible values are featured, self, selfexecutable, sharedexecutable, executable, and community",
                ),
                param("zoneid", Kind::Uuid, "list templates by zoneId")
                    .naming(Names::public(Zone::KIND)),
                param(
                    "hypervisor",
                    Kind::String,
                    "the hypervisor for which to restrict the search",
                ),
                param("name", Kind::String, "the template name"),
            ],
            "template",
            views::template(&Template::sample(&f)),
            |c, p| list_templates(c, p).boxed(),
        ),
        list_command(
            "listNetworkOfferings",
            "Lists all available network offerings.",
            ALL,
            Names::public(NetworkOffering::KIND),
            &[
                param("name", Kind::String, "list network offerings by name"),
                param(
                    "guestiptype",
                    Kind::String,
                    "list network offerings by guest type: shared or isolated",
                ),
                param("state", Kind::String, "list network offerings by state"),
                param(
                    "isdefault",
                    Kind::Boolean,
                    "true if need to list only default network offerings",
                ),
                param(
                    "zoneid",
                    Kind::Uuid,
                    "list network offerings available for network creation in specific zone",
                )
                .naming(Names::public(Zone::KIND)),
            ],
            "networkoffering",
            views::network_offering(&NetworkOffering::sample(&f)),
            |c, p| list_network_offerings(c, p).boxed(),
        ),
        list_command(
            "listNetworks",
            "Lists all available networks.",
            ALL,
            scope::read::<Network>(),
            &owned(&[
                param("zoneid", Kind::Uuid, "the zone ID of the network")
                    .naming(Names::public(Zone::KIND)),
                param("type", Kind::String, "the type of the network"),
            ]),
            "network",
            views::network(&Network::sample(&f)),
            |c, p| list_networks(c, p).boxed(),
        ),
        list_command(
            "listVirtualMachines",
            "List the virtual machines owned by the account.",
            ALL,
            scope::read::<Vm>(),
            &owned(&[
                param("state", Kind::String, "state of the virtual machine"),
                param("zoneid", Kind::Uuid, "the availability zone ID")
                    .naming(Names::public(Zone::KIND)),
                param("hostid", Kind::Uuid, "the host ID").naming(Names::public(Host::KIND)),
                param("name", Kind::String, "name of the virtual machine"),
                param(
                    "ids",
                    Kind::List,
                    "the IDs of the virtual machines, mutually exclusive with id",
                ),
            ]),
            "virtualmachine",
            views::vm(&Vm::sample(&f)),
            |c, p| list_vms(c, p).boxed(),
        ),
        list_command(
            "listVolumes",
            "Lists all volumes.",
            ALL,
            scope::read::<Volume>(),
            &owned(&[
                param(
                    "virtualmachineid",
                    Kind::Uuid,
                    "the ID of the virtual machine",
                )
                .naming(scope::read::<Vm>()),
                param("type", Kind::String, "the type of disk volume"),
                param("zoneid", Kind::Uuid, "the ID of the availability zone")
                    .naming(Names::public(Zone::KIND)),
            ]),
            "volume",
            views::volume(&Volume::sample(&f)),
            |c, p| list_volumes(c, p).boxed(),
        ),
        list_command(
            "listPublicIpAddresses",
            "Lists all public IP addresses",
            ALL,
            scope::read::<IpAddress>(),
            &owned(&[
                param(
                    "associatednetworkid",
                    Kind::Uuid,
                    "lists all public IP addresses associated to the network specified",
                )
                .naming(scope::read::<Network>()),
                param("ipaddress", Kind::String, "lists the specified IP address"),
                param(
                    "issourcenat",
                    Kind::Boolean,
                    "list only source NAT IP addresses",
                ),
                param(
                    "allocatedonly",
                    Kind::Boolean,
                    "limits search results to allocated public IP addresses",
                ),
                param(
                    "zoneid",
                    Kind::Uuid,
                    "lists all public IP addresses by zone ID",
                )
                .naming(Names::public(Zone::KIND)),
            ]),
            "publicipaddress",
            views::public_ip(&IpAddress::sample(&f)),
            |c, p| list_public_ips(c, p).boxed(),
        ),
        list_command(
            "listSSHKeyPairs",
            "List registered keypairs",
            ALL,
            scope::read::<SshKeyPair>(),
            &owned(&[
                param("name", Kind::String, "A key pair name to look for"),
                param(
                    "fingerprint",
                    Kind::String,
                    "A public key fingerprint to look for",
                ),
            ]),
            "sshkeypair",
            views::ssh_key_pair(&SshKeyPair::sample(&f)),
            |c, p| list_key_pairs(c, p).boxed(),
        ),
        list_command(
            "listSecurityGroups",
            "Lists security groups",
            ALL,
            scope::read::<SecurityGroup>(),
            &owned(&[param(
                "securitygroupname",
                Kind::String,
                "lists security groups by name",
            )]),
            "securitygroup",
            views::security_group(&SecurityGroup::sample(&f)),
            |c, p| list_security_groups(c, p).boxed(),
        ),
        list_command(
            "listTags",
            "List resource tag(s)",
            ALL,
            scope::read::<Tag>(),
            &owned(&[
                param("resourcetype", Kind::String, "list by resource type"),
                param("resourceid", Kind::String, "list by resource id"),
                param("key", Kind::String, "list by key"),
                param("value", Kind::String, "list by value"),
            ]),
            "tag",
            views::tag(&Tag::sample(&f)),
            |c, p| list_tags(c, p).boxed(),
        ),
        list_command(
            "listAlerts",
            "Lists all alerts.",
            ROOT,
            Names::public(Alert::KIND),
            &[
                param("type", Kind::String, "list by alert type"),
                param("name", Kind::String, "list by alert name"),
            ],
            "alert",
            views::alert(&Alert::sample(&f)),
            |c, p| list_alerts(c, p).boxed(),
        ),
        list_command(
            "listEvents",
            "A command to list events.",
            ALL,
            scope::read::<Event>(),
            &owned(&[
                param("type", Kind::String, "the event type (see event types)"),
                param("level", Kind::String, "the event level (INFO, WARN, ERROR)"),
                param(
                    "resourceid",
                    Kind::Uuid,
                    "the ID of the resource associated with the event",
                )
                .naming(Names::resource(Outside::Unseen)),
            ]),
            "event",
            views::event(&Event::sample(&f)),
            |c, p| list_events(c, p).boxed(),
        ),
        list_command(
            "listAsyncJobs",
            "Lists all pending asynchronous jobs for the account.",
            ALL,
            scope::read::<AsyncJob>(),
            &owned(&[param(
                "startdate",
                Kind::Date,
                "the start date of the async job (use format \"yyyy-MM-dd'T'HH:mm:ss'+'SSSS\")",
            )]),
            "asyncjobs",
            views::async_job(&AsyncJob::sample(&f)),
            |c, p| list_async_jobs(c, p).boxed(),
        ),
        Command::sync(
            "queryAsyncJobResult",
            "Retrieves the current status of asynchronous job.",
            ALL,
            vec![
                required("jobid", Kind::Uuid, "the ID of the asynchronous job")
                    .naming(Names::owned::<AsyncJob>(Outside::Denied(scope::unseen_job))),
            ],
            "job",
            views::async_job(&AsyncJob::sample(&f)),
            |c, p| query_async_job(c, p).boxed(),
        ),
        list_command(
            "listCapacity",
            "Lists all the system wide capacities.",
            ROOT,
            Names::public("capacity"),
            &[
                param("zoneid", Kind::Uuid, "lists capacity by the Zone ID")
                    .naming(Names::public(Zone::KIND)),
                param("type", Kind::Integer, "lists capacity by type"),
            ],
            "capacity",
            json!({"type": 0, "zoneid": "", "zonename": "", "capacityused": 0, "capacitytotal": 0, "percentused": ""}),
            |c, p| list_capacity(c, p).boxed(),
        ),
    ]
}

async fn list_pods(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let zone = id_param::<Zone>(ctx, p, "zoneid")?;
    let index = zone.map_or(Index::All, |z| Index::Zone(z.uuid()));
    let narrows = p.has("name") || p.has("allocationstate");
    list::<Pod>(
        ctx,
        p,
        index,
        "pod",
        narrows,
        |x| {
            zone.is_none_or(|z| x.zone_id == z)
                && eq_param(p, "name", &x.name)
                && eq_param(p, "allocationstate", &state_name(&x.allocation_state))
        },
        views::pod,
    )
    .await
}

async fn list_clusters(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let zone = id_param::<Zone>(ctx, p, "zoneid")?;
    let pod = id_param::<Pod>(ctx, p, "podid")?;
    let index = zone.map_or(Index::All, |z| Index::Zone(z.uuid()));
    let narrows = pod.is_some() || p.has("name") || p.has("hypervisor");
    list::<Cluster>(
        ctx,
        p,
        index,
        "cluster",
        narrows,
        |x| {
            zone.is_none_or(|z| x.zone_id == z)
                && pod.is_none_or(|q| x.pod_id == q)
                && eq_param(p, "name", &x.name)
                && eq_param(p, "hypervisor", &x.hypervisor)
        },
        views::cluster,
    )
    .await
}

async fn list_hosts(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let zone = id_param::<Zone>(ctx, p, "zoneid")?;
    let pod = id_param::<Pod>(ctx, p, "podid")?;
    let cluster = id_param::<Cluster>(ctx, p, "clusterid")?;
    let index = zone.map_or(Index::All, |z| Index::Zone(z.uuid()));
    let narrows = pod.is_some()
        || cluster.is_some()
        || ["name", "state", "resourcestate", "type", "hypervisor"]
            .iter()
            .any(|n| p.has(n));
    list::<Host>(
        ctx,
        p,
        index,
        "host",
        narrows,
        |h| {
            zone.is_none_or(|z| h.zone_id == z)
                && pod.is_none_or(|q| h.pod_id == q)
                && cluster.is_none_or(|c| h.cluster_id == c)
                && eq_param(p, "name", &h.name)
                && eq_param(p, "state", &state_name(&h.state))
                && eq_param(p, "resourcestate", &state_name(&h.resource_state))
                && eq_param(p, "type", &h.host_type)
                && eq_param(p, "hypervisor", &h.hypervisor)
        },
        views::host,
    )
    .await
}

async fn list_storage_pools(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let zone = id_param::<Zone>(ctx, p, "zoneid")?;
    let pod = id_param::<Pod>(ctx, p, "podid")?;
    let cluster = id_param::<Cluster>(ctx, p, "clusterid")?;
    let index = zone.map_or(Index::All, |z| Index::Zone(z.uuid()));
    let narrows = pod.is_some() || cluster.is_some() || p.has("name");
    list::<StoragePool>(
        ctx,
        p,
        index,
        "storagepool",
        narrows,
        |s| {
            zone.is_none_or(|z| s.zone_id == z)
                && pod.is_none_or(|q| s.pod_id.is_none_or(|sp| sp == q))
                && cluster.is_none_or(|c| s.cluster_id.is_none_or(|sc| sc == c))
                && eq_param(p, "name", &s.name)
        },
        views::storage_pool,
    )
    .await
}

async fn list_service_offerings(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    // System offerings are not kept; `issystem=true` lists none.
    let system = flag(p, "issystem");
    list::<ServiceOffering>(
        ctx,
        p,
        Index::All,
        "serviceoffering",
        p.has("name") || system,
        |o| !system && eq_param(p, "name", &o.name),
        views::service_offering,
    )
    .await
}

async fn list_disk_offerings(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    list::<DiskOffering>(
        ctx,
        p,
        Index::All,
        "diskoffering",
        p.has("name"),
        |o| eq_param(p, "name", &o.name),
        views::disk_offering,
    )
    .await
}

async fn list_templates(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let filter = p.get("templatefilter").unwrap_or_default().to_lowercase();
    let me = ctx.caller.account.id;
    // `all`: a root admin's every template; by id, the one named (the scope
    // check has refused a private one outside the caller's scope).
    let admin = ctx.caller.role == Role::RootAdmin || p.has("id");
    let keep: fn(&Template, Id<Account>, bool) -> bool = match filter.as_str() {
        "featured" => |t, _, _| t.is_public && t.is_featured,
        "self" | "selfexecutable" => |t, me, _| t.account_id == me,
        "sharedexecutable" => |_, _, _| false,
        "executable" => |t, me, _| t.is_public || t.account_id == me,
        "community" => |t, _, _| t.is_public && !t.is_featured,
        "all" => |t, me, admin| admin || t.is_public || t.account_id == me,
        other => {
            return Err(ApiError::invalid_parameter(format!(
                "Template filter {other} is not valid; possible values are featured, self, selfexecutable, sharedexecutable, executable, community and all"
            )));
        }
    };
    let zone = id_param::<Zone>(ctx, p, "zoneid")?;
    list::<Template>(
        ctx,
        p,
        Index::All,
        "template",
        true,
        |t| {
            keep(t, me, admin)
                && zone.is_none_or(|z| t.zone_id.is_none_or(|tz| tz == z))
                && eq_param(p, "hypervisor", &t.hypervisor)
                && eq_param(p, "name", &t.name)
        },
        views::template,
    )
    .await
}

async fn list_network_offerings(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let narrows = ["name", "guestiptype", "state", "isdefault"]
        .iter()
        .any(|n| p.has(n));
    list::<NetworkOffering>(
        ctx,
        p,
        Index::All,
        "networkoffering",
        narrows,
        |o| {
            eq_param(p, "name", &o.name)
                && eq_param(p, "guestiptype", &state_name(&o.guest_ip_type))
                && eq_param(p, "state", &state_name(&o.state))
                && eq_param(p, "isdefault", &o.is_default.to_string())
        },
        views::network_offering,
    )
    .await
}

async fn list_networks(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let who = owners(ctx, p).await?;
    let zone = id_param::<Zone>(ctx, p, "zoneid")?;
    let narrows = who.narrows() || zone.is_some() || p.has("type");
    list::<Network>(
        ctx,
        p,
        who.index(),
        "network",
        narrows,
        |n| {
            who.holds(n.account_id)
                && zone.is_none_or(|z| n.zone_id == z)
                && eq_param(p, "type", "Isolated")
        },
        views::network,
    )
    .await
}

async fn list_vms(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let who = owners(ctx, p).await?;
    let zone = id_param::<Zone>(ctx, p, "zoneid")?;
    let host = id_param::<Host>(ctx, p, "hostid")?;
    let ids: Option<Vec<String>> = p
        .get("ids")
        .map(|v| v.split(',').map(|s| s.trim().to_lowercase()).collect());
    let narrows = who.narrows()
        || zone.is_some()
        || host.is_some()
        || ids.is_some()
        || p.has("state")
        || p.has("name");
    list::<Vm>(
        ctx,
        p,
        who.index(),
        "virtualmachine",
        narrows,
        |v| {
            who.holds(v.account_id)
                && zone.is_none_or(|z| v.zone_id == z)
                && host.is_none_or(|h| v.host_id == Some(h))
                && ids
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&v.id.to_string()))
                && eq_param(p, "state", &state_name(&v.state))
                && eq_param(p, "name", &v.name)
        },
        |v| {
            let mut view = views::vm(v);
            // Where a VM runs is for admins, as CloudStack shows it.
            if ctx.caller.role == Role::User
                && let Some(m) = view.as_object_mut()
            {
                m.remove("hostid");
                m.remove("hostname");
            }
            view
        },
    )
    .await
}

async fn list_volumes(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let who = owners(ctx, p).await?;
    let vm = id_param::<Vm>(ctx, p, "virtualmachineid")?;
    let zone = id_param::<Zone>(ctx, p, "zoneid")?;
    let narrows = who.narrows() || vm.is_some() || zone.is_some() || p.has("type");
    list::<Volume>(
        ctx,
        p,
        who.index(),
        "volume",
        narrows,
        |v| {
            who.holds(v.account_id)
                && vm.is_none_or(|m| v.vm_id == Some(m))
                && zone.is_none_or(|z| v.zone_id == z)
                && eq_param(p, "type", &state_name(&v.volume_type))
        },
        views::volume,
    )
    .await
}

async fn list_public_ips(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let who = owners(ctx, p).await?;
    let network = id_param::<Network>(ctx, p, "associatednetworkid")?;
    let zone = id_param::<Zone>(ctx, p, "zoneid")?;
    list::<IpAddress>(
        ctx,
        p,
        who.index(),
        "publicipaddress",
        true,
        |i| {
            who.holds(i.account_id)
                && i.purpose == IpPurpose::Public
                && network.is_none_or(|n| i.network_id == n)
                && zone.is_none_or(|z| i.zone_id == z)
                && eq_param(p, "ipaddress", &i.address)
                && eq_param(p, "issourcenat", &i.is_source_nat.to_string())
        },
        views::public_ip,
    )
    .await
}

async fn list_key_pairs(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let who = owners(ctx, p).await?;
    let narrows = who.narrows() || p.has("name") || p.has("fingerprint");
    list::<SshKeyPair>(
        ctx,
        p,
        who.index(),
        "sshkeypair",
        narrows,
        |k| {
            who.holds(k.account_id)
                && eq_param(p, "name", &k.name)
                && eq_param(p, "fingerprint", &k.fingerprint)
        },
        views::ssh_key_pair,
    )
    .await
}

async fn list_security_groups(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let who = owners(ctx, p).await?;
    let narrows = who.narrows() || p.has("securitygroupname");
    list::<SecurityGroup>(
        ctx,
        p,
        who.index(),
        "securitygroup",
        narrows,
        |g| who.holds(g.account_id) && eq_param(p, "securitygroupname", &g.name),
        views::security_group,
    )
    .await
}

async fn list_tags(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let who = owners(ctx, p).await?;
    let narrows = who.narrows()
        || ["resourcetype", "resourceid", "key", "value"]
            .iter()
            .any(|n| p.has(n));
    list::<Tag>(
        ctx,
        p,
        who.index(),
        "tag",
        narrows,
        |t| {
            who.holds(t.account_id)
                && eq_param(p, "resourcetype", &t.resource_type)
                && eq_param(p, "resourceid", &t.resource_id.to_string())
                && p.get("key").is_none_or(|k| k == t.key)
                && p.get("value").is_none_or(|v| v == t.value)
        },
        views::tag,
    )
    .await
}

async fn list_alerts(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let narrows = p.has("type") || p.has("name");
    list::<Alert>(
        ctx,
        p,
        Index::All,
        "alert",
        narrows,
        |a| eq_param(p, "type", &a.alert_type.to_string()) && eq_param(p, "name", &a.name),
        views::alert,
    )
    .await
}

async fn list_events(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let who = owners(ctx, p).await?;
    let resource = p.get("resourceid").map(str::to_lowercase);
    let narrows = who.narrows() || p.has("type") || p.has("level") || resource.is_some();
    list::<Event>(
        ctx,
        p,
        who.index(),
        "event",
        narrows,
        |e| {
            who.holds(e.account_id)
                && eq_param(p, "type", &e.event_type)
                && eq_param(p, "level", &state_name(&e.level))
                && resource
                    .as_ref()
                    .is_none_or(|r| e.resource_id.is_some_and(|id| id.to_string() == *r))
        },
        views::event,
    )
    .await
}

async fn list_async_jobs(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let who = owners(ctx, p).await?;
    let start = match p.get("startdate") {
        Some(s) => Some(
            stratus_cloudstack::date::parse_expires(s)
                .ok_or_else(|| ApiError::invalid_value(ctx.command, "startdate", s))?,
        ),
        None => None,
    };
    let narrows = who.narrows() || start.is_some();
    list::<AsyncJob>(
        ctx,
        p,
        who.index(),
        "asyncjobs",
        narrows,
        |j| who.holds(j.account_id) && start.is_none_or(|s| j.created >= s),
        |j| job_view(ctx, j),
    )
    .await
}

/// A job as the caller may see it: a user does not see where its VM runs
/// (as in listVirtualMachines).
fn job_view(ctx: &Ctx, job: &AsyncJob) -> Value {
    let mut view = views::async_job(job);
    if ctx.caller.role == Role::User
        && let Some(vm) = view
            .pointer_mut("/jobresult/virtualmachine")
            .and_then(Value::as_object_mut)
    {
        vm.remove("hostid");
        vm.remove("hostname");
    }
    view
}

/// A job outside the caller's scope never gets here (the scope check's 531).
async fn query_async_job(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let job = named::<AsyncJob>(ctx, p, "jobid").await?.value;
    Ok(job_view(ctx, &job))
}

async fn list_capacity(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let zone = id_param::<Zone>(ctx, p, "zoneid")?;
    let kind: Option<u8> = match p.get("type") {
        Some(t) => Some(
            t.parse()
                .map_err(|_| ApiError::invalid_value(ctx.command, "type", t))?,
        ),
        None => None,
    };
    let zones: Vec<Zone> = super::all::<Zone>(ctx).await?;
    let mut items = Vec::new();
    for z in zones.iter().filter(|z| zone.is_none_or(|id| z.id == id)) {
        let index = Index::Zone(z.id.uuid());
        let hosts = super::walk::<Host>(ctx, &index).await?;
        let pools = super::walk::<StoragePool>(ctx, &index).await?;
        let sum = |f: &dyn Fn(&Host) -> u64| hosts.iter().map(f).sum::<u64>();
        // Totals as CloudStack reports them: each host's capacity times its
        // cluster's overprovisioning factor.
        let factor = |h: &Host, setting| {
            let at = ScopeId {
                scope: Scope::Cluster,
                id: h.cluster_id.to_string(),
            };
            ctx.settings
                .value_in(setting, &at)
                .parse::<f64>()
                .unwrap_or(1.0)
        };
        let (mem, mem_total) = (
            sum(&|h| h.memory_allocated),
            sum(&|h| (h.memory_total as f64 * factor(h, names::mem_overprovisioning())) as u64),
        );
        let (cpu, cpu_total) = (
            sum(&|h| h.cpu_allocated),
            sum(&|h| {
                ((h.cpu_number as u64 * h.cpu_speed as u64) as f64
                    * factor(h, names::cpu_overprovisioning())) as u64
            }),
        );
        let disk: u64 = pools.iter().map(|s| s.disk_size_allocated).sum();
        let disk_total: u64 = pools.iter().map(|s| s.disk_size_total).sum();
        for (t, used, total) in [
            (0u8, mem, mem_total),
            (1, cpu, cpu_total),
            (3, disk, disk_total),
        ] {
            if kind.is_none_or(|k| k == t) {
                let percent = if total == 0 {
                    0.0
                } else {
                    used as f64 * 100.0 / total as f64
                };
                items.push(json!({
                    "type": t,
                    "zoneid": z.id.to_string(),
                    "zonename": z.name,
                    "capacityused": used,
                    "capacitytotal": total,
                    "percentused": format!("{percent:.2}"),
                }));
            }
        }
    }
    let n = items.len() as u64;
    Ok(envelope::list("capacity", n, items))
}
