//! CloudStack's error codes and texts for what networking refuses, from
//! apache/cloudstack's Java source (the class each comes from is named).
//! Stratus has no numeric database ids: where CloudStack prints one, the
//! object's UUID stands in for it.

use stratus_cloudstack::ApiError;
use stratus_messaging::step::StepError;
use stratus_model::{Account, Network, NetworkOffering};

/// The command a deploy's errors are reported for (the API dispatcher's texts name it).
const DEPLOY: &str = "deployVirtualMachine";

fn api(e: ApiError) -> StepError {
    StepError::failed(e.code.code(), e.text)
}

/// `NetworkVO.toString()`:
/// `Network {"id": 204, "name": "n", "uuid": "…", "networkofferingid": 10}`.
pub fn network_ref(n: &Network) -> String {
    format!(
        "Network {{\"id\": \"{id}\", \"name\": \"{name}\", \"uuid\": \"{id}\", \"networkofferingid\": \"{offering}\"}}",
        id = n.id,
        name = n.name,
        offering = n.network_offering_id
    )
}

/// `AccountVO.toString()`: `Account [{"accountName":"a","id":2,"uuid":"…"}]`.
pub fn account_ref(a: &Account) -> String {
    format!(
        "Account [{{\"accountName\":\"{name}\",\"id\":\"{id}\",\"uuid\":\"{id}\"}}]",
        name = a.name,
        id = a.id
    )
}

/// A network id that names no network (or a removed one): the API
/// dispatcher's text for an unknown UUID, which clients match as "not found".
pub fn unknown_network(id: &str) -> StepError {
    api(ApiError::entity_not_found(DEPLOY, "networkids", id))
}

/// The VM's zone or owner vanished after the API checked them.
pub fn unknown_entity(param: &str, id: &str) -> StepError {
    api(ApiError::entity_not_found(DEPLOY, param, id))
}

/// `UserVmManagerImpl.createVirtualMachine`: a network of another zone (431).
pub fn wrong_zone(network: &Network, zone: &str) -> StepError {
    api(ApiError::invalid_parameter(format!(
        "Network id={} doesn't belong to zone {zone}",
        network.id
    )))
}

/// A network that was shut down. CloudStack has no deploy-time text for it
/// (it re-implements such a network); this follows the wording of
/// `UserVmManagerImpl`'s "Network id=… is system only and can't be used for
/// vm deployment".
pub fn shut_down(network: &Network) -> StepError {
    api(ApiError::invalid_parameter(format!(
        "Network id={} is in state Shutdown and can't be used for vm deployment",
        network.id
    )))
}

/// `NetworkModelImpl.checkRequestedIpAddresses`: `ipaddress` is not an IPv4 address (431).
pub fn invalid_ipv4(requested: &str) -> StepError {
    api(ApiError::invalid_parameter(format!(
        "Invalid specified IPv4 address {requested}"
    )))
}

/// `GuestNetworkGuru.allocate`, when `IpAddressManagerImpl.acquireGuestIpAddress`
/// finds no address: none is free, or the requested one is taken, outside the
/// network's CIDR, its gateway, or its network or broadcast address (CloudStack
/// logs which; the job fails with this text, `InsufficientVirtualNetworkCapacityException`, 533).
pub fn no_guest_ip(network: &Network) -> StepError {
    StepError::failed(
        533,
        format!(
            "Unable to acquire Guest IP address for network {}",
            network_ref(network)
        ),
    )
}

/// `GuestNetworkGuru.allocateVnet`: no VLAN left in the zone's range, or no
/// range (`InsufficientVirtualNetworkCapacityException`, 533). The trailing
/// space is CloudStack's.
pub fn no_vlan(network: &Network) -> StepError {
    StepError::failed(
        533,
        format!(
            "Unable to allocate vnet as a part of network {} implement ",
            network_ref(network)
        ),
    )
}

/// `UserVmManagerImpl.getDefaultNetwork`: no default isolated offering (431).
pub fn no_required_offering() -> StepError {
    api(ApiError::invalid_parameter(
        "Unable to find network offering with availability=Required to automatically create the network as a part of vm creation",
    ))
}

/// `UserVmManagerImpl.getDefaultNetwork`: the default isolated offering is disabled (431).
pub fn offering_not_enabled(offering: &NetworkOffering) -> StepError {
    api(ApiError::invalid_parameter(format!(
        "Required network offering id={} is not in Enabled",
        offering.id
    )))
}

/// `UserVmManagerImpl.getDefaultNetwork`: the account has several isolated
/// networks in the zone and named none (431).
pub fn several_isolated(account: &Account) -> StepError {
    api(ApiError::invalid_parameter(format!(
        "More than 1 default Isolated networks are found for account {}; please specify networkIds",
        account_ref(account)
    )))
}
