//! A zone with a template, disk offerings and a primary pool in a SQLite
//! store, for the unit tests.

use std::sync::Arc;

use stratus_contracts::message_types::storage::AllocateVolumes;
use stratus_model::samples::{Fixture, Sample};
use stratus_model::*;
use stratus_store::sqlite::SqliteStore;
use stratus_store::{Backend, Index, Store};

use crate::sizes::GIB;

pub struct World {
    pub store: Arc<Store>,
    pub f: Fixture,
    /// 2 GiB, ready, in the zone.
    pub template: Id<Template>,
    /// The zone's first pool: cluster-scoped (the fixture's cluster), 100 GiB, Up.
    pub pool: Id<StoragePool>,
    /// 5 GB.
    pub fixed: Id<DiskOffering>,
    pub custom: Id<DiskOffering>,
}

impl World {
    pub async fn new() -> Self {
        let store = Arc::new(Store::new(Backend::Sqlite(
            SqliteStore::open_scratch("t_").unwrap(),
        )));
        let f = Fixture::default();
        store
            .create(&Zone {
                id: f.zone,
                ..Zone::sample(&f)
            })
            .await
            .unwrap();
        let template = store
            .create(&Template {
                size: 2 * GIB,
                ..Template::sample(&f)
            })
            .await
            .unwrap()
            .value
            .id;
        let fixed = store
            .create(&DiskOffering {
                disk_size: 5,
                is_customized: false,
                ..DiskOffering::sample(&f)
            })
            .await
            .unwrap()
            .value
            .id;
        let custom = store
            .create(&DiskOffering {
                name: "Custom".into(),
                disk_size: 0,
                is_customized: true,
                ..DiskOffering::sample(&f)
            })
            .await
            .unwrap()
            .value
            .id;
        let mut w = World {
            store,
            f,
            template,
            pool: Id::new(),
            fixed,
            custom,
        };
        w.pool = w
            .add_pool(
                StorageScope::Cluster,
                Some(w.f.cluster),
                100 * GIB,
                0,
                StoragePoolState::Up,
            )
            .await;
        w
    }

    pub async fn add_pool(
        &self,
        scope: StorageScope,
        cluster: Option<Id<Cluster>>,
        total: u64,
        allocated: u64,
        state: StoragePoolState,
    ) -> Id<StoragePool> {
        self.store
            .create(&StoragePool {
                scope,
                cluster_id: cluster,
                disk_size_total: total,
                disk_size_allocated: allocated,
                state,
                ..StoragePool::sample(&self.f)
            })
            .await
            .unwrap()
            .value
            .id
    }

    /// A root-only request for a new VM named `name`, anywhere in the zone.
    pub fn request(&self, name: &str) -> AllocateVolumes {
        AllocateVolumes {
            vm_id: Id::<Vm>::new().to_string(),
            vm_name: name.into(),
            account_id: self.f.account.to_string(),
            zone_id: self.f.zone.to_string(),
            template_id: self.template.to_string(),
            root_disk_size_gb: None,
            disk_offering_id: None,
            size_gb: None,
            cluster_id: None,
        }
    }

    pub async fn allocated(&self, pool: Id<StoragePool>) -> u64 {
        self.store
            .get(pool)
            .await
            .unwrap()
            .unwrap()
            .value
            .disk_size_allocated
    }

    pub async fn volume_count(&self) -> u64 {
        self.store.count::<Volume>(&Index::All).await.unwrap()
    }
}
