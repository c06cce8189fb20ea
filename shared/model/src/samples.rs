//! Sample objects of every type, for tests (the store's conformance suite
//! creates one of each kind). Not for production use.

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use crate::*;

/// Ids the samples refer to, so that their keys are realistic.
#[derive(Debug, Clone, Default)]
pub struct Fixture {
    pub domain: Id<Domain>,
    pub account: Id<Account>,
    pub user: Id<User>,
    pub zone: Id<Zone>,
    pub pod: Id<Pod>,
    pub cluster: Id<Cluster>,
    pub host: Id<Host>,
    pub network: Id<Network>,
    pub template: Id<Template>,
    pub offering: Id<ServiceOffering>,
    pub network_offering: Id<NetworkOffering>,
}

/// A fresh sample object (a new id each time).
pub trait Sample: Object {
    fn sample(f: &Fixture) -> Self;
}

impl Sample for Domain {
    fn sample(f: &Fixture) -> Self {
        Domain {
            id: Id::new(),
            name: "engineering".into(),
            parent_id: Some(f.domain),
            path: "ROOT/engineering".into(),
            created: Utc::now(),
        }
    }
}
impl Sample for Account {
    fn sample(f: &Fixture) -> Self {
        Account {
            id: Id::new(),
            name: "alice".into(),
            domain_id: f.domain,
            account_type: AccountType::User,
            state: AccountState::Enabled,
            created: Utc::now(),
        }
    }
}
impl Sample for User {
    fn sample(f: &Fixture) -> Self {
        User {
            id: Id::new(),
            account_id: f.account,
            username: "alice".into(),
            password_hash: "c2FsdA==:aGFzaA==".into(),
            firstname: "Alice".into(),
            lastname: "Liddell".into(),
            email: "alice@example.org".into(),
            state: AccountState::Enabled,
            created: Utc::now(),
            login_attempts: 0,
        }
    }
}
impl Sample for ApiKey {
    fn sample(f: &Fixture) -> Self {
        let api_key = format!("key-{}", Uuid::new_v4().simple());
        ApiKey {
            id: ApiKey::id_for(&api_key),
            api_key,
            secret_key: Sealed::from_stored("v1:c2FtcGxl"),
            user_id: f.user,
            account_id: f.account,
            created: Utc::now(),
        }
    }
}
impl Sample for Session {
    fn sample(f: &Fixture) -> Self {
        Session {
            id: Session::id_for(&Uuid::new_v4().to_string()),
            user_id: f.user,
            account_id: f.account,
            session_key: "session-key".into(),
            created: Utc::now(),
            last_access: Utc::now(),
        }
    }
}
impl Sample for Zone {
    fn sample(_f: &Fixture) -> Self {
        Zone {
            id: Id::new(),
            name: "zone-1".into(),
            network_type: NetworkType::Advanced,
            allocation_state: AllocationState::Enabled,
            dns1: "8.8.8.8".into(),
            internal_dns1: "10.0.0.2".into(),
            guest_cidr_address: Some("10.1.0.0/16".into()),
            security_groups_enabled: false,
            local_storage_enabled: false,
            vlan_range: Some("100-200".into()),
            created: Utc::now(),
        }
    }
}
impl Sample for Pod {
    fn sample(f: &Fixture) -> Self {
        Pod {
            id: Id::new(),
            name: "pod-1".into(),
            zone_id: f.zone,
            gateway: "172.16.0.1".into(),
            netmask: "255.255.255.0".into(),
            start_ip: "172.16.0.10".into(),
            end_ip: "172.16.0.200".into(),
            allocation_state: AllocationState::Enabled,
        }
    }
}
impl Sample for Cluster {
    fn sample(f: &Fixture) -> Self {
        Cluster {
            id: Id::new(),
            name: "cluster-1".into(),
            zone_id: f.zone,
            pod_id: f.pod,
            hypervisor: "Simulator".into(),
            cluster_type: "CloudManaged".into(),
            allocation_state: AllocationState::Enabled,
            managed_state: ManagedState::Managed,
            cpu_overprovisioning: None,
            memory_overprovisioning: Some(1.5),
        }
    }
}
impl Sample for Host {
    fn sample(f: &Fixture) -> Self {
        Host {
            id: Id::new(),
            name: "host-1".into(),
            zone_id: f.zone,
            pod_id: f.pod,
            cluster_id: f.cluster,
            hypervisor: "Simulator".into(),
            host_type: "Routing".into(),
            state: HostState::Disconnected,
            resource_state: ResourceState::Enabled,
            ip_address: "172.16.0.11".into(),
            cpu_number: 16,
            cpu_speed: 2000,
            memory_total: 64 << 30,
            cpu_allocated: 0,
            memory_allocated: 0,
            last_pinged: None,
            host_tags: vec![],
            created: Utc::now(),
        }
    }
}
impl Sample for StoragePool {
    fn sample(f: &Fixture) -> Self {
        StoragePool {
            id: Id::new(),
            name: "primary-1".into(),
            zone_id: f.zone,
            pod_id: Some(f.pod),
            cluster_id: Some(f.cluster),
            scope: StorageScope::Cluster,
            pool_type: "NetworkFilesystem".into(),
            url: "nfs://10.0.0.5/export/primary".into(),
            state: StoragePoolState::Up,
            disk_size_total: 10 << 40,
            disk_size_allocated: 0,
        }
    }
}
impl Sample for ServiceOffering {
    fn sample(_f: &Fixture) -> Self {
        ServiceOffering {
            id: Id::new(),
            name: "Small Instance".into(),
            display_text: "1 vCPU, 1 GB".into(),
            cpu_number: 1,
            cpu_speed: 500,
            memory: 1024,
            offer_ha: false,
            storage_type: StorageType::Shared,
            host_tags: None,
            created: Utc::now(),
        }
    }
}
impl Sample for DiskOffering {
    fn sample(_f: &Fixture) -> Self {
        DiskOffering {
            id: Id::new(),
            name: "Small".into(),
            display_text: "5 GB".into(),
            disk_size: 5,
            is_customized: false,
            storage_type: StorageType::Shared,
            tags: None,
            created: Utc::now(),
        }
    }
}
impl Sample for Template {
    fn sample(f: &Fixture) -> Self {
        Template {
            id: Id::new(),
            name: "tiny-linux".into(),
            display_text: "Tiny Linux".into(),
            account_id: f.account,
            zone_id: Some(f.zone),
            os_type_name: "Other Linux (64-bit)".into(),
            format: "QCOW2".into(),
            hypervisor: "Simulator".into(),
            is_public: true,
            is_featured: true,
            is_ready: true,
            password_enabled: false,
            size: 50 << 20,
            created: Utc::now(),
        }
    }
}
impl Sample for NetworkOffering {
    fn sample(_f: &Fixture) -> Self {
        NetworkOffering {
            id: Id::new(),
            name: "DefaultIsolatedNetworkOfferingWithSourceNatService".into(),
            display_text: "Isolated with source NAT".into(),
            guest_ip_type: GuestIpType::Isolated,
            state: AllocationState::Enabled,
            is_default: true,
            specify_vlan: false,
            services: vec!["Dhcp".into(), "Dns".into(), "SourceNat".into()],
        }
    }
}
impl Sample for Network {
    fn sample(f: &Fixture) -> Self {
        Network {
            id: Id::new(),
            name: "net-1".into(),
            display_text: "net-1".into(),
            account_id: f.account,
            zone_id: f.zone,
            network_offering_id: f.network_offering,
            state: NetworkState::Allocated,
            cidr: "10.1.1.0/24".into(),
            gateway: "10.1.1.1".into(),
            netmask: "255.255.255.0".into(),
            vlan: None,
            created: Utc::now(),
        }
    }
}
impl Sample for IpAddress {
    fn sample(f: &Fixture) -> Self {
        let address = format!("10.1.{}.{}", rand_octet(), rand_octet());
        IpAddress {
            id: IpAddress::id_for(f.network, &address),
            address,
            network_id: f.network,
            zone_id: f.zone,
            account_id: f.account,
            purpose: IpPurpose::Guest,
            state: IpState::Allocated,
            nic_id: None,
            is_source_nat: false,
            allocated: Utc::now(),
        }
    }
}
impl Sample for Vm {
    fn sample(f: &Fixture) -> Self {
        Vm {
            id: Id::new(),
            name: "vm-1".into(),
            display_name: "vm-1".into(),
            account_id: f.account,
            domain_id: f.domain,
            zone_id: f.zone,
            host_id: Some(f.host),
            last_host_id: None,
            template_id: f.template,
            service_offering_id: f.offering,
            state: VmState::Running,
            power_state: PowerState::PowerOn,
            ha_enabled: false,
            cpu_number: 1,
            cpu_speed: 500,
            memory: 1024,
            user_data: None,
            ssh_key_pairs: vec![],
            created: Utc::now(),
            zone_name: "Sandbox-simulator".into(),
            host_name: Some("SimHost-c0-h0".into()),
            template_name: "CentOS 5.6 (64-bit) no GUI (Simulator)".into(),
            service_offering_name: "Small Instance".into(),
            nics: vec![],
            state_changed: None,
            saga_id: None,
        }
    }
}
impl Sample for Nic {
    fn sample(f: &Fixture) -> Self {
        Nic {
            id: Id::new(),
            vm_id: Id::new(),
            network_id: f.network,
            account_id: f.account,
            ip_address: "10.1.1.10".into(),
            netmask: "255.255.255.0".into(),
            gateway: "10.1.1.1".into(),
            mac_address: "02:00:0a:01:01:0a".into(),
            is_default: true,
            device_id: 0,
        }
    }
}
impl Sample for Volume {
    fn sample(f: &Fixture) -> Self {
        Volume {
            id: Id::new(),
            name: "ROOT-1".into(),
            account_id: f.account,
            zone_id: f.zone,
            vm_id: None,
            pool_id: None,
            disk_offering_id: None,
            volume_type: VolumeType::Root,
            state: VolumeState::Allocated,
            size: 5 << 30,
            device_id: Some(0),
            created: Utc::now(),
        }
    }
}
impl Sample for Snapshot {
    fn sample(f: &Fixture) -> Self {
        Snapshot {
            id: Id::new(),
            name: "snap-1".into(),
            volume_id: Id::new(),
            account_id: f.account,
            zone_id: f.zone,
            state: SnapshotState::BackedUp,
            snapshot_type: "MANUAL".into(),
            created: Utc::now(),
        }
    }
}
impl Sample for SshKeyPair {
    fn sample(f: &Fixture) -> Self {
        SshKeyPair {
            id: Id::new(),
            name: "laptop".into(),
            account_id: f.account,
            fingerprint: "3a:5c:0e:77:8b:9f:aa:01:02:03:04:05:06:07:08:09".into(),
            public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdy alice@laptop".into(),
            created: Utc::now(),
        }
    }
}
impl Sample for SecurityGroup {
    fn sample(f: &Fixture) -> Self {
        SecurityGroup {
            id: Id::new(),
            name: "web".into(),
            description: "web servers".into(),
            account_id: f.account,
            ingress: vec![SecurityRule {
                rule_id: Uuid::new_v4(),
                protocol: "tcp".into(),
                start_port: Some(443),
                end_port: Some(443),
                icmp_type: None,
                icmp_code: None,
                cidr: "0.0.0.0/0".into(),
            }],
            egress: vec![],
        }
    }
}
impl Sample for Tag {
    fn sample(f: &Fixture) -> Self {
        Tag {
            id: Id::new(),
            key: "env".into(),
            value: "prod".into(),
            resource_type: "UserVm".into(),
            resource_id: Uuid::new_v4(),
            account_id: f.account,
        }
    }
}
impl Sample for AsyncJob {
    fn sample(f: &Fixture) -> Self {
        AsyncJob {
            id: Id::new(),
            account_id: f.account,
            user_id: f.user,
            command: "org.apache.cloudstack.api.command.admin.account.DisableAccountCmd".into(),
            instance_type: Some("Account".into()),
            instance_id: Some(f.account.uuid()),
            status: JobStatus::Pending,
            result_code: 0,
            result_type: None,
            result: None,
            created: Utc::now(),
            completed: None,
        }
    }
}
impl Sample for Event {
    fn sample(f: &Fixture) -> Self {
        Event {
            id: Id::new(),
            event_type: "VM.CREATE".into(),
            level: EventLevel::Info,
            state: EventState::Completed,
            description: "Successfully completed deploying Vm".into(),
            account_id: f.account,
            resource_type: Some("VirtualMachine".into()),
            resource_id: Some(Uuid::new_v4()),
            created: Utc::now(),
        }
    }
}
impl Sample for Alert {
    fn sample(f: &Fixture) -> Self {
        Alert {
            id: Id::new(),
            alert_type: 7,
            name: "ALERT.HOST".into(),
            subject: "Host is down, name: SimHost-c0-h0".into(),
            zone_id: f.zone,
            pod_id: None,
            sent: Utc::now(),
        }
    }
}
impl Sample for Saga {
    fn sample(_f: &Fixture) -> Self {
        Saga {
            id: Id::new(),
            kind: "deploy-vm".into(),
            parameters: json!({"zoneid": "z"}),
            status: SagaStatus::Running,
            step_log: vec![json!({"step": "reserve-capacity", "done": true})],
            job_id: None,
            created: Utc::now(),
            steps: vec![SagaStep {
                name: "reserve-capacity".into(),
                state: StepState::Done,
                started: Some(Utc::now()),
                ended: Some(Utc::now()),
                undo_started: None,
                undo_ended: None,
                deadline: None,
                output: Some(json!({"hostid": "h"})),
                error: None,
            }],
            cursor: 1,
            error: None,
            ended: None,
        }
    }
}

