//! The steps against a SQLite store.

use std::sync::Arc;

use chrono::Utc;
use stratus_contracts::message_types::network::{AllocateNics, NicsAllocated, ReleaseNics};
use stratus_contracts::message_types::saga::{Outcome, Step, StepRef, StepResult};
use stratus_messaging::step::StepError;
use stratus_model::samples::{Fixture, Sample};
use stratus_model::*;
use stratus_store::sqlite::SqliteStore;
use stratus_store::{Backend, Index, Store};

use super::*;
use crate::nics::nic_key;

struct World {
    store: Arc<Store>,
    zone: Zone,
    account: Account,
    offering: NetworkOffering,
}

async fn world_with(edit_zone: impl FnOnce(&mut Zone)) -> World {
    let store = Arc::new(Store::new(Backend::Sqlite(
        SqliteStore::open_scratch("t_").unwrap(),
    )));
    let f = Fixture::default();
    let mut zone = Zone {
        guest_cidr_address: Some("10.1.1.0/24".into()),
        vlan_range: Some("100-200".into()),
        ..Zone::sample(&f)
    };
    edit_zone(&mut zone);
    store.create(&zone).await.unwrap();
    let account = store.create(&Account::sample(&f)).await.unwrap().value;
    let offering = store
        .create(&NetworkOffering::sample(&f))
        .await
        .unwrap()
        .value;
    // A shared offering, which must never be taken for the default network.
    store
        .create(&NetworkOffering {
            name: "DefaultSharedNetworkOffering".into(),
            guest_ip_type: GuestIpType::Shared,
            specify_vlan: true,
            ..NetworkOffering::sample(&f)
        })
        .await
        .unwrap();
    World {
        store,
        zone,
        account,
        offering,
    }
}

async fn world() -> World {
    world_with(|_| {}).await
}

impl World {
    fn input(&self, vm: Id<Vm>) -> AllocateNics {
        AllocateNics {
            vm_id: vm.to_string(),
            vm_name: "vm-1".into(),
            account_id: self.account.id.to_string(),
            zone_id: self.zone.id.to_string(),
            network_ids: vec![],
            ip_address: None,
        }
    }

    async fn other_account(&self, name: &str) -> Account {
        self.store
            .create(&Account {
                name: name.into(),
                ..Account::sample(&Fixture::default())
            })
            .await
            .unwrap()
            .value
    }

    /// A network of the account's, made directly (as createNetwork would).
    async fn network(&self, cidr: &str, edit: impl FnOnce(&mut Network)) -> Network {
        let c = zone_config::GuestCidr::parse(cidr).unwrap();
        let mut n = Network {
            id: Id::new(),
            name: "named".into(),
            display_text: "named".into(),
            account_id: self.account.id,
            zone_id: self.zone.id,
            network_offering_id: self.offering.id,
            state: NetworkState::Implemented,
            cidr: c.cidr,
            gateway: c.gateway.to_string(),
            netmask: c.netmask.to_string(),
            vlan: Some("900".into()),
            created: Utc::now(),
        };
        edit(&mut n);
        self.store.create(&n).await.unwrap().value
    }

    async fn count<T: Object>(&self) -> u64 {
        self.store.count::<T>(&Index::All).await.unwrap()
    }
}

