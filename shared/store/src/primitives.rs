//! The primitives later issues build on, each idempotent on its key:
//!
//! - **Outbox**: [`Transaction::enqueue`] writes a message with the state change
//!   it follows from; after the commit the caller publishes it and calls
//!   [`Store::outbox_sent`] once the broker confirms; the relay republishes
//!   [`Store::outbox_pending`] rows with the same message ids.
//! - **Idempotency**: [`Transaction::mark_handled`] records, in the same
//!   transaction as the effect, that a consumer handled a message; a
//!   redelivered message's transaction then fails with a duplicate conflict
//!   ([`StoreError::is_duplicate`]) and its effect happens once.
//! - **IP allocation**: [`Store::allocate_ip`] claims a requested or the next
//!   free address of a network together with its NIC; [`Store::release_ip`].
//! - **Capacity**: [`Store::reserve_capacity`] holds CPU and memory on a host
//!   within its overprovisioned limit; [`Store::release_capacity`].

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use chrono::Utc;
use stratus_model::*;
use uuid::Uuid;

use crate::{Condition, Index, Result, Store, StoreError, Transaction, Versioned, Write};

/// Conflicts tolerated in one primitive before it gives up.
const MAX_RETRIES: u32 = 200;

/// A primitive's result, with the conflicts it retried through.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocated<T> {
    pub value: T,
    pub retries: u32,
}

impl StoreError {
    /// The transaction failed because the message was handled before.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, StoreError::Conflict { kind, .. } if *kind == Handled::KIND)
    }
}

impl Transaction {
    /// Writes `message` to the outbox with this transaction's state change.
    pub fn enqueue(&mut self, message: &OutboxMessage) -> &mut Self {
        self.create(message)
    }

    /// Records that `consumer` handled `message_id`, with this transaction's effect.
    pub fn mark_handled(&mut self, consumer: &str, message_id: Uuid) -> &mut Self {
        self.create(&Handled {
            id: Handled::id_for(consumer, message_id),
            consumer: consumer.to_string(),
            message_id,
            at: Utc::now(),
        })
    }
}

/// What [`Store::allocate_ip`] needs.
#[derive(Debug, Clone)]
pub struct IpRequest {
    /// The allocation's idempotency key (e.g. the saga step that asks).
    pub key: String,
    pub network_id: Id<Network>,
    pub vm_id: Id<Vm>,
    pub requested: Option<Ipv4Addr>,
    pub is_default: bool,
    pub device_id: u32,
}

/// The usable addresses of a network: its CIDR without the network and
/// broadcast addresses and the gateway.
pub fn usable_addresses(network: &Network) -> Result<Vec<Ipv4Addr>> {
    let invalid = || {
        StoreError::Invalid(format!(
            "network {} has a malformed CIDR {:?}",
            network.id, network.cidr
        ))
    };
    let (base, bits) = network.cidr.split_once('/').ok_or_else(invalid)?;
    let base: Ipv4Addr = base.parse().map_err(|_| invalid())?;
    let bits: u32 = bits
        .parse()
        .ok()
        .filter(|b| (8..=30).contains(b))
        .ok_or_else(invalid)?;
    let gateway: Option<Ipv4Addr> = network.gateway.parse().ok();
    let mask = u32::MAX << (32 - bits);
    let first = u32::from(base) & mask;
    let last = first | !mask;
    Ok(((first + 1)..last)
        .map(Ipv4Addr::from)
        .filter(|a| Some(*a) != gateway)
        .collect())
}

