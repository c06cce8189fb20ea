//! Bootstrap, as CloudStack's simulator set-up does it: the ROOT domain, the
//! root admin with a password and API keys, and a simulated zone (pod,
//! clusters, hosts of hypervisor `Simulator` in state `Disconnected` until
//! their agent connects, primary storage, offerings, templates, network
//! offerings) from an editable file (`infra/simulator-zone.json`).
//!
//! Every object has an id derived from its name, and is created only where
//! it is missing: running bootstrap again changes nothing, and a run cut
//! short is completed by the next.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use stratus_model::*;
use stratus_store::{Index, Store, StoreError};
use uuid::Uuid;

/// The zone file as committed, used when no other is given (as on Lambda,
/// where only the binary ships).
pub const DEFAULT_ZONE_FILE: &str = include_str!("../../../infra/simulator-zone.json");

const NAMESPACE: Uuid = Uuid::from_u128(0x2f0b_9c41_6d3e_4a57_9b18_0000_0000_b007);

fn id<T>(path: &str) -> Id<T> {
    Id::derived(NAMESPACE, path)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneFile {
    #[serde(default)]
    pub comment: String,
    pub admin: AdminSpec,
    pub zone: ZoneSpec,
    pub service_offerings: Vec<ServiceOfferingSpec>,
    pub disk_offerings: Vec<DiskOfferingSpec>,
    pub templates: Vec<TemplateSpec>,
    pub network_offerings: Vec<NetworkOfferingSpec>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSpec {
    pub username: String,
    /// Absent (as on AWS, where the zone travels in the startup invocation's
    /// input, which Terraform keeps in its state): a random password that
    /// nobody knows, so the admin comes in with the API keys only.
    #[serde(default)]
    pub password: Option<String>,
    pub email: String,
    pub firstname: String,
    pub lastname: String,
}

/// Without the password, so that no log line can show it.
impl std::fmt::Debug for AdminSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSpec")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("email", &self.email)
            .field("firstname", &self.firstname)
            .field("lastname", &self.lastname)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    pub name: String,
    pub network_type: NetworkType,
    pub dns1: String,
    pub internal_dns1: String,
    pub guest_cidr_address: Option<String>,
    /// The guest VLAN range, e.g. `100-200`.
    #[serde(default)]
    pub vlan: Option<String>,
    pub pods: Vec<PodSpec>,
    pub primary_storage: Vec<PoolSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    pub name: String,
    pub gateway: String,
    pub netmask: String,
    pub start_ip: String,
    pub end_ip: String,
    pub clusters: Vec<ClusterSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: String,
    pub hypervisor: String,
    pub hosts: Vec<HostSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub name: String,
    pub ip_address: String,
    pub cpu_number: u32,
    pub cpu_speed: u32,
    pub memory_mb: u64,
    /// Host tags (`hosttags`).
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub name: String,
    pub url: String,
    pub capacity_gb: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOfferingSpec {
    pub name: String,
    pub display_text: String,
    pub cpu_number: u32,
    pub cpu_speed: u32,
    pub memory_mb: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskOfferingSpec {
    pub name: String,
    pub display_text: String,
    /// 0: the size is chosen at creation.
    pub disk_size_gb: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    pub name: String,
    pub display_text: String,
    pub os_type_name: String,
    pub format: String,
    pub hypervisor: String,
    pub size_gb: u64,
    pub password_enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOfferingSpec {
    pub name: String,
    pub display_text: String,
    pub guest_ip_type: GuestIpType,
    pub is_default: bool,
    pub specify_vlan: bool,
    pub services: Vec<String>,
}

impl ZoneFile {
    pub fn parse(file: &str, text: &str) -> anyhow::Result<Self> {
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{file}: {e}"))
    }
}

/// What a run did, and the admin's keys (for `cloudstack.ini` only: the
/// function's answer carries none of them; `Debug` shows no secret key).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    pub apikey: String,
    pub secretkey: String,
    /// Whether this run made the keys (the first start), not found them.
    pub keys_created: bool,
    pub admin_user_id: String,
    pub zone_id: String,
    pub created: usize,
    pub existing: usize,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome")
            .field("apikey", &self.apikey)
            .field("secretkey", &"<redacted>")
            .field("keys_created", &self.keys_created)
            .field("admin_user_id", &self.admin_user_id)
            .field("zone_id", &self.zone_id)
            .field("created", &self.created)
            .field("existing", &self.existing)
            .finish()
    }
}

#[derive(Default)]
struct Tally {
    created: usize,
    existing: usize,
}

impl Tally {
    /// Creates `value` unless an object with its id exists.
    async fn ensure<T: Object>(&mut self, store: &Store, value: T) -> anyhow::Result<T> {
        let id = Id::<T>::from_uuid(value.id());
        if let Some(found) = store.get(id).await? {
            self.existing += 1;
            return Ok(found.value);
        }
        match store.create(&value).await {
            Ok(v) => {
                self.created += 1;
                Ok(v.value)
            }
            // Another run created it meanwhile.
            Err(StoreError::Conflict { .. }) => {
                self.existing += 1;
                Ok(store.get(id).await?.map(|v| v.value).unwrap_or(value))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Seals every API secret key a store from before sealing kept in plain
/// text (one conditional update each), then checkpoints the store so the
/// plain text is gone from its files; returns how many it sealed.
pub async fn seal_plain_keys(store: &Store, secrets: &SecretBox) -> anyhow::Result<usize> {
    let mut sealed = 0;
    for mut key in store.walk::<ApiKey>(&Index::All).await? {
        if let Some(now) = key.value.sealed_from_plain(secrets) {
            key.value = now;
            match store.update(&key).await {
                Ok(_) => sealed += 1,
                // Sealed, replaced or deleted meanwhile by another process.
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if sealed > 0 {
        store.checkpoint().await?;
        tracing::info!(
            sealed,
            "sealed API secret keys kept in plain text by a store from before"
        );
    }
    Ok(sealed)
}

pub async fn run(store: &Store, spec: &ZoneFile, secrets: &SecretBox) -> anyhow::Result<Outcome> {
    seal_plain_keys(store, secrets).await?;
    let now = Utc::now();
    let mut t = Tally::default();
    let domain = t
        .ensure(
            store,
            Domain {
                id: Domain::id_for("ROOT"),
                name: "ROOT".into(),
                parent_id: None,
                path: "ROOT".into(),
                created: now,
            },
        )
        .await?;
    let a = &spec.admin;
    let account = t
        .ensure(
            store,
            Account {
                id: Account::id_for(Domain::id_for("ROOT"), &a.username),
                name: a.username.clone(),
                domain_id: domain.id,
                account_type: AccountType::Admin,
                state: AccountState::Enabled,
                created: now,
            },
        )
        .await?;
    let user_id = User::id_for(domain.id, &a.username);
    let user = match store.get(user_id).await? {
        Some(u) => {
            t.existing += 1;
            u.value
        }
        None => {
            t.ensure(
                store,
                User {
                    id: user_id,
                    account_id: account.id,
                    username: a.username.clone(),
                    password_hash: password::hash(
                        a.password
                            .as_deref()
                            .unwrap_or(&uuid::Uuid::new_v4().simple().to_string()),
                    ),
                    firstname: a.firstname.clone(),
                    lastname: a.lastname.clone(),
                    email: a.email.clone(),
                    state: AccountState::Enabled,
                    created: now,
                    login_attempts: 0,
                },
            )
            .await?
        }
    };
    // The admin keeps the keys it has; a first run makes them.
    let keys = store
        .list::<ApiKey>(&Index::Account(account.id.uuid()), None, 100)
        .await?
        .items
        .into_iter()
        .map(|k| k.value)
        .find(|k| k.user_id == user.id);
    let keys_created = keys.is_none();
    let key = match keys {
        Some(k) => {
            t.existing += 1;
            k
        }
        None => {
            t.ensure(store, ApiKey::generate(user.id, account.id, now, secrets).0)
                .await?
        }
    };

    let z = &spec.zone;
    let zone = t
        .ensure(
            store,
            Zone {
                id: id(&format!("zone/{}", z.name)),
                name: z.name.clone(),
                network_type: z.network_type,
                allocation_state: AllocationState::Enabled,
                dns1: z.dns1.clone(),
                internal_dns1: z.internal_dns1.clone(),
                guest_cidr_address: z.guest_cidr_address.clone(),
                vlan_range: z.vlan.clone(),
                security_groups_enabled: false,
                local_storage_enabled: false,
                created: now,
            },
        )
        .await?;
    for p in &z.pods {
        let pod_path = format!("{}/{}", z.name, p.name);
        let pod = t
            .ensure(
                store,
                Pod {
                    id: id(&format!("pod/{pod_path}")),
                    name: p.name.clone(),
                    zone_id: zone.id,
                    gateway: p.gateway.clone(),
                    netmask: p.netmask.clone(),
                    start_ip: p.start_ip.clone(),
                    end_ip: p.end_ip.clone(),
                    allocation_state: AllocationState::Enabled,
                },
            )
            .await?;
        for c in &p.clusters {
            let cluster_path = format!("{pod_path}/{}", c.name);
            let cluster = t
                .ensure(
                    store,
                    Cluster {
                        id: id(&format!("cluster/{cluster_path}")),
                        name: c.name.clone(),
                        zone_id: zone.id,
                        pod_id: pod.id,
                        hypervisor: c.hypervisor.clone(),
                        cluster_type: "CloudManaged".into(),
                        allocation_state: AllocationState::Enabled,
                        managed_state: ManagedState::Managed,
                        cpu_overprovisioning: None,
                        memory_overprovisioning: None,
                    },
                )
                .await?;
            for h in &c.hosts {
                t.ensure(
                    store,
                    Host {
                        id: id(&format!("host/{cluster_path}/{}", h.name)),
                        name: h.name.clone(),
                        zone_id: zone.id,
                        pod_id: pod.id,
                        cluster_id: cluster.id,
                        hypervisor: c.hypervisor.clone(),
                        host_type: "Routing".into(),
                        // Until its agent connects.
                        state: HostState::Disconnected,
                        resource_state: ResourceState::Enabled,
                        ip_address: h.ip_address.clone(),
                        cpu_number: h.cpu_number,
                        cpu_speed: h.cpu_speed,
                        memory_total: h.memory_mb * 1024 * 1024,
                        cpu_allocated: 0,
                        memory_allocated: 0,
                        last_pinged: None,
                        created: now,
                        host_tags: h.tags.clone(),
                    },
                )
                .await?;
            }
        }
    }
    for s in &z.primary_storage {
        t.ensure(
            store,
            StoragePool {
                id: id(&format!("storagepool/{}/{}", z.name, s.name)),
                name: s.name.clone(),
                zone_id: zone.id,
                pod_id: None,
                cluster_id: None,
                scope: StorageScope::Zone,
                pool_type: "NetworkFilesystem".into(),
                url: s.url.clone(),
                state: StoragePoolState::Up,
                disk_size_total: s.capacity_gb * 1024 * 1024 * 1024,
                disk_size_allocated: 0,
            },
        )
        .await?;
    }
    for o in &spec.service_offerings {
        t.ensure(
            store,
            ServiceOffering {
                id: id(&format!("serviceoffering/{}", o.name)),
                name: o.name.clone(),
                display_text: o.display_text.clone(),
                cpu_number: o.cpu_number,
                cpu_speed: o.cpu_speed,
                memory: o.memory_mb,
                offer_ha: false,
                storage_type: StorageType::Shared,
                host_tags: None,
                created: now,
            },
        )
        .await?;
    }
    for o in &spec.disk_offerings {
        t.ensure(
            store,
            DiskOffering {
                id: id(&format!("diskoffering/{}", o.name)),
                name: o.name.clone(),
                display_text: o.display_text.clone(),
                disk_size: o.disk_size_gb,
                is_customized: o.disk_size_gb == 0,
                storage_type: StorageType::Shared,
                tags: None,
                created: now,
            },
        )
        .await?;
    }
    for tpl in &spec.templates {
        t.ensure(
            store,
            Template {
                id: id(&format!("template/{}", tpl.name)),
                name: tpl.name.clone(),
                display_text: tpl.display_text.clone(),
                account_id: account.id,
                zone_id: None,
                os_type_name: tpl.os_type_name.clone(),
                format: tpl.format.clone(),
                hypervisor: tpl.hypervisor.clone(),
                is_public: true,
                is_featured: true,
                is_ready: true,
                password_enabled: tpl.password_enabled,
                size: tpl.size_gb * 1024 * 1024 * 1024,
                created: now,
            },
        )
        .await?;
    }
    for o in &spec.network_offerings {
        t.ensure(
            store,
            NetworkOffering {
                id: id(&format!("networkoffering/{}", o.name)),
                name: o.name.clone(),
                display_text: o.display_text.clone(),
                guest_ip_type: o.guest_ip_type,
                state: AllocationState::Enabled,
                is_default: o.is_default,
                specify_vlan: o.specify_vlan,
                services: o.services.clone(),
            },
        )
        .await?;
    }
    let secret = key
        .secret(secrets)
        .map_err(|e| anyhow::anyhow!("the root admin's API key {}: {e}", key.id))?;
    Ok(Outcome {
        apikey: key.api_key,
        secretkey: secret.expose().to_string(),
        keys_created,
        admin_user_id: user.id.to_string(),
        zone_id: zone.id.to_string(),
        created: t.created,
        existing: t.existing,
    })
}

/// A `cs`-compatible `cloudstack.ini` for these keys.
pub fn cloudstack_ini(endpoint: &str, outcome: &Outcome) -> String {
    format!(
        "# Written by Stratus's bootstrap: the root admin's API keys.\n[cloudstack]\nendpoint = {endpoint}\nkey = {}\nsecret = {}\n",
        outcome.apikey, outcome.secretkey
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_store::Backend;
    use stratus_store::sqlite::SqliteStore;

    fn store() -> Store {
        Store::new(Backend::Sqlite(SqliteStore::open_scratch("t_").unwrap()))
    }

    fn secrets() -> SecretBox {
        SecretBox::new(&stratus_secrets::DataKey::generate(), "test")
    }

    #[tokio::test]
    async fn the_admins_secret_key_is_not_in_the_database_files() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("store.db");
        let store = Store::new(Backend::Sqlite(SqliteStore::open(&db, "t_").unwrap()));
        let spec = ZoneFile::parse("default", DEFAULT_ZONE_FILE).unwrap();
        let outcome = run(&store, &spec, &secrets()).await.unwrap();
        assert!(std::fs::metadata(format!("{}-wal", db.display())).is_ok());
        assert_eq!(
            stratus_secrets::traces::in_sqlite_files(&db, &outcome.secretkey),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn plain_text_keys_from_before_are_sealed_and_scrubbed() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path();
        let db = home.join("stratus.db");
        let store = Store::new(Backend::Sqlite(SqliteStore::open(&db, "t_").unwrap()));
        // A store from before: the secret key in plain text, and no key file yet.
        let plain = "cGxhaW4tdGV4dC1zZWNyZXQta2V5LWZyb20tYmVmb3JlLXNlYWxpbmctd2FzLWFkZGVkLXRvLXN0cmF0dXMtISE";
        let (mut old, _) = ApiKey::generate(Id::new(), Id::new(), Utc::now(), &secrets());
        old.secret_key = Sealed::from_stored(plain);
        store.create(&old).await.unwrap();
        // Its key file is made at the first start after the upgrade, as
        // nothing in the store is sealed yet.
        let source = stratus_contracts::config::SecretKeySource::File(home.join("secret.key"));
        let secrets = store
            .secret_box(&source)
            .await
            .expect("a store holding only plain-text keys gets its key file");
        assert!(
            !stratus_secrets::traces::in_sqlite_files(&db, plain).is_empty(),
            "the test writes it"
        );
        assert_eq!(seal_plain_keys(&store, &secrets).await.unwrap(), 1);
        let now = store.get(old.id).await.unwrap().unwrap().value;
        assert_eq!(now.secret(&secrets).unwrap().expose(), plain);
        assert_eq!(
            stratus_secrets::traces::in_sqlite_files(&db, plain),
            Vec::<String>::new()
        );
        assert_eq!(seal_plain_keys(&store, &secrets).await.unwrap(), 0);
        // Sealed now: a lost key file is an error, never a fresh key.
        std::fs::remove_file(home.join("secret.key")).unwrap();
        assert!(store.secret_box(&source).await.is_err());
    }

    #[tokio::test]
    async fn a_zone_without_the_admins_password_gives_one_nobody_knows() {
        let store = store();
        let mut zone: serde_json::Value = serde_json::from_str(DEFAULT_ZONE_FILE).unwrap();
        let known = zone["admin"]["password"].as_str().unwrap().to_string();
        zone["admin"].as_object_mut().unwrap().remove("password");
        let spec = ZoneFile::parse("without password", &zone.to_string()).unwrap();
        assert_eq!(spec.admin.password, None);
        let outcome = run(&store, &spec, &secrets()).await.unwrap();
        let user: Id<User> = outcome.admin_user_id.parse().unwrap();
        let user = store.get(user).await.unwrap().unwrap().value;
        assert!(!password::verify(&known, &user.password_hash));
        assert!(!password::verify("", &user.password_hash));
        assert!(outcome.keys_created);
    }

    #[tokio::test]
    async fn a_second_run_changes_nothing() {
        let store = store();
        let secrets = secrets();
        let spec = ZoneFile::parse("default", DEFAULT_ZONE_FILE).unwrap();
        let first = run(&store, &spec, &secrets).await.unwrap();
        assert!(first.created > 15, "{first:?}");
        assert_eq!(first.existing, 0);
        assert!(first.keys_created);
        assert!(!format!("{first:?}").contains(&first.secretkey));
        let hosts = store.count::<Host>(&Index::All).await.unwrap();
        assert_eq!(hosts, 3);
        let again = run(&store, &spec, &secrets).await.unwrap();
        assert_eq!((again.created, again.existing), (0, first.created));
        assert!(!again.keys_created);
        assert_eq!(
            (&again.apikey, &again.secretkey),
            (&first.apikey, &first.secretkey)
        );
        assert_eq!(store.count::<Host>(&Index::All).await.unwrap(), 3);
        let user: Id<User> = first.admin_user_id.parse().unwrap();
        let user = store.get(user).await.unwrap().unwrap().value;
        assert!(password::verify("password", &user.password_hash));
    }

    #[test]
    fn a_bad_zone_file_names_itself_and_the_field() {
        let e = ZoneFile::parse("mine.json", r#"{"admin": {}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("mine.json: missing field"), "{e}");
    }
}
