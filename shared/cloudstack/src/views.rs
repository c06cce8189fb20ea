//! Model objects as CloudStack's responses show them (field names, ids as
//! UUID strings, dates in CloudStack's format, nulls left out by the envelope).

use crate::date;
use serde_json::{Value, json};
use stratus_model::*;

fn s<T: serde::Serialize>(state: &T) -> String {
    state_name(state)
}

pub fn zone(z: &Zone) -> Value {
    json!({
        "id": z.id.to_string(),
        "name": z.name,
        "networktype": s(&z.network_type),
        "allocationstate": s(&z.allocation_state),
        "securitygroupsenabled": z.security_groups_enabled,
        "localstorageenabled": z.local_storage_enabled,
        "dns1": z.dns1,
        "internaldns1": z.internal_dns1,
        "guestcidraddress": z.guest_cidr_address,
        "created": date::format(z.created),
    })
}

pub fn domain(d: &Domain, has_child: bool) -> Value {
    json!({
        "id": d.id.to_string(),
        "name": d.name,
        "level": d.path.matches('/').count(),
        "parentdomainid": d.parent_id.map(|p| p.to_string()),
        "path": d.path,
        "haschild": has_child,
        "created": date::format(d.created),
    })
}

/// CloudStack's `accounttype` number and role type name.
pub fn account_type(t: AccountType) -> (u8, &'static str) {
    match t {
        AccountType::User => (0, "User"),
        AccountType::Admin => (1, "Admin"),
        AccountType::DomainAdmin => (2, "DomainAdmin"),
    }
}

pub fn user(u: &User, a: &Account, d: &Domain, api_key: Option<&str>) -> Value {
    let (n, role) = account_type(a.account_type);
    json!({
        "id": u.id.to_string(),
        "username": u.username,
        "firstname": u.firstname,
        "lastname": u.lastname,
        "email": u.email,
        "state": s(&u.state),
        "account": a.name,
        "accountid": a.id.to_string(),
        "accounttype": n,
        "roletype": role,
        "domainid": d.id.to_string(),
        "domain": d.name,
        "apikey": api_key,
        "created": date::format(u.created),
        "iscallerchilddomain": false,
        "isdefault": false,
    })
}

pub fn account(a: &Account, d: &Domain, users: Vec<Value>) -> Value {
    let (n, role) = account_type(a.account_type);
    json!({
        "id": a.id.to_string(),
        "name": a.name,
        "accounttype": n,
        "roletype": role,
        "domainid": d.id.to_string(),
        "domain": d.name,
        "domainpath": d.path,
        "state": s(&a.state),
        "user": users,
        "created": date::format(a.created),
        "isdefault": false,
    })
}

pub fn pod(p: &Pod) -> Value {
    json!({
        "id": p.id.to_string(),
        "name": p.name,
        "zoneid": p.zone_id.to_string(),
        "gateway": p.gateway,
        "netmask": p.netmask,
        "startip": [p.start_ip],
        "endip": [p.end_ip],
        "allocationstate": s(&p.allocation_state),
    })
}

pub fn cluster(c: &Cluster) -> Value {
    json!({
        "id": c.id.to_string(),
        "name": c.name,
        "zoneid": c.zone_id.to_string(),
        "podid": c.pod_id.to_string(),
        "hypervisortype": c.hypervisor,
        "clustertype": c.cluster_type,
        "allocationstate": s(&c.allocation_state),
        "managedstate": s(&c.managed_state),
        "cpuovercommitratio": c.cpu_overprovisioning.map(|f| f.to_string()),
        "memoryovercommitratio": c.memory_overprovisioning.map(|f| f.to_string()),
    })
}

pub fn host(h: &Host) -> Value {
    json!({
        "id": h.id.to_string(),
        "name": h.name,
        "type": h.host_type,
        "state": s(&h.state),
        "resourcestate": s(&h.resource_state),
        "hypervisor": h.hypervisor,
        "zoneid": h.zone_id.to_string(),
        "podid": h.pod_id.to_string(),
        "clusterid": h.cluster_id.to_string(),
        "ipaddress": h.ip_address,
        "cpunumber": h.cpu_number,
        "cpuspeed": h.cpu_speed,
        "cpuallocated": percent(h.cpu_allocated, h.cpu_number as u64 * h.cpu_speed as u64),
        "memorytotal": h.memory_total,
        "memoryallocated": h.memory_allocated,
        "lastpinged": h.last_pinged.map(date::format),
        "created": date::format(h.created),
    })
}