fn mac_for(nic: Id<Nic>) -> String {
    let b = nic.uuid().into_bytes();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

impl Store {
    pub async fn was_handled(&self, consumer: &str, message_id: Uuid) -> Result<bool> {
        Ok(self
            .get(Handled::id_for(consumer, message_id))
            .await?
            .is_some())
    }

    /// Removes an outbox row once the broker has confirmed its message; safe to repeat.
    pub async fn outbox_sent(&self, id: Id<OutboxMessage>) -> Result<()> {
        self.write(vec![Write::Delete {
            kind: OutboxMessage::KIND,
            id: id.uuid(),
            condition: Condition::Any,
        }])
        .await
    }

    /// Outbox rows older than `older_than` (left behind by a publisher that died), up to `limit`.
    pub async fn outbox_pending(
        &self,
        older_than: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>> {
        let cutoff = Utc::now() - chrono::Duration::from_std(older_than).unwrap_or_default();
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .list::<OutboxMessage>(&Index::State("pending".into()), after, 500)
                .await?;
            out.extend(
                page.items
                    .into_iter()
                    .map(|v| v.value)
                    .filter(|m| m.created <= cutoff),
            );
            match page.next {
                Some(n) if out.len() < limit => after = Some(n),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Claims the requested or the next free address of a network, with its NIC,
    /// in one transaction. Repeating a key returns what it allocated the first time.
    pub async fn allocate_ip(&self, req: &IpRequest) -> Result<Allocated<(IpAddress, Nic)>> {
        let nic_id = Nic::id_for(&req.key);
        let network = self
            .get(req.network_id)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: Network::KIND,
                id: req.network_id.uuid(),
            })?
            .value;
        let usable = usable_addresses(&network)?;
        if let Some(r) = req.requested
            && !usable.contains(&r)
        {
            return Err(StoreError::Invalid(format!(
                "{r} is not a usable address of network {} ({})",
                network.id, network.cidr
            )));
        }
        let mut taken: HashSet<String> = HashSet::new();
        let mut after = None;
        loop {
            let page = self
                .candidates::<IpAddress>(&Index::Network(network.id.uuid()), after, 1000)
                .await?;
            taken.extend(page.items.into_iter().map(|v| v.value.address));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let mut retries = 0;
        loop {
            if let Some(existing) = self.get(nic_id).await? {
                let ip = self
                    .get(IpAddress::id_for(network.id, &existing.value.ip_address))
                    .await?;
                if let Some(ip) = ip {
                    return Ok(Allocated {
                        value: (ip.value, existing.value),
                        retries,
                    });
                }
            }
            let address = match req.requested {
                Some(r) if taken.contains(&r.to_string()) => {
                    return Err(StoreError::Exhausted(format!(
                        "{r} is taken in network {}",
                        network.id
                    )));
                }
                Some(r) => r,
                None => *usable
                    .iter()
                    .find(|a| !taken.contains(&a.to_string()))
                    .ok_or_else(|| {
                        StoreError::Exhausted(format!(
                            "no free address in network {} ({})",
                            network.id, network.cidr
                        ))
                    })?,
            };
            let address = address.to_string();
            let ip = IpAddress {
                id: IpAddress::id_for(network.id, &address),
                address: address.clone(),
                network_id: network.id,
                zone_id: network.zone_id,
                account_id: network.account_id,
                purpose: IpPurpose::Guest,
                state: IpState::Allocated,
                nic_id: Some(nic_id),
                is_source_nat: false,
                allocated: Utc::now(),
            };
            let nic = Nic {
                id: nic_id,
                vm_id: req.vm_id,
                network_id: network.id,
                account_id: network.account_id,
                ip_address: address.clone(),
                netmask: network.netmask.clone(),
                gateway: network.gateway.clone(),
                mac_address: mac_for(nic_id),
                is_default: req.is_default,
                device_id: req.device_id,
            };
            let mut tx = Transaction::new();
            tx.create(&ip).create(&nic);
            match self.transact(tx).await {
                Ok(()) => {
                    return Ok(Allocated {
                        value: (ip, nic),
                        retries,
                    });
                }
                // Someone else took the address: try the next one.
                Err(StoreError::Conflict { kind, .. }) if kind == IpAddress::KIND => {
                    taken.insert(address);
                }
                // This key allocated meanwhile: the loop returns it.
                Err(StoreError::Conflict { kind, .. }) if kind == Nic::KIND => {}
                Err(e) => return Err(e),
            }
            retries += 1;
            if retries > MAX_RETRIES {
                return Err(StoreError::Backend(format!(
                    "allocating in network {}: gave up after {retries} conflicts",
                    network.id
                )));
            }
        }
    }

    /// Releases what `allocate_ip` claimed for `key`; safe to repeat.
    pub async fn release_ip(&self, key: &str) -> Result<()> {
        let Some(nic) = self.get(Nic::id_for(key)).await? else {
            return Ok(());
        };
        let ip_id = IpAddress::id_for(nic.value.network_id, &nic.value.ip_address);
        self.write(vec![
            Write::Delete {
                kind: Nic::KIND,
                id: nic.value.id.uuid(),
                condition: Condition::Any,
            },
            Write::Delete {
                kind: IpAddress::KIND,
                id: ip_id.uuid(),
                condition: Condition::Any,
            },
        ])
        .await
    }

    /// Holds `cpu` MHz and `memory` bytes on `host_id` for `key`, within the host's
    /// capacity times the overprovisioning factors. Repeating a key holds nothing more.
    pub async fn reserve_capacity(
        &self,
        key: &str,
        host_id: Id<Host>,
        cpu: u64,
        memory: u64,
        cpu_factor: f64,
        memory_factor: f64,
    ) -> Result<Allocated<Reservation>> {
        let id = Reservation::id_for(key);
        let mut retries = 0;
        loop {
            if let Some(existing) = self.get(id).await? {
                return Ok(Allocated {
                    value: existing.value,
                    retries,
                });
            }
            let host = self
                .get(host_id)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    kind: Host::KIND,
                    id: host_id.uuid(),
                })?;
            let cpu_limit =
                (host.value.cpu_number as f64 * host.value.cpu_speed as f64 * cpu_factor) as u64;
            let memory_limit = (host.value.memory_total as f64 * memory_factor) as u64;
            if host.value.cpu_allocated + cpu > cpu_limit
                || host.value.memory_allocated + memory > memory_limit
            {
                return Err(StoreError::Exhausted(format!(
                    "host {host_id} has {} of {cpu_limit} MHz and {} of {memory_limit} bytes allocated; {cpu} MHz and {memory} bytes do not fit",
                    host.value.cpu_allocated, host.value.memory_allocated
                )));
            }
            let reservation = Reservation {
                id,
                key: key.to_string(),
                host_id,
                cpu,
                memory,
                created: Utc::now(),
            };
            let mut updated = host.clone();
            updated.value.cpu_allocated += cpu;
            updated.value.memory_allocated += memory;
            let mut tx = Transaction::new();
            tx.create(&reservation).update(&updated);
            match self.transact(tx).await {
                Ok(()) => {
                    return Ok(Allocated {
                        value: reservation,
                        retries,
                    });
                }
                Err(e) if e.is_conflict() => retries += 1,
                Err(e) => return Err(e),
            }
            if retries > MAX_RETRIES {
                return Err(StoreError::Backend(format!(
                    "reserving on host {host_id}: gave up after {retries} conflicts"
                )));
            }
        }
    }

    /// Gives back what `reserve_capacity` held for `key`; safe to repeat.
    pub async fn release_capacity(&self, key: &str) -> Result<u32> {
        let mut retries = 0;
        loop {
            let Some(reservation) = self.get(Reservation::id_for(key)).await? else {
                return Ok(retries);
            };
            let host = self.get(reservation.value.host_id).await?;
            let mut tx = Transaction::new();
            tx.delete(&reservation);
            if let Some(host) = host {
                let mut updated: Versioned<Host> = host.clone();
                updated.value.cpu_allocated = updated
                    .value
                    .cpu_allocated
                    .saturating_sub(reservation.value.cpu);
                updated.value.memory_allocated = updated
                    .value
                    .memory_allocated
                    .saturating_sub(reservation.value.memory);
                tx.update(&updated);
            }
            match self.transact(tx).await {
                Ok(()) => return Ok(retries),
                Err(e) if e.is_conflict() => retries += 1,
                Err(e) => return Err(e),
            }
            if retries > MAX_RETRIES {
                return Err(StoreError::Backend(format!(
                    "releasing {key}: gave up after {retries} conflicts"
                )));
            }
        }
    }
}
