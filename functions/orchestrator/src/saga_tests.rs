//! The engine's rules that the generic saga tests (tests/tests/sagas.rs) do
//! not reach: a step timing out, a success that comes after its undo, a
//! parked message delivered twice. The components are played by hand: each
//! test answers the commands the engine leaves in the outbox.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use stratus_contracts::message_types::saga::{Outcome, StepRef, StepResult};
use stratus_contracts::message_types::{self as types, Placement};
use stratus_contracts::settings::Defaults;
use stratus_messaging::{Envelope, outbox};
use stratus_model::samples::{Fixture, Sample};
use stratus_model::*;
use stratus_store::sqlite::SqliteStore;
use stratus_store::{Backend, Store, Versioned};

use crate::saga::{Engine, NoFaults, saga_id_for_job};
use crate::vm;

struct World {
    engine: Engine,
    job: Id<AsyncJob>,
    saga: Id<Saga>,
}

async fn world() -> World {
    let store = Arc::new(Store::new(Backend::Sqlite(
        SqliteStore::open_scratch("t_").unwrap(),
    )));
    let f = Fixture::default();
    let zone = store.create(&Zone::sample(&f)).await.unwrap().value;
    let offering = store
        .create(&ServiceOffering::sample(&f))
        .await
        .unwrap()
        .value;
    let template = store.create(&Template::sample(&f)).await.unwrap().value;
    let job = store
        .create(&AsyncJob {
            status: JobStatus::Pending,
            result: None,
            completed: None,
            ..AsyncJob::sample(&f)
        })
        .await
        .unwrap()
        .value;
    let engine = Engine {
        store,
        publisher: None,
        settings: Arc::new(Defaults::default()),
        faults: Arc::new(NoFaults),
    };
    let request = types::vm::Deploy {
        vm_id: Id::<Vm>::new().to_string(),
        name: "web-1".into(),
        display_name: "web-1".into(),
        account_id: f.account.to_string(),
        domain_id: f.domain.to_string(),
        zone_id: zone.id.to_string(),
        service_offering_id: offering.id.to_string(),
        template_id: template.id.to_string(),
        start: true,
        network_ids: vec![],
        ip_address: None,
        keypairs: vec![],
        user_data: None,
        host_id: None,
        root_disk_size_gb: None,
        disk_offering_id: None,
        size_gb: None,
    };
    let params = vm::deploy_params(&engine.store, &request)
        .await
        .unwrap_or_else(|_| panic!("deploy params"));
    let saga = saga_id_for_job(job.id);
    let cause = Envelope::new(types::vm::DEPLOY, &request).with_job_id(job.id.to_string());
    let job_row = engine.store.get(job.id).await.unwrap();
    engine
        .start(
            saga,
            vm::DEPLOY,
            serde_json::to_value(params).unwrap(),
            job_row,
            &cause,
        )
        .await
        .unwrap();
    World {
        engine,
        job: job.id,
        saga,
    }
}

impl World {
    async fn saga(&self) -> Versioned<Saga> {
        self.engine.store.get(self.saga).await.unwrap().unwrap()
    }

    /// The commands waiting in the outbox (taken out of it), as (type, step, undo).
    async fn commands(&self) -> Vec<(String, String, bool)> {
        let rows = self
            .engine
            .store
            .outbox_pending(Duration::ZERO, 100)
            .await
            .unwrap();
        let mut out = vec![];
        for row in rows {
            self.engine.store.outbox_sent(row.id).await.unwrap();
            let env = outbox::envelope_of(&row);
            let body: Value = serde_json::from_slice(&env.body).unwrap();
            out.push((
                env.message_type.clone(),
                body["saga"]["step"].as_str().unwrap().to_string(),
                body["saga"]["undo"].as_bool().unwrap(),
            ));
        }
        out
    }

    async fn answer(&self, step: &str, undo: bool, outcome: Outcome) -> Envelope {
        let result = StepResult {
            saga: StepRef {
                saga_id: self.saga.to_string(),
                step: step.into(),
                undo,
            },
            outcome,
        };
        let env =
            Envelope::new(types::compute::STEP_RESULT, &result).with_job_id(self.job.to_string());
        self.engine.on_result(&env, result).await.unwrap();
        env
    }

    async fn job(&self) -> AsyncJob {
        self.engine
            .store
            .get(self.job)
            .await
            .unwrap()
            .unwrap()
            .value
    }
}