impl Sample for VlanClaim {
    fn sample(f: &Fixture) -> Self {
        let vlan = 100 + u32::from(rand_octet());
        VlanClaim {
            id: VlanClaim::id_for(f.zone, vlan),
            zone_id: f.zone,
            vlan,
            network_id: f.network,
            created: Utc::now(),
        }
    }
}

impl Sample for OutboxMessage {
    fn sample(_f: &Fixture) -> Self {
        OutboxMessage {
            id: Id::new(),
            exchange: "stratus.commands".into(),
            routing_key: "orchestrator.disable-account".into(),
            message_type: "orchestrator.disable-account".into(),
            correlation_id: Uuid::new_v4().to_string(),
            causation_id: None,
            job_id: Some(Uuid::new_v4().to_string()),
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            attempt: 1,
            created: Utc::now(),
            body: "{}".into(),
        }
    }
}
impl Sample for Handled {
    fn sample(_f: &Fixture) -> Self {
        let message_id = Uuid::new_v4();
        Handled {
            id: Handled::id_for("orchestrator", message_id),
            consumer: "orchestrator".into(),
            message_id,
            at: Utc::now(),
        }
    }
}
impl Sample for Reservation {
    fn sample(f: &Fixture) -> Self {
        let key = format!("deploy/{}", Uuid::new_v4());
        Reservation {
            id: Reservation::id_for(&key),
            key,
            host_id: f.host,
            cpu: 500,
            memory: 1 << 30,
            created: Utc::now(),
        }
    }
}

fn rand_octet() -> u8 {
    (Uuid::new_v4().as_bytes()[0] % 250) + 2
}
