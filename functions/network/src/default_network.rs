//! The network a VM joins when its deploy names none: the account's isolated
//! network in the zone, made on the account's first deploy there, as
//! CloudStack's `UserVmManagerImpl.getDefaultNetwork` and
//! `createDefaultNetworkForAccount` do (name and display text
//! `<account name>-network`, from the default isolated offering).
//!
//! Its id derives from (account, zone), so two first deploys of one account
//! racing each other make one network: both try to create the same id, one
//! transaction wins, the other reads the winner's network. The network is
//! created Implemented with its VLAN: the VLAN's [`VlanClaim`] and the network
//! are written in one transaction, so neither exists without the other.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use stratus_messaging::step::StepError;
use stratus_model::*;
use stratus_store::{Index, Store, StoreError, Transaction};
use uuid::Uuid;

use crate::texts;
use crate::zone_config::{self, DEFAULT_GUEST_CIDR, GuestCidr};
use crate::{check_usable, store_error};

/// The namespace of default network ids (UUIDv5 of `<account>/<zone>`).
pub const NAMESPACE: Uuid = Uuid::from_u128(0x4e57_0d3f_a1c8_4b6e_9d02_0000_0000_de7a);

/// The id of `account`'s default isolated network in `zone`.
pub fn network_id(account: Id<Account>, zone: Id<Zone>) -> Id<Network> {
    Id::derived(NAMESPACE, &format!("{account}/{zone}"))
}

/// The account's isolated network in the zone, made if it has none.
///
/// - The derived network, if it exists.
/// - Else CloudStack's rule: the account's one isolated network in the zone
///   (made otherwise, e.g. by createNetwork); several: the caller must name one.
/// - Else a new one.
pub async fn resolve(store: &Store, account: &Account, zone: &Zone) -> Result<Network, StepError> {
    let id = network_id(account.id, zone.id);
    if let Some(n) = store.get(id).await.map_err(store_error)? {
        check_usable(&n.value, zone.id)?;
        return Ok(n.value);
    }
    let offerings: HashMap<Id<NetworkOffering>, NetworkOffering> = store
        .walk::<NetworkOffering>(&Index::All)
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|o| (o.value.id, o.value))
        .collect();
    let mut isolated: Vec<Network> = store
        .walk::<Network>(&Index::Account(account.id.uuid()))
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|v| v.value)
        .filter(|n| {
            n.zone_id == zone.id
                && !matches!(n.state, NetworkState::Destroy | NetworkState::Shutdown)
                && offerings
                    .get(&n.network_offering_id)
                    .is_some_and(|o| o.guest_ip_type == GuestIpType::Isolated)
        })
        .collect();
    match isolated.len() {
        0 => create(store, account, zone, &offerings).await,
        1 => Ok(isolated.remove(0)),
        _ => Err(texts::several_isolated(account)),
    }
}

/// The default isolated offering new default networks are made from: the
/// first Enabled one (CloudStack's `Availability=Required` offering).
fn required_offering(
    offerings: &HashMap<Id<NetworkOffering>, NetworkOffering>,
) -> Result<&NetworkOffering, StepError> {
    let mut defaults: Vec<&NetworkOffering> = offerings
        .values()
        .filter(|o| o.guest_ip_type == GuestIpType::Isolated && o.is_default)
        .collect();
    defaults.sort_by_key(|o| o.id);
    match defaults
        .iter()
        .find(|o| o.state == AllocationState::Enabled)
    {
        Some(o) => Ok(o),
        None => Err(defaults
            .first()
            .map(|o| texts::offering_not_enabled(o))
            .unwrap_or_else(texts::no_required_offering)),
    }
}

/// Creates the account's default network with the lowest free VLAN of the
/// zone's range, or returns the one a concurrent deploy created first.
/// It does not look for an existing network first: [`resolve`] does.
pub(crate) async fn create(
    store: &Store,
    account: &Account,
    zone: &Zone,
    offerings: &HashMap<Id<NetworkOffering>, NetworkOffering>,
) -> Result<Network, StepError> {
    let offering = required_offering(offerings)?;
    let cidr_text = zone
        .guest_cidr_address
        .as_deref()
        .unwrap_or(DEFAULT_GUEST_CIDR);
    let cidr = GuestCidr::parse(cidr_text).ok_or_else(|| {
        StepError::internal(format!(
            "zone {} has a malformed guest CIDR {cidr_text:?}",
            zone.id
        ))
    })?;
    let name = format!("{}-network", account.name);
    let mut network = Network {
        id: network_id(account.id, zone.id),
        name: name.clone(),
        display_text: name,
        account_id: account.id,
        zone_id: zone.id,
        network_offering_id: offering.id,
        state: NetworkState::Implemented,
        cidr: cidr.cidr,
        gateway: cidr.gateway.to_string(),
        netmask: cidr.netmask.to_string(),
        vlan: None,
        created: Utc::now(),
    };
    let ranges = match zone.vlan_range.as_deref() {
        Some(r) => zone_config::parse_vlan_range(r).ok_or_else(|| {
            StepError::internal(format!("zone {} has a malformed VLAN range {r:?}", zone.id))
        })?,
        None => Vec::new(),
    };
    // Claims already made: skipped without a write. One made meanwhile shows
    // as a conflict on the claim, and the next VLAN is tried.
    let mut taken: HashSet<u32> = store
        .walk::<VlanClaim>(&Index::Zone(zone.id.uuid()))
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|c| c.value.vlan)
        .collect();
    loop {
        let Some(vlan) = zone_config::vlans(&ranges).find(|v| !taken.contains(v)) else {
            tracing::warn!(zone_id = %zone.id, account_id = %account.id, range = ?zone.vlan_range, "no free VLAN for the account's default network");
            return Err(texts::no_vlan(&network));
        };
        network.vlan = Some(vlan.to_string());
        let claim = VlanClaim {
            id: VlanClaim::id_for(zone.id, vlan),
            zone_id: zone.id,
            vlan,
            network_id: network.id,
            created: Utc::now(),
        };
        let mut tx = Transaction::new();
        tx.create(&network).create(&claim);
        match store.transact(tx).await {
            Ok(()) => {
                tracing::info!(network_id = %network.id, account_id = %account.id, zone_id = %zone.id, vlan, "created the account's default isolated network");
                return Ok(network);
            }
            Err(StoreError::Conflict { kind, .. }) => {
                // Lost to a concurrent first deploy of this account: use its network.
                if let Some(winner) = store.get(network.id).await.map_err(store_error)? {
                    check_usable(&winner.value, zone.id)?;
                    return Ok(winner.value);
                }
                if kind != VlanClaim::KIND {
                    return Err(StepError::transient(format!(
                        "creating network {}: conflict on {kind}",
                        network.id
                    )));
                }
                taken.insert(vlan);
            }
            Err(e) => return Err(store_error(e)),
        }
    }
}