fn done(output: Value) -> Outcome {
    Outcome::Done { output }
}

fn placement() -> Value {
    serde_json::to_value(Placement {
        zone_id: "z".into(),
        pod_id: "p".into(),
        cluster_id: "c".into(),
        host_id: Id::<Host>::new().to_string(),
        host_name: "SimHost-c0-h0".into(),
    })
    .unwrap()
}

#[tokio::test]
async fn a_timed_out_step_is_undone_and_a_late_success_is_undone_again() {
    let w = world().await;
    assert_eq!(
        w.commands().await,
        vec![(
            "network.allocate-nics".into(),
            "allocate-nics".into(),
            false
        )]
    );
    w.answer("allocate-nics", false, done(json!({ "nics": [] })))
        .await;
    assert_eq!(
        w.commands().await,
        vec![(
            "compute.reserve-capacity".into(),
            "reserve-capacity".into(),
            false
        )]
    );
    // Not answered: the sweep finds it past its deadline.
    let late = Utc::now() + chrono::Duration::hours(1);
    assert!(!w.engine.expire(w.saga().await, Utc::now()).await.unwrap());
    assert!(w.engine.expire(w.saga().await, late).await.unwrap());
    assert_eq!(
        w.commands().await,
        vec![(
            "compute.release-capacity".into(),
            "reserve-capacity".into(),
            true
        )]
    );
    w.answer("reserve-capacity", true, done(json!({}))).await;
    assert_eq!(
        w.commands().await,
        vec![("network.release-nics".into(), "allocate-nics".into(), true)]
    );
    w.answer("allocate-nics", true, done(json!({}))).await;
    // Every undo ran: the job failed with the timeout.
    let job = w.job().await;
    assert_eq!((job.status, job.result_code), (JobStatus::Failed, 530));
    assert!(
        job.result.unwrap()["errortext"]
            .as_str()
            .unwrap()
            .contains("timed out"),
    );
    assert_eq!(w.saga().await.value.status, SagaStatus::Failed);
    // The reserve ran after all (it waited in a retry tier): its success
    // gets the undo again, once however often it comes.
    let env = w.answer("reserve-capacity", false, done(placement())).await;
    assert_eq!(
        w.commands().await,
        vec![(
            "compute.release-capacity".into(),
            "reserve-capacity".into(),
            true
        )]
    );
    let result: StepResult = env.body().unwrap();
    let version = w.saga().await.version;
    w.engine.on_result(&env, result).await.unwrap();
    assert_eq!(w.saga().await.version, version);
    assert!(w.commands().await.is_empty());
    // The VM row stays, Error, for the expunge sweep.
    let p: vm::DeployParams = serde_json::from_value(w.saga().await.value.parameters).unwrap();
    let vm_id: Id<Vm> = p.request.vm_id.parse().unwrap();
    let row = w.engine.store.get(vm_id).await.unwrap().unwrap().value;
    assert_eq!((row.state, row.saga_id), (VmState::Error, None));
}

#[tokio::test]
async fn a_parked_message_fails_its_step_once() {
    let w = world().await;
    w.commands().await;
    w.answer("allocate-nics", false, done(json!({ "nics": [] })))
        .await;
    w.commands().await;
    let step = StepRef {
        saga_id: w.saga.to_string(),
        step: "reserve-capacity".into(),
        undo: false,
    };
    let parked = Envelope::new(types::compute::RESERVE_CAPACITY, &json!({}));
    w.engine
        .parked(w.saga().await, Some(&step), "attempts exhausted", &parked)
        .await
        .unwrap();
    let s = w.saga().await;
    assert_eq!(s.value.status, SagaStatus::Unwinding);
    assert_eq!(
        w.commands().await,
        vec![(
            "compute.release-capacity".into(),
            "reserve-capacity".into(),
            true
        )]
    );
    // The same parked message again (its batch was delivered twice): nothing.
    w.engine
        .parked(s.clone(), Some(&step), "attempts exhausted", &parked)
        .await
        .unwrap();
    assert_eq!(w.saga().await.version, s.version);
    // A parked copy of the action while its undo runs: the undo is not failed.
    let other = Envelope::new(types::compute::RESERVE_CAPACITY, &json!({}));
    w.engine
        .parked(w.saga().await, Some(&step), "again", &other)
        .await
        .unwrap();
    let s = w.saga().await.value;
    assert_eq!(s.steps[s.cursor].state, StepState::Undoing);
}
