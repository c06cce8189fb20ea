//! The object types. Field names follow CloudStack's response fields where
//! they exist; sizes are in the units CloudStack reports (memory in MB, disks
//! in bytes, CPU speed in MHz).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{Id, Keys, Object};
pub use stratus_secrets::{DataKey, Sealed, Secret, SecretBox, SecretError};

macro_rules! object {
    ($t:ty, $kind:literal, |$s:ident| $keys:expr) => {
        impl Object for $t {
            const KIND: &'static str = $kind;
            fn id(&self) -> Uuid {
                self.id.uuid()
            }
            fn keys(&self) -> Keys {
                let $s = self;
                $keys
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllocationState {
    Enabled,
    Disabled,
}

// ---- identity ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Domain {
    pub id: Id<Domain>,
    pub name: String,
    pub parent_id: Option<Id<Domain>>,
    /// `ROOT/child/grandchild`, as CloudStack's `path`.
    pub path: String,
    pub created: DateTime<Utc>,
}
object!(Domain, "domain", |_d| Keys::default());

impl Domain {
    pub const NAMESPACE: Uuid = Uuid::from_u128(0x0d0e_11a3_57c2_4f90_a6b3_0000_0000_d0a1);
    /// A domain's id follows from its path (`ROOT`, `ROOT/child`), so one
    /// path names one domain even when two creations race.
    pub fn id_for(path: &str) -> Id<Domain> {
        Id::derived(Self::NAMESPACE, &path.to_lowercase())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountType {
    /// CloudStack's accounttype 0.
    User,
    /// 1: the root admin.
    Admin,
    /// 2.
    DomainAdmin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountState {
    Enabled,
    Disabled,
    Locked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: Id<Account>,
    pub name: String,
    pub domain_id: Id<Domain>,
    pub account_type: AccountType,
    pub state: AccountState,
    pub created: DateTime<Utc>,
}
object!(Account, "account", |a| Keys::default()
    .account(a.id)
    .state(&a.state));

impl Account {
    pub const NAMESPACE: Uuid = Uuid::from_u128(0xacc0_0a7e_4c1d_4b2f_9e33_0000_0000_acc1);
    /// An account's id follows from (domain, name): names are unique per domain.
    pub fn id_for(domain: Id<Domain>, name: &str) -> Id<Account> {
        Id::derived(
            Self::NAMESPACE,
            &format!("{domain}/{}", name.to_lowercase()),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Id<User>,
    pub account_id: Id<Account>,
    pub username: String,
    /// PBKDF2-SHA256, as CloudStack's default authenticator stores it.
    pub password_hash: String,
    pub firstname: String,
    pub lastname: String,
    pub email: String,
    pub state: AccountState,
    pub created: DateTime<Utc>,
    /// Failed logins since the last success (CloudStack's `login_attempts`):
    /// at `incorrect.login.attempts.allowed` the user is disabled.
    #[serde(default)]
    pub login_attempts: u32,
}
object!(User, "user", |u| Keys::default()
    .account(u.account_id)
    .state(&u.state));

impl User {
    pub const NAMESPACE: Uuid = Uuid::from_u128(0x05e0_0b1a_7d2c_4e8f_b4a6_0000_0000_05e1);
    /// A user's id follows from (domain, username): usernames are unique per domain.
    pub fn id_for(domain: Id<Domain>, username: &str) -> Id<User> {
        Id::derived(Self::NAMESPACE, &format!("{domain}/{username}"))
    }
}

/// An API key pair. Its id is derived from the API key, so a signed request's
/// key is found with one read by id. The secret key is kept sealed
/// (AES-256-GCM under the platform's secret key, bound to this row's id and
/// user, see [`ApiKey::seal_context`]), as CloudStack encrypts it with its
/// database key: the store never holds it in the clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: Id<ApiKey>,
    pub api_key: String,
    pub secret_key: Sealed,
    pub user_id: Id<User>,
    pub account_id: Id<Account>,
    pub created: DateTime<Utc>,
}
object!(ApiKey, "apikey", |k| Keys::default().account(k.account_id));

impl ApiKey {
    pub const NAMESPACE: Uuid = Uuid::from_u128(0x5a1e_0c3d_7b11_4e4f_8d2a_0000_0000_0a91);
    pub fn id_for(api_key: &str) -> Id<ApiKey> {
        Id::derived(Self::NAMESPACE, api_key)
    }

    /// The associated data a secret key is sealed with: its row and its
    /// user, so a sealed value moved to another row (or a row re-pointed at
    /// another user) does not open.
    pub fn seal_context(id: Id<ApiKey>, user_id: Id<User>) -> String {
        format!("apikey/{id}/user/{user_id}")
    }

    /// A new key pair for `user`: API key and secret each 64 random bytes,
    /// base64url, as CloudStack makes them; the secret sealed by `secrets`
    /// and handed back in the clear once, for the answer to its owner.
    pub fn generate(
        user_id: Id<User>,
        account_id: Id<Account>,
        created: DateTime<Utc>,
        secrets: &SecretBox,
    ) -> (ApiKey, Secret) {
        use base64::Engine;
        let new =
            || base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 64]>());
        let secret = Secret::new(new());
        let key = Self::with_secret(new(), &secret, user_id, account_id, created, secrets);
        (key, secret)
    }

    /// A key pair with the given API key and secret, the secret sealed.
    pub fn with_secret(
        api_key: String,
        secret: &Secret,
        user_id: Id<User>,
        account_id: Id<Account>,
        created: DateTime<Utc>,
        secrets: &SecretBox,
    ) -> ApiKey {
        let id = Self::id_for(&api_key);
        ApiKey {
            id,
            api_key,
            secret_key: secrets.seal(secret.expose(), &Self::seal_context(id, user_id)),
            user_id,
            account_id,
            created,
        }
    }

    /// The secret key in the clear, opened for this row.
    pub fn secret(&self, secrets: &SecretBox) -> Result<Secret, SecretError> {
        secrets.open(&self.secret_key, &Self::seal_context(self.id, self.user_id))
    }

    /// Seals a plain-text secret kept by a store from before secrets were
    /// sealed; `None` when it is sealed already.
    pub fn sealed_from_plain(&self, secrets: &SecretBox) -> Option<ApiKey> {
        if self.secret_key.is_sealed() {
            return None;
        }
        let plain = Secret::new(self.secret_key.as_stored().to_string());
        Some(ApiKey {
            secret_key: secrets.seal(plain.expose(), &Self::seal_context(self.id, self.user_id)),
            ..self.clone()
        })
    }
}

/// A login session (`login`/`logout`). Its id follows from the `JSESSIONID`
/// cookie value, so a request finds its session with one read; the
/// `sessionkey` is checked against it in constant time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: Id<Session>,
    pub user_id: Id<User>,
    pub account_id: Id<Account>,
    pub session_key: String,
    pub created: DateTime<Utc>,
    /// Last use, refreshed at most once a minute; the session ends after `session.timeout` seconds without use.
    pub last_access: DateTime<Utc>,
}
object!(Session, "session", |s| Keys::default()
    .account(s.account_id));

impl Session {
    pub const NAMESPACE: Uuid = Uuid::from_u128(0x5e55_1011_2a3b_4c5d_8e9f_0000_0000_5e55);
    pub fn id_for(jsessionid: &str) -> Id<Session> {
        Id::derived(Self::NAMESPACE, jsessionid)
    }
}

// ---- fabric ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkType {
    Basic,
    Advanced,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    pub id: Id<Zone>,
    pub name: String,
    pub network_type: NetworkType,
    pub allocation_state: AllocationState,
    pub dns1: String,
    pub internal_dns1: String,
    pub guest_cidr_address: Option<String>,
    pub security_groups_enabled: bool,
    pub local_storage_enabled: bool,
    /// The guest VLAN range isolated networks take their VLAN from, e.g.
    /// `100-200` (CloudStack's zone `vlan`); None: no VLANs to give out.
    #[serde(default)]
    pub vlan_range: Option<String>,
    pub created: DateTime<Utc>,
}
object!(Zone, "zone", |z| Keys::default()
    .zone(z.id)
    .state(&z.allocation_state));

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    pub id: Id<Pod>,
    pub name: String,
    pub zone_id: Id<Zone>,
    pub gateway: String,
    pub netmask: String,
    pub start_ip: String,
    pub end_ip: String,
    pub allocation_state: AllocationState,
}
object!(Pod, "pod", |p| Keys::default()
    .zone(p.zone_id)
    .state(&p.allocation_state));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManagedState {
    Managed,
    PrepareUnmanaged,
    Unmanaged,
    PrepareUnmanagedError,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: Id<Cluster>,
    pub name: String,
    pub zone_id: Id<Zone>,
    pub pod_id: Id<Pod>,
    pub hypervisor: String,
    /// `CloudManaged` or `ExternalManaged`.
    pub cluster_type: String,
    pub allocation_state: AllocationState,
    pub managed_state: ManagedState,
    /// Cluster-scoped overrides of the overprovisioning factors, where set.
    pub cpu_overprovisioning: Option<f64>,
    pub memory_overprovisioning: Option<f64>,
}
object!(Cluster, "cluster", |c| Keys::default()
    .zone(c.zone_id)
    .state(&c.allocation_state));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostState {
    Creating,
    Connecting,
    Up,
    Down,
    Disconnected,
    Alert,
    Removed,
    Error,
    Rebalancing,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResourceState {
    Creating,
    Enabled,
    Disabled,
    PrepareForMaintenance,
    ErrorInPrepareForMaintenance,
    Maintenance,
    ErrorInMaintenance,
    Error,
    Degraded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub id: Id<Host>,
    pub name: String,
    pub zone_id: Id<Zone>,
    pub pod_id: Id<Pod>,
    pub cluster_id: Id<Cluster>,
    pub hypervisor: String,
    /// `Routing` for hypervisor hosts.
    pub host_type: String,
    pub state: HostState,
    pub resource_state: ResourceState,
    pub ip_address: String,
    pub cpu_number: u32,
    pub cpu_speed: u32,
    /// Bytes, as CloudStack's `memorytotal`.
    pub memory_total: u64,
    /// MHz reserved by placed VMs.
    pub cpu_allocated: u64,
    /// Bytes reserved by placed VMs.
    pub memory_allocated: u64,
    pub last_pinged: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    /// Host tags (CloudStack's `hosttags`): a service offering with host
    /// tags places only on hosts that have them all.
    #[serde(default)]
    pub host_tags: Vec<String>,
}
object!(Host, "host", |h| Keys::default()
    .zone(h.zone_id)
    .host(Some(h.id))
    .state(&h.state));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoragePoolState {
    Initial,
    Initialized,
    Creating,
    Attaching,
    Up,
    PrepareForMaintenance,
    ErrorInMaintenance,
    CancelMaintenance,
    Maintenance,
    Disabled,
    Removed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StorageScope {
    Host,
    Cluster,
    Zone,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoragePool {
    pub id: Id<StoragePool>,
    pub name: String,
    pub zone_id: Id<Zone>,
    pub pod_id: Option<Id<Pod>>,
    pub cluster_id: Option<Id<Cluster>>,
    pub scope: StorageScope,
    /// e.g. `NetworkFilesystem`, `Filesystem`.
    pub pool_type: String,
    pub url: String,
    pub state: StoragePoolState,
    pub disk_size_total: u64,
    pub disk_size_allocated: u64,
}
object!(StoragePool, "storagepool", |p| Keys::default()
    .zone(p.zone_id)
    .state(&p.state));

// ---- offerings and templates ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    Shared,
    Local,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceOffering {
    pub id: Id<ServiceOffering>,
    pub name: String,
    pub display_text: String,
    pub cpu_number: u32,
    pub cpu_speed: u32,
    /// MB.
    pub memory: u32,
    pub offer_ha: bool,
    pub storage_type: StorageType,
    pub host_tags: Option<String>,
    pub created: DateTime<Utc>,
}
object!(ServiceOffering, "serviceoffering", |_o| Keys::default());

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskOffering {
    pub id: Id<DiskOffering>,
    pub name: String,
    pub display_text: String,
    /// GB; 0 when customised.
    pub disk_size: u64,
    pub is_customized: bool,
    pub storage_type: StorageType,
    pub tags: Option<String>,
    pub created: DateTime<Utc>,
}
object!(DiskOffering, "diskoffering", |_o| Keys::default());

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub id: Id<Template>,
    pub name: String,
    pub display_text: String,
    pub account_id: Id<Account>,
    /// None: available in every zone.
    pub zone_id: Option<Id<Zone>>,
    pub os_type_name: String,
    /// e.g. `QCOW2`.
    pub format: String,
    pub hypervisor: String,
    pub is_public: bool,
    pub is_featured: bool,
    pub is_ready: bool,
    pub password_enabled: bool,
    /// Bytes.
    pub size: u64,
    pub created: DateTime<Utc>,
}
object!(Template, "template", |t| {
    let k = Keys::default().account(t.account_id);
    match t.zone_id {
        Some(z) => k.zone(z),
        None => k,
    }
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestIpType {
    Isolated,
    Shared,
    L2,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkOffering {
    pub id: Id<NetworkOffering>,
    pub name: String,
    pub display_text: String,
    pub guest_ip_type: GuestIpType,
    pub state: AllocationState,
    pub is_default: bool,
    pub specify_vlan: bool,
    /// Supported services, e.g. `Dhcp`, `Dns`, `SourceNat`.
    pub services: Vec<String>,
}
object!(NetworkOffering, "networkoffering", |o| Keys::default()
    .state(&o.state));

// ---- networks and addresses ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkState {
    Allocated,
    Setup,
    Implementing,
    Implemented,
    Shutdown,
    Destroy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub id: Id<Network>,
    pub name: String,
    pub display_text: String,
    pub account_id: Id<Account>,
    pub zone_id: Id<Zone>,
    pub network_offering_id: Id<NetworkOffering>,
    pub state: NetworkState,
    pub cidr: String,
    pub gateway: String,
    pub netmask: String,
    pub vlan: Option<String>,
    pub created: DateTime<Utc>,
}
object!(Network, "network", |n| Keys::default()
    .account(n.account_id)
    .zone(n.zone_id)
    .network(n.id)
    .state(&n.state));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpState {
    Allocating,
    Allocated,
    Releasing,
    Free,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpPurpose {
    /// An address on a guest network, held by a NIC.
    Guest,
    /// A public address (`listPublicIpAddresses`).
    Public,
}

/// An address taken in a network. Its id is derived from (network, address),
/// so two claims of the same address collide on the id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpAddress {
    pub id: Id<IpAddress>,
    pub address: String,
    pub network_id: Id<Network>,
    pub zone_id: Id<Zone>,
    pub account_id: Id<Account>,
    pub purpose: IpPurpose,
    pub state: IpState,
    pub nic_id: Option<Id<Nic>>,
    pub is_source_nat: bool,
    pub allocated: DateTime<Utc>,
}
object!(IpAddress, "ipaddress", |i| Keys::default()
    .account(i.account_id)
    .zone(i.zone_id)
    .network(i.network_id)
    .state(&i.state));

impl IpAddress {
    pub const NAMESPACE: Uuid = Uuid::from_u128(0x1b7f_44a2_0c6e_4b0d_9e5a_0000_0000_01a9);
    pub fn id_for(network: Id<Network>, address: &str) -> Id<IpAddress> {
        Id::derived(Self::NAMESPACE, &format!("{network}/{address}"))
    }
}

// ---- virtual machines and storage ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    Starting,
    Running,
    Stopping,
    Stopped,
    Destroyed,
    Expunging,
    Migrating,
    Error,
    Unknown,
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PowerState {
    PowerOn,
    PowerOff,
    PowerUnknown,
    PowerReportMissing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vm {
    pub id: Id<Vm>,
    pub name: String,
    pub display_name: String,
    pub account_id: Id<Account>,
    pub domain_id: Id<Domain>,
    pub zone_id: Id<Zone>,
    pub host_id: Option<Id<Host>>,
    pub last_host_id: Option<Id<Host>>,
    pub template_id: Id<Template>,
    pub service_offering_id: Id<ServiceOffering>,
    pub state: VmState,
    pub power_state: PowerState,
    pub ha_enabled: bool,
    pub cpu_number: u32,
    pub cpu_speed: u32,
    /// MB.
    pub memory: u32,
    pub user_data: Option<String>,
    pub ssh_key_pairs: Vec<String>,
    pub created: DateTime<Utc>,
    /// Names shown with the ids (CloudStack's `zonename`, `hostname`,
    /// `templatename`, `serviceofferingname`), written with the ids.
    #[serde(default)]
    pub zone_name: String,
    #[serde(default)]
    pub host_name: Option<String>,
    #[serde(default)]
    pub template_name: String,
    #[serde(default)]
    pub service_offering_name: String,
    /// The VM's NICs as its deploy allocated them (the `Nic` rows hold the
    /// addresses; this copy is what the VM's view shows).
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// When the state last changed: an `Error` or `Destroyed` VM is
    /// expunged `expunge.delay` seconds after it.
    #[serde(default)]
    pub state_changed: Option<DateTime<Utc>>,
    /// The saga working on the VM, if one is: a second job on it is
    /// refused while that saga runs (CloudStack serialises a VM's jobs).
    #[serde(default)]
    pub saga_id: Option<Id<Saga>>,
}
object!(Vm, "vm", |v| Keys::default()
    .account(v.account_id)
    .zone(v.zone_id)
    .host(v.host_id)
    .state(&v.state));

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nic {
    pub id: Id<Nic>,
    pub vm_id: Id<Vm>,
    pub network_id: Id<Network>,
    pub account_id: Id<Account>,
    pub ip_address: String,
    pub netmask: String,
    pub gateway: String,
    pub mac_address: String,
    pub is_default: bool,
    pub device_id: u32,
}
object!(Nic, "nic", |n| Keys::default()
    .account(n.account_id)
    .network(n.network_id));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeState {
    Allocated,
    Creating,
    Ready,
    Migrating,
    Snapshotting,
    RevertSnapshotting,
    Resizing,
    Expunging,
    Expunged,
    Destroy,
    Destroying,
    UploadOp,
    Copying,
    Uploaded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum VolumeType {
    Root,
    Datadisk,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub id: Id<Volume>,
    pub name: String,
    pub account_id: Id<Account>,
    pub zone_id: Id<Zone>,
    pub vm_id: Option<Id<Vm>>,
    pub pool_id: Option<Id<StoragePool>>,
    pub disk_offering_id: Option<Id<DiskOffering>>,
    pub volume_type: VolumeType,
    pub state: VolumeState,
    /// Bytes.
    pub size: u64,
    pub device_id: Option<u32>,
    pub created: DateTime<Utc>,
}
object!(Volume, "volume", |v| Keys::default()
    .account(v.account_id)
    .zone(v.zone_id)
    .state(&v.state));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotState {
    Allocated,
    Creating,
    CreatedOnPrimary,
    BackingUp,
    BackedUp,
    Copying,
    Destroying,
    Destroyed,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: Id<Snapshot>,
    pub name: String,
    pub volume_id: Id<Volume>,
    pub account_id: Id<Account>,
    pub zone_id: Id<Zone>,
    pub state: SnapshotState,
    /// `MANUAL`, `HOURLY`, …
    pub snapshot_type: String,
    pub created: DateTime<Utc>,
}
object!(Snapshot, "snapshot", |s| Keys::default()
    .account(s.account_id)
    .zone(s.zone_id)
    .state(&s.state));

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SshKeyPair {
    pub id: Id<SshKeyPair>,
    pub name: String,
    pub account_id: Id<Account>,
    pub fingerprint: String,
    pub public_key: String,
    pub created: DateTime<Utc>,
}
object!(SshKeyPair, "sshkeypair", |k| Keys::default()
    .account(k.account_id));

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityRule {
    pub rule_id: Uuid,
    pub protocol: String,
    pub start_port: Option<u16>,
    pub end_port: Option<u16>,
    pub icmp_type: Option<i32>,
    pub icmp_code: Option<i32>,
    pub cidr: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: Id<SecurityGroup>,
    pub name: String,
    pub description: String,
    pub account_id: Id<Account>,
    pub ingress: Vec<SecurityRule>,
    pub egress: Vec<SecurityRule>,
}
object!(SecurityGroup, "securitygroup", |g| Keys::default()
    .account(g.account_id));

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tag {
    pub id: Id<Tag>,
    pub key: String,
    pub value: String,
    /// CloudStack's resource type name, e.g. `UserVm`, `Volume`.
    pub resource_type: String,
    pub resource_id: Uuid,
    pub account_id: Id<Account>,
}
object!(Tag, "tag", |t| Keys::default().account(t.account_id));

// ---- jobs, events, sagas ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum JobStatus {
    Pending = 0,
    Succeeded = 1,
    Failed = 2,
}

impl From<JobStatus> for u8 {
    fn from(s: JobStatus) -> u8 {
        s as u8
    }
}

impl TryFrom<u8> for JobStatus {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            0 => Ok(Self::Pending),
            1 => Ok(Self::Succeeded),
            2 => Ok(Self::Failed),
            other => Err(format!("job status {other} is not 0, 1 or 2")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AsyncJob {
    pub id: Id<AsyncJob>,
    pub account_id: Id<Account>,
    pub user_id: Id<User>,
    /// The API command's class name as CloudStack reports it in `cmd`.
    pub command: String,
    pub instance_type: Option<String>,
    pub instance_id: Option<Uuid>,
    pub status: JobStatus,
    pub result_code: u32,
    pub result_type: Option<String>,
    pub result: Option<Value>,
    pub created: DateTime<Utc>,
    pub completed: Option<DateTime<Utc>>,
}
object!(AsyncJob, "asyncjob", |j| Keys::default()
    .account(j.account_id)
    .state(&j.status));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventLevel {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventState {
    Created,
    Scheduled,
    Started,
    Completed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: Id<Event>,
    /// e.g. `VM.CREATE`.
    pub event_type: String,
    pub level: EventLevel,
    pub state: EventState,
    pub description: String,
    pub account_id: Id<Account>,
    pub resource_type: Option<String>,
    pub resource_id: Option<Uuid>,
    pub created: DateTime<Utc>,
}
object!(Event, "event", |e| Keys::default()
    .account(e.account_id)
    .state(&e.level));

/// An alert to operators (`listAlerts`), as CloudStack raises them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: Id<Alert>,
    /// CloudStack's alert type number, e.g. 7 for a host.
    pub alert_type: u16,
    /// The alert type's name, e.g. `ALERT.HOST`.
    pub name: String,
    pub subject: String,
    pub zone_id: Id<Zone>,
    pub pod_id: Option<Id<Pod>>,
    pub sent: DateTime<Utc>,
}
object!(Alert, "alert", |a| Keys::default().zone(a.zone_id));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SagaStatus {
    Running,
    Unwinding,
    Done,
    Failed,
}

/// A saga's record; the orchestration engine owns what its parameters,
/// steps and log mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saga {
    pub id: Id<Saga>,
    pub kind: String,
    pub parameters: Value,
    pub status: SagaStatus,
    /// What happened besides the steps: results that came for a step the
    /// saga no longer waited on, timeouts, parked messages.
    pub step_log: Vec<Value>,
    pub job_id: Option<Id<AsyncJob>>,
    pub created: DateTime<Utc>,
    /// The steps, in order, each with its state and times.
    #[serde(default)]
    pub steps: Vec<SagaStep>,
    /// The step running (forward) or being undone (unwinding).
    #[serde(default)]
    pub cursor: usize,
    /// Why the saga failed: `{"errorcode": .., "errortext": ..}`.
    #[serde(default)]
    pub error: Option<Value>,
    #[serde(default)]
    pub ended: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    Pending,
    /// Its action was sent (or, for a local step, is being applied).
    Running,
    Done,
    Failed,
    /// Its undo was sent.
    Undoing,
    Undone,
    /// Its undo failed or timed out: left for an operator (an alert says so).
    UndoFailed,
}

/// One step of a saga, as it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaStep {
    pub name: String,
    pub state: StepState,
    #[serde(default)]
    pub started: Option<DateTime<Utc>>,
    #[serde(default)]
    pub ended: Option<DateTime<Utc>>,
    #[serde(default)]
    pub undo_started: Option<DateTime<Utc>>,
    #[serde(default)]
    pub undo_ended: Option<DateTime<Utc>>,
    /// When the action (or undo) in flight times out.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    /// What the action answered, for later steps and the undo.
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
}
object!(Saga, "saga", |s| Keys::default().state(&s.status));

// ---- data-service records: outbox, idempotency, reservations ----

/// A message that follows from a state change, written in the same
/// transaction; its id is the message id. Published right after the commit
/// and removed once the broker confirms; the relay republishes what is left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    pub id: Id<OutboxMessage>,
    pub exchange: String,
    pub routing_key: String,
    pub message_type: String,
    pub correlation_id: String,
    pub causation_id: Option<Uuid>,
    pub job_id: Option<String>,
    pub traceparent: String,
    pub attempt: u32,
    pub created: DateTime<Utc>,
    /// The JSON body.
    pub body: String,
}
object!(OutboxMessage, "outbox", |_m| Keys::default()
    .state(&"pending"));

/// The record that a consumer handled a message, written in the same
/// transaction as the handling's effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handled {
    pub id: Id<Handled>,
    pub consumer: String,
    pub message_id: Uuid,
    pub at: DateTime<Utc>,
}
object!(Handled, "handled", |_h| Keys::default());

impl Handled {
    pub const NAMESPACE: Uuid = Uuid::from_u128(0x7e3c_2a10_55f1_4c8e_a1d4_0000_0000_0bad);
    pub fn id_for(consumer: &str, message_id: Uuid) -> Id<Handled> {
        Id::derived(Self::NAMESPACE, &format!("{consumer}/{message_id}"))
    }
}

/// Host capacity held for one key (e.g. one VM's placement step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: Id<Reservation>,
    pub key: String,
    pub host_id: Id<Host>,
    /// MHz.
    pub cpu: u64,
    /// Bytes.
    pub memory: u64,
    pub created: DateTime<Utc>,
}
object!(Reservation, "reservation", |r| Keys::default()
    .host(Some(r.host_id)));

impl Reservation {
    pub const NAMESPACE: Uuid = Uuid::from_u128(0x3d9a_61f0_0b2e_47a5_b6c1_0000_0000_0c11);
    pub fn id_for(key: &str) -> Id<Reservation> {
        Id::derived(Self::NAMESPACE, key)
    }
}

/// A guest VLAN taken from a zone's range by one network. Its id is derived
/// from (zone, vlan), so two claims of the same VLAN collide on the id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VlanClaim {
    pub id: Id<VlanClaim>,
    pub zone_id: Id<Zone>,
    pub vlan: u32,
    pub network_id: Id<Network>,
    pub created: DateTime<Utc>,
}
object!(VlanClaim, "vlanclaim", |v| Keys::default()
    .zone(v.zone_id)
    .network(v.network_id));

impl VlanClaim {
    pub const NAMESPACE: Uuid = Uuid::from_u128(0x5a0c_7e21_9d44_4f3a_b1e8_0000_0000_07a1);
    pub fn id_for(zone: Id<Zone>, vlan: u32) -> Id<VlanClaim> {
        Id::derived(Self::NAMESPACE, &format!("{zone}/{vlan}"))
    }
}

impl Nic {
    pub const NAMESPACE: Uuid = Uuid::from_u128(0x91c4_0e77_3f58_4d1b_8a20_0000_0000_0a1c);
    /// The NIC made for allocation `key`: a repeated allocation finds it.
    pub fn id_for(key: &str) -> Id<Nic> {
        Id::derived(Self::NAMESPACE, key)
    }
}

#[cfg(test)]
mod api_key_tests {
    use super::*;

    #[test]
    fn a_sealed_secret_moved_to_another_users_row_does_not_open() {
        let secrets = SecretBox::new(&DataKey::generate(), "test");
        let (alice_account, bob_account) = (Id::new(), Id::new());
        let (alice, alice_secret) =
            ApiKey::generate(Id::new(), alice_account, Utc::now(), &secrets);
        let (bob, _) = ApiKey::generate(Id::new(), bob_account, Utc::now(), &secrets);
        assert_eq!(alice.secret(&secrets).unwrap(), alice_secret);
        assert!(
            !serde_json::to_string(&alice)
                .unwrap()
                .contains(alice_secret.expose())
        );
        // Alice's sealed secret copied into Bob's row: it does not open there.
        let moved = ApiKey {
            secret_key: alice.secret_key.clone(),
            ..bob.clone()
        };
        let e = moved.secret(&secrets).unwrap_err();
        assert!(matches!(e, SecretError::DoesNotOpen { .. }), "{e}");
        // Alice's row re-pointed at Bob's user: it does not open either.
        let repointed = ApiKey {
            user_id: bob.user_id,
            ..alice.clone()
        };
        assert!(repointed.secret(&secrets).is_err());
    }

    #[test]
    fn a_plain_text_secret_from_before_is_sealed_in_place() {
        let secrets = SecretBox::new(&DataKey::generate(), "test");
        let (sealed, _) = ApiKey::generate(Id::new(), Id::new(), Utc::now(), &secrets);
        assert!(sealed.sealed_from_plain(&secrets).is_none());
        let old = ApiKey {
            secret_key: Sealed::from_stored("plain-secret"),
            ..sealed
        };
        assert!(matches!(old.secret(&secrets), Err(SecretError::NotSealed)));
        let now = old.sealed_from_plain(&secrets).unwrap();
        assert_eq!(now.secret(&secrets).unwrap().expose(), "plain-secret");
        assert_eq!((now.id, now.user_id), (old.id, old.user_id));
    }
}
