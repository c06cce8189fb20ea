//! The VM's NICs: one per network, in the order the deploy named them (NIC 0,
//! the default, on the first), each with an address and a MAC claimed by the
//! store's `allocate_ip` under the key `vm/<vm_id>/nic/<i>`, so running the
//! step again returns the same NICs and claims nothing more.

use std::net::Ipv4Addr;

use stratus_contracts::message_types::network::{
    AllocateNics, NicInfo, NicsAllocated, ReleaseNics,
};
use stratus_messaging::step::StepError;
use stratus_model::*;
use stratus_store::primitives::{IpRequest, usable_addresses};
use stratus_store::{Store, StoreError};

use crate::{check_usable, default_network, store_error, texts};

/// The most NICs a step may name: more is a malformed command (and a
/// release would loop through that many reads).
pub const MAX_NICS: u32 = 4096;

/// The idempotency key of NIC `index` of `vm`.
pub fn nic_key(vm: Id<Vm>, index: u32) -> String {
    format!("vm/{vm}/nic/{index}")
}

fn parse_id<T>(what: &str, id: &str) -> Result<Id<T>, StepError> {
    id.parse()
        .map_err(|_| StepError::internal(format!("the step's {what} {id:?} is not a UUID")))
}

/// The network NIC `index` goes on: the `index`-th named, or (none named)
/// the account's default isolated network in the zone.
async fn network_for(
    store: &Store,
    input: &AllocateNics,
    index: usize,
    zone_id: Id<Zone>,
) -> Result<Network, StepError> {
    let Some(raw) = input.network_ids.get(index) else {
        let account_id: Id<Account> = parse_id("account_id", &input.account_id)?;
        let account = store
            .get(account_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| texts::unknown_entity("account", &input.account_id))?;
        let zone = store
            .get(zone_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| texts::unknown_entity("zoneid", &input.zone_id))?;
        return default_network::resolve(store, &account.value, &zone.value).await;
    };
    let Ok(id) = raw.parse::<Id<Network>>() else {
        return Err(texts::unknown_network(raw));
    };
    let network = store
        .get(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| texts::unknown_network(raw))?
        .value;
    check_usable(&network, zone_id)?;
    Ok(network)
}

/// The VLAN a NIC shows: the bare number, as CloudStack's `vlan` field of a
/// network (its `broadcasturi` is `vlan://<n>`).
fn bare_vlan(network: Option<&Network>) -> Option<String> {
    network
        .and_then(|n| n.vlan.as_deref())
        .map(|v| v.strip_prefix("vlan://").unwrap_or(v).to_string())
}

fn nic_info(nic: Nic, network: Option<&Network>) -> NicInfo {
    NicInfo {
        nic_id: nic.id.to_string(),
        network_id: nic.network_id.to_string(),
        ip_address: nic.ip_address,
        netmask: nic.netmask,
        gateway: nic.gateway,
        mac_address: nic.mac_address,
        vlan: bare_vlan(network),
        is_default: nic.is_default,
        device_id: nic.device_id,
    }
}

