//! Every cloud object Stratus keeps, as the data service stores it.
//!
//! Each object type implements [`Object`]: its kind (the store's type tag), its
//! id, and the [`Keys`] the store indexes it by (account, zone, host, network,
//! state), which are the access patterns the functions need. State names are
//! CloudStack's, spelled as its API spells them.

mod id;
mod objects;
pub mod password;
pub mod samples;

pub use id::Id;
pub use objects::*;

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// The secondary keys an object is found by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    pub account: Option<Uuid>,
    pub zone: Option<Uuid>,
    pub host: Option<Uuid>,
    pub network: Option<Uuid>,
    pub state: Option<String>,
}

impl Keys {
    pub fn account<T>(mut self, id: Id<T>) -> Self {
        self.account = Some(id.uuid());
        self
    }
    pub fn zone<T>(mut self, id: Id<T>) -> Self {
        self.zone = Some(id.uuid());
        self
    }
    pub fn host<T>(mut self, id: Option<Id<T>>) -> Self {
        self.host = id.map(|i| i.uuid());
        self
    }
    pub fn network<T>(mut self, id: Id<T>) -> Self {
        self.network = Some(id.uuid());
        self
    }
    pub fn state<S: Serialize>(mut self, state: &S) -> Self {
        self.state = Some(state_name(state));
        self
    }
}

/// The name CloudStack gives a state value (its serde name).
pub fn state_name<S: Serialize>(state: &S) -> String {
    match serde_json::to_value(state) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// A stored object type.
pub trait Object: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The store's type tag, e.g. `vm`.
    const KIND: &'static str;
    fn id(&self) -> Uuid;
    fn keys(&self) -> Keys;
}

/// Every kind, for tools and tests that walk them all.
pub const KINDS: &[&str] = &[
    Domain::KIND,
    Account::KIND,
    User::KIND,
    ApiKey::KIND,
    Session::KIND,
    Zone::KIND,
    Pod::KIND,
    Cluster::KIND,
    Host::KIND,
    StoragePool::KIND,
    ServiceOffering::KIND,
    DiskOffering::KIND,
    Template::KIND,
    NetworkOffering::KIND,
    Network::KIND,
    IpAddress::KIND,
    Vm::KIND,
    Nic::KIND,
    Volume::KIND,
    Snapshot::KIND,
    SshKeyPair::KIND,
    SecurityGroup::KIND,
    Tag::KIND,
    AsyncJob::KIND,
    Event::KIND,
    Alert::KIND,
    Saga::KIND,
    OutboxMessage::KIND,
    Handled::KIND,
    Reservation::KIND,
    VlanClaim::KIND,
];