fn refusal<T: std::fmt::Debug>(r: Result<T, StepError>) -> (u16, String) {
    match r {
        Err(StepError::Failed { code, text }) => (code, text),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_first_deploy_makes_the_accounts_network_with_a_vlan_and_nic_0() {
    let w = world().await;
    let vm = Id::<Vm>::new();
    let out = nics::allocate(&w.store, &w.input(vm)).await.unwrap();
    assert_eq!(out.nics.len(), 1);
    let nic = &out.nics[0];

    let net_id = default_network::network_id(w.account.id, w.zone.id);
    let net = w.store.get(net_id).await.unwrap().unwrap().value;
    assert_eq!(net.name, "alice-network");
    assert_eq!(net.display_text, "alice-network");
    assert_eq!(net.network_offering_id, w.offering.id);
    assert_eq!(net.state, NetworkState::Implemented);
    assert_eq!(
        (
            net.cidr.as_str(),
            net.gateway.as_str(),
            net.netmask.as_str()
        ),
        ("10.1.1.0/24", "10.1.1.1", "255.255.255.0")
    );
    assert_eq!(net.vlan.as_deref(), Some("100"));
    let claim = w
        .store
        .get(VlanClaim::id_for(w.zone.id, 100))
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(claim.network_id, net_id);

    assert_eq!(nic.network_id, net_id.to_string());
    assert_eq!(nic.ip_address, "10.1.1.2");
    assert_eq!(
        (nic.gateway.as_str(), nic.netmask.as_str()),
        ("10.1.1.1", "255.255.255.0")
    );
    assert_eq!(nic.vlan.as_deref(), Some("100"));
    assert!(nic.is_default);
    assert_eq!(nic.device_id, 0);
    assert_eq!(nic.mac_address.len(), 17);
    assert!(nic.mac_address.starts_with("02:00:"), "{}", nic.mac_address);
    assert_eq!(nic.nic_id, Nic::id_for(&nic_key(vm, 0)).to_string());

    // The account's second VM joins the same network.
    let second = nics::allocate(&w.store, &w.input(Id::new())).await.unwrap();
    assert_eq!(second.nics[0].network_id, net_id.to_string());
    assert_eq!(second.nics[0].ip_address, "10.1.1.3");
    assert_eq!(w.count::<Network>().await, 1);
    assert_eq!(w.count::<VlanClaim>().await, 1);

    // Another account gets its own network and the next VLAN.
    let bob = w.other_account("bob").await;
    let out = nics::allocate(
        &w.store,
        &AllocateNics {
            account_id: bob.id.to_string(),
            ..w.input(Id::new())
        },
    )
    .await
    .unwrap();
    assert_eq!(out.nics[0].vlan.as_deref(), Some("101"));
    assert_eq!(out.nics[0].ip_address, "10.1.1.2");
    let bobs = w
        .store
        .get(default_network::network_id(bob.id, w.zone.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bobs.value.name, "bob-network");
}

#[tokio::test]
async fn the_same_step_twice_gives_the_same_nic_and_claims_nothing_more() {
    let w = world().await;
    let input = w.input(Id::new());
    let a = nics::allocate(&w.store, &input).await.unwrap();
    let b = nics::allocate(&w.store, &input).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(w.count::<IpAddress>().await, 1);
    assert_eq!(w.count::<Nic>().await, 1);
    assert_eq!(w.count::<Network>().await, 1);
    assert_eq!(w.count::<VlanClaim>().await, 1);

    // With a requested address and named networks too.
    let net = w.network("192.168.10.0/24", |_| {}).await;
    let input = AllocateNics {
        network_ids: vec![net.id.to_string()],
        ip_address: Some("192.168.10.40".into()),
        ..w.input(Id::new())
    };
    let a = nics::allocate(&w.store, &input).await.unwrap();
    let b = nics::allocate(&w.store, &input).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(a.nics[0].ip_address, "192.168.10.40");
    assert_eq!(w.count::<IpAddress>().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_deploys_of_one_account_make_one_network() {
    for _ in 0..5 {
        let w = world().await;
        let (a, b) = (w.input(Id::new()), w.input(Id::new()));
        let (ra, rb) = tokio::join!(nics::allocate(&w.store, &a), nics::allocate(&w.store, &b));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.nics[0].network_id, rb.nics[0].network_id);
        assert_ne!(ra.nics[0].ip_address, rb.nics[0].ip_address);
        assert_eq!(w.count::<Network>().await, 1);
        assert_eq!(w.count::<VlanClaim>().await, 1);
        assert_eq!(w.count::<IpAddress>().await, 2);
    }
}

#[tokio::test]
async fn the_loser_of_the_create_reads_the_winners_network_and_claims_no_vlan() {
    let w = world().await;
    let offerings = [(w.offering.id, w.offering.clone())].into_iter().collect();
    let winner = default_network::create(&w.store, &w.account, &w.zone, &offerings)
        .await
        .unwrap();
    // The loser saw no network: its create conflicts (on VLAN 100's claim,
    // then on the network with VLAN 101) and it reads the winner's.
    let loser = default_network::create(&w.store, &w.account, &w.zone, &offerings)
        .await
        .unwrap();
    assert_eq!(loser, winner);
    assert_eq!(loser.vlan.as_deref(), Some("100"));
    assert_eq!(w.count::<Network>().await, 1);
    assert_eq!(w.count::<VlanClaim>().await, 1);
}

#[tokio::test]
async fn a_requested_address_is_honoured_or_refused_as_cloudstack_refuses_it() {
    let w = world().await;
    let with_ip = |ip: &str| AllocateNics {
        ip_address: Some(ip.into()),
        ..w.input(Id::new())
    };
    let out = nics::allocate(&w.store, &with_ip("10.1.1.50"))
        .await
        .unwrap();
    assert_eq!(out.nics[0].ip_address, "10.1.1.50");
    let net = w
        .store
        .get(default_network::network_id(w.account.id, w.zone.id))
        .await
        .unwrap()
        .unwrap()
        .value;
    let no_ip = format!(
        "Unable to acquire Guest IP address for network Network {{\"id\": \"{id}\", \"name\": \"alice-network\", \"uuid\": \"{id}\", \"networkofferingid\": \"{}\"}}",
        w.offering.id,
        id = net.id
    );

    // Taken, outside the CIDR, the gateway, the broadcast address: 533.
    for ip in [
        "10.1.1.50",
        "10.9.9.9",
        "10.1.1.1",
        "10.1.1.255",
        "10.1.1.0",
    ] {
        let (code, text) = refusal(nics::allocate(&w.store, &with_ip(ip)).await);
        assert_eq!((code, text.as_str()), (533, no_ip.as_str()), "{ip}");
    }
    // Not an IPv4 address: 431, before anything is made.
    for ip in ["not-an-ip", "10.1.1.300", "fe80::1"] {
        let (code, text) = refusal(nics::allocate(&w.store, &with_ip(ip)).await);
        assert_eq!(code, 431, "{ip}");
        assert_eq!(text, format!("Invalid specified IPv4 address {ip}"));
    }
    assert_eq!(w.count::<IpAddress>().await, 1);
    assert_eq!(w.count::<Nic>().await, 1);
}

#[tokio::test]
async fn named_networks_give_nics_in_order_with_nic_0_the_default() {
    let w = world().await;
    let first = w.network("192.168.10.0/24", |_| {}).await;
    let second = w
        .network("172.16.5.0/24", |n| n.vlan = Some("vlan://905".into()))
        .await;
    let vm = Id::<Vm>::new();
    let out = nics::allocate(
        &w.store,
        &AllocateNics {
            network_ids: vec![first.id.to_string(), second.id.to_string()],
            ip_address: Some("192.168.10.9".into()),
            ..w.input(vm)
        },
    )
    .await
    .unwrap();
    let summary: Vec<_> = out
        .nics
        .iter()
        .map(|n| {
            (
                n.network_id.clone(),
                n.ip_address.as_str(),
                n.gateway.as_str(),
                n.vlan.as_deref(),
                n.is_default,
                n.device_id,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                first.id.to_string(),
                "192.168.10.9",
                "192.168.10.1",
                Some("900"),
                true,
                0
            ),
            (
                second.id.to_string(),
                "172.16.5.2",
                "172.16.5.1",
                Some("905"),
                false,
                1
            ),
        ]
    );
    assert_ne!(out.nics[0].mac_address, out.nics[1].mac_address);
    // No default network was made.
    assert_eq!(w.count::<Network>().await, 2);
    assert_eq!(w.count::<VlanClaim>().await, 0);
}

#[tokio::test]
async fn unusable_named_networks_are_refused_with_cloudstacks_texts() {
    let w = world().await;
    let named = |ids: Vec<String>| AllocateNics {
        network_ids: ids,
        ..w.input(Id::new())
    };
    let missing = Id::<Network>::new().to_string();
    for id in [missing.clone(), "not-a-uuid".to_string()] {
        let (code, text) = refusal(nics::allocate(&w.store, &named(vec![id.clone()])).await);
        assert_eq!(code, 431);
        assert!(
            text.contains(&format!("Invalid parameter networkids value={id} due to incorrect long value format, or entity does not exist")),
            "{text}"
        );
    }
    let other_zone = Id::<Zone>::new();
    let elsewhere = w
        .network("192.168.20.0/24", |n| n.zone_id = other_zone)
        .await;
    let (code, text) =
        refusal(nics::allocate(&w.store, &named(vec![elsewhere.id.to_string()])).await);
    assert_eq!(
        (code, text),
        (
            431,
            format!(
                "Network id={} doesn't belong to zone {}",
                elsewhere.id, w.zone.id
            )
        )
    );
    let destroyed = w
        .network("192.168.21.0/24", |n| n.state = NetworkState::Destroy)
        .await;
    let (code, text) =
        refusal(nics::allocate(&w.store, &named(vec![destroyed.id.to_string()])).await);
    assert_eq!(code, 431);
    assert!(text.contains("entity does not exist"), "{text}");
    let shut = w
        .network("192.168.22.0/24", |n| n.state = NetworkState::Shutdown)
        .await;
    let (code, text) = refusal(nics::allocate(&w.store, &named(vec![shut.id.to_string()])).await);
    assert_eq!(code, 431);
    assert!(text.contains("is in state Shutdown"), "{text}");
    assert_eq!(w.count::<Nic>().await, 0);
}

#[tokio::test]
async fn a_refused_second_nic_gives_back_the_first() {
    let w = world().await;
    let first = w.network("192.168.10.0/24", |_| {}).await;
    // A /30 has one address besides its gateway: take it.
    let full = w.network("192.168.30.0/30", |_| {}).await;
    nics::allocate(
        &w.store,
        &AllocateNics {
            network_ids: vec![full.id.to_string()],
            ..w.input(Id::new())
        },
    )
    .await
    .unwrap();
    let (code, text) = refusal(
        nics::allocate(
            &w.store,
            &AllocateNics {
                network_ids: vec![first.id.to_string(), full.id.to_string()],
                ..w.input(Id::new())
            },
        )
        .await,
    );
    assert_eq!(code, 533);
    assert!(
        text.starts_with("Unable to acquire Guest IP address for network Network {"),
        "{text}"
    );
    assert!(text.contains(&full.id.to_string()), "{text}");
    // Only the earlier VM's NIC is left.
    assert_eq!(w.count::<Nic>().await, 1);
    assert_eq!(w.count::<IpAddress>().await, 1);
}

#[tokio::test]
async fn release_frees_the_addresses_and_is_harmless_twice() {
    let w = world().await;
    let first = w.network("192.168.10.0/24", |_| {}).await;
    let vm = Id::<Vm>::new();
    let input = AllocateNics {
        network_ids: vec![first.id.to_string(), first.id.to_string()],
        ..w.input(vm)
    };
    let out = nics::allocate(&w.store, &input).await.unwrap();
    assert_eq!(w.count::<IpAddress>().await, 2);
    let release = ReleaseNics {
        vm_id: vm.to_string(),
        count: 2,
    };
    nics::release(&w.store, &release).await.unwrap();
    assert_eq!(w.count::<IpAddress>().await, 0);
    assert_eq!(w.count::<Nic>().await, 0);
    nics::release(&w.store, &release).await.unwrap();
    // The addresses are free again: the next VM takes the first of them.
    let again = nics::allocate(
        &w.store,
        &AllocateNics {
            network_ids: vec![first.id.to_string()],
            ..w.input(Id::new())
        },
    )
    .await
    .unwrap();
    assert_eq!(again.nics[0].ip_address, out.nics[0].ip_address);
}

#[tokio::test]
async fn release_with_nothing_allocated_succeeds() {
    let w = world().await;
    for count in [0, 1, 3] {
        nics::release(
            &w.store,
            &ReleaseNics {
                vm_id: Id::<Vm>::new().to_string(),
                count,
            },
        )
        .await
        .unwrap();
    }
    // count 0 still releases NIC 0 (at least one NIC is always made).
    let vm = Id::<Vm>::new();
    nics::allocate(&w.store, &w.input(vm)).await.unwrap();
    nics::release(
        &w.store,
        &ReleaseNics {
            vm_id: vm.to_string(),
            count: 0,
        },
    )
    .await
    .unwrap();
    assert_eq!(w.count::<Nic>().await, 0);
    let (code, _) = refusal(
        nics::release(
            &w.store,
            &ReleaseNics {
                vm_id: vm.to_string(),
                count: nics::MAX_NICS + 1,
            },
        )
        .await,
    );
    assert_eq!(code, 530);
}

#[tokio::test]
async fn an_exhausted_vlan_range_fails_533_and_leaves_no_network_or_claim() {
    let w = world_with(|z| z.vlan_range = Some("100-100".into())).await;
    // Bob takes the only VLAN.
    let bob = w.other_account("bob").await;
    nics::allocate(
        &w.store,
        &AllocateNics {
            account_id: bob.id.to_string(),
            ..w.input(Id::new())
        },
    )
    .await
    .unwrap();
    let (code, text) = refusal(nics::allocate(&w.store, &w.input(Id::new())).await);
    let alice_net = default_network::network_id(w.account.id, w.zone.id);
    assert_eq!(
        (code, text),
        (
            533,
            format!(
                "Unable to allocate vnet as a part of network Network {{\"id\": \"{alice_net}\", \"name\": \"alice-network\", \"uuid\": \"{alice_net}\", \"networkofferingid\": \"{}\"}} implement ",
                w.offering.id
            )
        )
    );
    assert!(w.store.get(alice_net).await.unwrap().is_none());
    assert_eq!(w.count::<Network>().await, 1);
    assert_eq!(w.count::<VlanClaim>().await, 1);
    assert_eq!(w.count::<Nic>().await, 1);
}

#[tokio::test]
async fn a_zone_without_a_vlan_range_fails_533() {
    let w = world_with(|z| z.vlan_range = None).await;
    let (code, text) = refusal(nics::allocate(&w.store, &w.input(Id::new())).await);
    assert_eq!(code, 533);
    assert!(text.starts_with("Unable to allocate vnet"), "{text}");
    assert_eq!(w.count::<Network>().await, 0);
}

#[tokio::test]
async fn the_default_network_follows_cloudstacks_rules() {
    // No default isolated offering.
    let w = world().await;
    let mut off = w.store.get(w.offering.id).await.unwrap().unwrap();
    off.value.state = AllocationState::Disabled;
    w.store.update(&off).await.unwrap();
    let (code, text) = refusal(nics::allocate(&w.store, &w.input(Id::new())).await);
    assert_eq!(
        (code, text),
        (
            431,
            format!(
                "Required network offering id={} is not in Enabled",
                w.offering.id
            )
        )
    );
    let off = w.store.get(w.offering.id).await.unwrap().unwrap();
    w.store.delete(&off).await.unwrap();
    let (code, text) = refusal(nics::allocate(&w.store, &w.input(Id::new())).await);
    assert_eq!(code, 431);
    assert!(text.starts_with("Unable to find network offering with availability=Required"));

    // The account's one isolated network, made elsewhere, is used.
    let w = world().await;
    let own = w.network("192.168.40.0/24", |_| {}).await;
    let out = nics::allocate(&w.store, &w.input(Id::new())).await.unwrap();
    assert_eq!(out.nics[0].network_id, own.id.to_string());
    assert_eq!(w.count::<VlanClaim>().await, 0);
    // Two of them: the deploy must name one.
    w.network("192.168.41.0/24", |_| {}).await;
    let (code, text) = refusal(nics::allocate(&w.store, &w.input(Id::new())).await);
    assert_eq!(code, 431);
    assert!(
        text.starts_with("More than 1 default Isolated networks are found for account Account [{\"accountName\":\"alice\""),
        "{text}"
    );
    assert!(text.ends_with("; please specify networkIds"), "{text}");

    // The zone's guest CIDR, or 10.1.1.0/24 when it has none.
    let w = world_with(|z| z.guest_cidr_address = Some("10.20.0.0/16".into())).await;
    let out = nics::allocate(&w.store, &w.input(Id::new())).await.unwrap();
    assert_eq!(
        (
            out.nics[0].ip_address.as_str(),
            out.nics[0].netmask.as_str()
        ),
        ("10.20.0.2", "255.255.0.0")
    );
    let w = world_with(|z| z.guest_cidr_address = None).await;
    let out = nics::allocate(&w.store, &w.input(Id::new())).await.unwrap();
    assert_eq!(out.nics[0].gateway, "10.1.1.1");
}

fn step<T>(undo: bool, input: T) -> Step<T> {
    Step {
        saga: StepRef {
            saga_id: "7d0c1a52-3f7e-4c11-9b1e-2f0a6c3d9e01".into(),
            step: "allocate-nics".into(),
            undo,
        },
        input,
    }
}

async fn call<T: serde::Serialize>(w: &World, message_type: &str, body: &T) -> StepResult {
    let env = stratus_messaging::Envelope::new(message_type, body).with_job_id("job-1");
    let effects = handlers(w.store.clone()).call(env).await.unwrap();
    assert_eq!(effects.len(), 1);
    serde_json::from_slice(&effects[0].body).unwrap()
}

#[tokio::test]
async fn the_handlers_answer_with_network_step_results() {
    let w = world().await;
    let vm = Id::<Vm>::new();
    let result = call(&w, network::ALLOCATE_NICS, &step(false, w.input(vm))).await;
    let Outcome::Done { output } = result.outcome else {
        panic!("{:?}", result.outcome)
    };
    let nics: NicsAllocated = serde_json::from_value(output).unwrap();
    assert_eq!(nics.nics[0].ip_address, "10.1.1.2");
    assert_eq!(result.saga.step, "allocate-nics");

    let bad = AllocateNics {
        ip_address: Some("nope".into()),
        ..w.input(Id::new())
    };
    let result = call(&w, network::ALLOCATE_NICS, &step(false, bad)).await;
    assert_eq!(
        result.outcome,
        Outcome::Failed {
            code: 431,
            text: "Invalid specified IPv4 address nope".into()
        }
    );
    let result = call(&w, network::ALLOCATE_NICS, &step(true, w.input(vm))).await;
    assert!(matches!(result.outcome, Outcome::Failed { code: 530, .. }));

    let release = ReleaseNics {
        vm_id: vm.to_string(),
        count: 1,
    };
    let result = call(&w, network::RELEASE_NICS, &step(true, release)).await;
    assert_eq!(
        result.outcome,
        Outcome::Done {
            output: serde_json::json!({})
        }
    );
    assert_eq!(w.count::<Nic>().await, 0);
}

#[tokio::test]
async fn store_failures_that_may_pass_retry_and_bad_data_fails_530() {
    assert!(matches!(
        store_error(stratus_store::StoreError::Backend("down".into())),
        StepError::Transient(_)
    ));
    assert!(matches!(
        store_error(stratus_store::StoreError::Invalid("bad cidr".into())),
        StepError::Failed { code: 530, .. }
    ));
    // A named network with a malformed CIDR.
    let w = world().await;
    let broken = w
        .network("192.168.50.0/24", |n| n.cidr = "192.168.50.0".into())
        .await;
    let (code, _) = refusal(
        nics::allocate(
            &w.store,
            &AllocateNics {
                network_ids: vec![broken.id.to_string()],
                ..w.input(Id::new())
            },
        )
        .await,
    );
    assert_eq!(code, 530);
}

#[tokio::test]
async fn a_repeated_step_keeps_its_nics_even_when_their_network_changed_since() {
    let w = world().await;
    let net = w.network("192.168.10.0/24", |_| {}).await;
    let input = AllocateNics {
        network_ids: vec![net.id.to_string()],
        ..w.input(Id::new())
    };
    let first = nics::allocate(&w.store, &input).await.unwrap();
    // The first run may have succeeded and the saga moved on: a redelivery
    // must not refuse, nor release, what it made.
    let mut shut = w.store.get(net.id).await.unwrap().unwrap();
    shut.value.state = NetworkState::Shutdown;
    w.store.update(&shut).await.unwrap();
    let again = nics::allocate(&w.store, &input).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(w.count::<Nic>().await, 1);
}

#[test]
fn the_sample_bodies_decode_as_the_steps() {
    let allocate: Step<AllocateNics> = serde_json::from_str(include_str!(
        "../../../events/rmq/bodies/network.allocate-nics.json"
    ))
    .unwrap();
    assert!(!allocate.saga.undo);
    assert_eq!(allocate.input.ip_address.as_deref(), Some("10.1.1.20"));
    let release: Step<ReleaseNics> = serde_json::from_str(include_str!(
        "../../../events/rmq/bodies/network.release-nics.json"
    ))
    .unwrap();
    assert!(release.saga.undo);
    assert_eq!(release.input.vm_id, allocate.input.vm_id);
}