fn percent(used: u64, total: u64) -> String {
    if total == 0 {
        return "0%".into();
    }
    format!("{:.2}%", used as f64 * 100.0 / total as f64)
}

pub fn storage_pool(p: &StoragePool) -> Value {
    json!({
        "id": p.id.to_string(),
        "name": p.name,
        "zoneid": p.zone_id.to_string(),
        "podid": p.pod_id.map(|i| i.to_string()),
        "clusterid": p.cluster_id.map(|i| i.to_string()),
        "scope": s(&p.scope),
        "type": p.pool_type,
        "state": s(&p.state),
        "path": p.url,
        "disksizetotal": p.disk_size_total,
        "disksizeallocated": p.disk_size_allocated,
    })
}

pub fn service_offering(o: &ServiceOffering) -> Value {
    json!({
        "id": o.id.to_string(),
        "name": o.name,
        "displaytext": o.display_text,
        "cpunumber": o.cpu_number,
        "cpuspeed": o.cpu_speed,
        "memory": o.memory,
        "offerha": o.offer_ha,
        "storagetype": s(&o.storage_type),
        "iscustomized": false,
        "hosttags": o.host_tags,
        "created": date::format(o.created),
    })
}

pub fn disk_offering(o: &DiskOffering) -> Value {
    json!({
        "id": o.id.to_string(),
        "name": o.name,
        "displaytext": o.display_text,
        "disksize": o.disk_size,
        "iscustomized": o.is_customized,
        "storagetype": s(&o.storage_type),
        "tags": o.tags,
        "created": date::format(o.created),
    })
}

pub fn template(t: &Template) -> Value {
    json!({
        "id": t.id.to_string(),
        "name": t.name,
        "displaytext": t.display_text,
        "ostypename": t.os_type_name,
        "format": t.format,
        "hypervisor": t.hypervisor,
        "isready": t.is_ready,
        "ispublic": t.is_public,
        "isfeatured": t.is_featured,
        "passwordenabled": t.password_enabled,
        "size": t.size,
        "zoneid": t.zone_id.map(|z| z.to_string()),
        "status": if t.is_ready { "Download Complete" } else { "Not Ready" },
        "templatetype": "USER",
        "account": null,
        "created": date::format(t.created),
    })
}

pub fn network_offering(o: &NetworkOffering) -> Value {
    json!({
        "id": o.id.to_string(),
        "name": o.name,
        "displaytext": o.display_text,
        "guestiptype": s(&o.guest_ip_type),
        "state": s(&o.state),
        "isdefault": o.is_default,
        "specifyvlan": o.specify_vlan,
        "traffictype": "Guest",
        "service": o.services.iter().map(|name| json!({"name": name})).collect::<Vec<_>>(),
    })
}

pub fn network(n: &Network) -> Value {
    json!({
        "id": n.id.to_string(),
        "name": n.name,
        "displaytext": n.display_text,
        "state": s(&n.state),
        "cidr": n.cidr,
        "gateway": n.gateway,
        "netmask": n.netmask,
        "vlan": n.vlan,
        "type": "Isolated",
        "traffictype": "Guest",
        "networkofferingid": n.network_offering_id.to_string(),
        "zoneid": n.zone_id.to_string(),
        "accountid": n.account_id.to_string(),
        "created": date::format(n.created),
    })
}

pub fn vm(v: &Vm) -> Value {
    json!({
        "id": v.id.to_string(),
        "name": v.name,
        "displayname": v.display_name,
        "state": s(&v.state),
        "zoneid": v.zone_id.to_string(),
        "templateid": v.template_id.to_string(),
        "serviceofferingid": v.service_offering_id.to_string(),
        "cpunumber": v.cpu_number,
        "cpuspeed": v.cpu_speed,
        "memory": v.memory,
        "hostid": v.host_id.map(|h| h.to_string()),
        "hostname": v.host_id.and(v.host_name.clone()),
        "zonename": v.zone_name,
        "templatename": v.template_name,
        "serviceofferingname": v.service_offering_name,
        "hypervisor": "Simulator",
        "haenable": v.ha_enabled,
        "accountid": v.account_id.to_string(),
        "domainid": v.domain_id.to_string(),
        "keypairs": if v.ssh_key_pairs.is_empty() { None } else { Some(v.ssh_key_pairs.join(",")) },
        "nic": if v.nics.is_empty() { None } else { Some(v.nics.iter().map(nic).collect::<Vec<_>>()) },
        "created": date::format(v.created),
    })
}