/// Allocates the VM's NICs.
///
/// A NIC an earlier run of this step made is returned as it is, without
/// checking its network again: that run may have succeeded, and the saga
/// may depend on it. So a refusal only ever concerns a step that never
/// succeeded, and it releases the NICs the step holds: a failed step leaves
/// nothing behind even when the saga does not undo it.
pub async fn allocate(store: &Store, input: &AllocateNics) -> Result<NicsAllocated, StepError> {
    let vm: Id<Vm> = parse_id("vm_id", &input.vm_id)?;
    if input.network_ids.len() > MAX_NICS as usize {
        return Err(StepError::internal(format!(
            "allocate-nics for VM {vm} names {} networks, more than the {MAX_NICS} NICs a VM can have",
            input.network_ids.len()
        )));
    }
    let zone_id: Id<Zone> = parse_id("zone_id", &input.zone_id)?;
    // NetworkModelImpl.checkRequestedIpAddresses, before anything is made.
    let requested: Option<Ipv4Addr> = match input.ip_address.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(ip) => Some(ip.parse().map_err(|_| texts::invalid_ipv4(ip))?),
    };
    let count = input.network_ids.len().max(1);
    let mut nics = Vec::with_capacity(count);
    for (i, index) in (0..count).zip(0u32..) {
        let made = match store
            .get(Nic::id_for(&nic_key(vm, index)))
            .await
            .map_err(store_error)?
        {
            Some(nic) => {
                let network = store.get(nic.value.network_id).await.map_err(store_error)?;
                Ok(nic_info(nic.value, network.as_ref().map(|n| &n.value)))
            }
            None => match network_for(store, input, i, zone_id).await {
                Ok(network) => {
                    let requested = if index == 0 { requested } else { None };
                    allocate_one(store, vm, index, &network, requested).await
                }
                Err(e) => Err(e),
            },
        };
        match made {
            Ok(nic) => nics.push(nic),
            Err(e @ StepError::Failed { .. }) => {
                release_keys(store, vm, index).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(NicsAllocated { nics })
}

async fn allocate_one(
    store: &Store,
    vm: Id<Vm>,
    index: u32,
    network: &Network,
    requested: Option<Ipv4Addr>,
) -> Result<NicInfo, StepError> {
    if let Some(r) = requested
        && !usable_addresses(network).map_err(store_error)?.contains(&r)
    {
        // IpAddressManagerImpl.acquireGuestIpAddress logs why and finds nothing.
        tracing::warn!(vm_id = %vm, network_id = %network.id, requested = %r, cidr = %network.cidr, gateway = %network.gateway,
            "requested ip address is outside the network's cidr, or its gateway, network or broadcast address");
        return Err(texts::no_guest_ip(network));
    }
    let request = IpRequest {
        key: nic_key(vm, index),
        network_id: network.id,
        vm_id: vm,
        requested,
        is_default: index == 0,
        device_id: index,
    };
    match store.allocate_ip(&request).await {
        Ok(allocated) => {
            let (_, nic) = allocated.value;
            tracing::info!(vm_id = %vm, network_id = %network.id, nic_id = %nic.id, ip = %nic.ip_address, device_id = index, retries = allocated.retries, "NIC allocated");
            Ok(nic_info(nic, Some(network)))
        }
        // A requested address already in use, or none free.
        Err(StoreError::Exhausted(why)) => {
            tracing::warn!(vm_id = %vm, network_id = %network.id, requested = ?requested, why = %why, "no guest address");
            Err(texts::no_guest_ip(network))
        }
        Err(e) => Err(store_error(e)),
    }
}

/// Releases NICs `0..count` of `vm`; absent ones are skipped.
async fn release_keys(store: &Store, vm: Id<Vm>, count: u32) -> Result<(), StepError> {
    for i in 0..count {
        store
            .release_ip(&nic_key(vm, i))
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

/// Releases every NIC `allocate` could have made for the VM; safe to repeat,
/// and when nothing was allocated.
pub async fn release(store: &Store, input: &ReleaseNics) -> Result<(), StepError> {
    // allocate refuses a vm_id that is not a UUID, so such a VM holds nothing.
    let Ok(vm) = input.vm_id.parse::<Id<Vm>>() else {
        tracing::warn!(vm_id = %input.vm_id, "release-nics for a vm_id that is not a UUID: nothing to release");
        return Ok(());
    };
    if input.count > MAX_NICS {
        return Err(StepError::internal(format!(
            "release-nics for VM {vm} names {} NICs, more than the {MAX_NICS} a VM can have",
            input.count
        )));
    }
    release_keys(store, vm, input.count.max(1)).await?;
    tracing::info!(vm_id = %vm, count = input.count.max(1), "NICs released");
    Ok(())
}