/// A VM's NIC as `virtualmachine.nic[]` shows it.
pub fn nic(n: &Nic) -> Value {
    json!({
        "id": n.id.to_string(),
        "networkid": n.network_id.to_string(),
        "ipaddress": n.ip_address,
        "netmask": n.netmask,
        "gateway": n.gateway,
        "macaddress": n.mac_address,
        "isdefault": n.is_default,
        "deviceid": n.device_id.to_string(),
        "traffictype": "Guest",
        "type": "Isolated",
    })
}

pub fn volume(v: &Volume) -> Value {
    json!({
        "id": v.id.to_string(),
        "name": v.name,
        "state": s(&v.state),
        "type": s(&v.volume_type),
        "size": v.size,
        "zoneid": v.zone_id.to_string(),
        "diskofferingid": v.disk_offering_id.map(|i| i.to_string()),
        "virtualmachineid": v.vm_id.map(|i| i.to_string()),
        "deviceid": v.device_id,
        "storageid": v.pool_id.map(|i| i.to_string()),
        "accountid": v.account_id.to_string(),
        "created": date::format(v.created),
    })
}

pub fn public_ip(i: &IpAddress) -> Value {
    json!({
        "id": i.id.to_string(),
        "ipaddress": i.address,
        "state": s(&i.state),
        "issourcenat": i.is_source_nat,
        "isstaticnat": false,
        "associatednetworkid": i.network_id.to_string(),
        "zoneid": i.zone_id.to_string(),
        "accountid": i.account_id.to_string(),
        "allocated": date::format(i.allocated),
    })
}

pub fn ssh_key_pair(k: &SshKeyPair) -> Value {
    json!({
        "id": k.id.to_string(),
        "name": k.name,
        "fingerprint": k.fingerprint,
        "accountid": k.account_id.to_string(),
        "created": date::format(k.created),
    })
}

fn rule(r: &SecurityRule) -> Value {
    json!({
        "ruleid": r.rule_id.to_string(),
        "protocol": r.protocol,
        "startport": r.start_port,
        "endport": r.end_port,
        "icmptype": r.icmp_type,
        "icmpcode": r.icmp_code,
        "cidr": r.cidr,
    })
}

pub fn security_group(g: &SecurityGroup) -> Value {
    json!({
        "id": g.id.to_string(),
        "name": g.name,
        "description": g.description,
        "accountid": g.account_id.to_string(),
        "ingressrule": g.ingress.iter().map(rule).collect::<Vec<_>>(),
        "egressrule": g.egress.iter().map(rule).collect::<Vec<_>>(),
    })
}

pub fn tag(t: &Tag) -> Value {
    json!({
        "key": t.key,
        "value": t.value,
        "resourcetype": t.resource_type,
        "resourceid": t.resource_id.to_string(),
        "accountid": t.account_id.to_string(),
    })
}

pub fn event(e: &Event) -> Value {
    json!({
        "id": e.id.to_string(),
        "type": e.event_type,
        "level": s(&e.level),
        "state": s(&e.state),
        "description": e.description,
        "accountid": e.account_id.to_string(),
        "resourcetype": e.resource_type,
        "resourceid": e.resource_id.map(|r| r.to_string()),
        "created": date::format(e.created),
    })
}

/// `listAlerts`.
pub fn alert(a: &Alert) -> Value {
    json!({
        "id": a.id.to_string(),
        "type": a.alert_type,
        "name": a.name,
        "description": a.subject,
        "sent": date::format(a.sent),
    })
}

/// `queryAsyncJobResult` and `listAsyncJobs`: `jobresult` only once the job has ended.
pub fn async_job(j: &AsyncJob) -> Value {
    let ended = j.status != JobStatus::Pending;
    json!({
        "jobid": j.id.to_string(),
        "accountid": j.account_id.to_string(),
        "userid": j.user_id.to_string(),
        "cmd": j.command,
        "jobstatus": u8::from(j.status),
        "jobprocstatus": 0,
        "jobresultcode": j.result_code,
        "jobresulttype": "object",
        "jobresult": if ended { j.result.clone() } else { None },
        "jobinstancetype": j.instance_type,
        "jobinstanceid": j.instance_id.map(|i| i.to_string()),
        "created": date::format(j.created),
        "completed": j.completed.map(date::format),
    })
}
