//! The orchestrator's scheduled sweep: it fails the steps that passed their
//! deadline (their sagas then undo what they did, so every job ends), and
//! starts the expunge of every VM that has been `Error` or `Destroyed` for
//! longer than `expunge.delay`, or left `Expunging` by a failed expunge for
//! longer than `saga.step.timeout` (as CloudStack's expunge task retries).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use stratus_contracts::settings::names;
use stratus_messaging::{Envelope, HandlerError};
use stratus_model::*;
use stratus_store::Index;
use uuid::Uuid;

use crate::saga::Engine;
use crate::vm;

/// What one sweep did.
#[derive(Debug, Default, Serialize)]
pub struct Sweep {
    pub sagas_in_flight: usize,
    pub steps_timed_out: usize,
    pub expunges_started: usize,
    pub errors: usize,
}

/// The id of the expunge saga the sweep starts for `vm` in its current state
/// (a VM destroyed again later gets a new one).
fn expunge_saga_id(vm: &Vm) -> Id<Saga> {
    const NS: Uuid = Uuid::from_u128(0x8c1e_0b7a_52d4_4e19_a3f6_0000_0000_e59e);
    let since = vm.state_changed.unwrap_or(vm.created).timestamp_millis();
    Id::derived(NS, &format!("expunge/{}/{since}", vm.id))
}

pub async fn sweep(engine: &Engine, now: DateTime<Utc>) -> Result<Sweep, HandlerError> {
    let store = &engine.store;
    let transient = |e: stratus_store::StoreError| HandlerError::Transient(e.to_string());
    let mut out = Sweep::default();
    for status in [SagaStatus::Running, SagaStatus::Unwinding] {
        let sagas = store
            .walk::<Saga>(&Index::State(state_name(&status)))
            .await
            .map_err(transient)?;
        out.sagas_in_flight += sagas.len();
        for saga in sagas {
            let id = saga.value.id;
            match engine.expire(saga, now).await {
                Ok(true) => out.steps_timed_out += 1,
                Ok(false) => {}
                Err(e) => {
                    out.errors += 1;
                    tracing::warn!(saga_id = %id, error = %e, "could not expire a step; the next sweep tries again");
                }
            }
        }
    }
    let delay = engine.settings.integer(names::expunge_delay());
    let retry = engine.settings.integer(names::saga_step_timeout());
    for state in [VmState::Error, VmState::Destroyed, VmState::Expunging] {
        let vms = store
            .walk::<Vm>(&Index::State(state_name(&state)))
            .await
            .map_err(transient)?;
        for v in vms
            .into_iter()
            .filter(|v| vm::expunge_due(&v.value, delay, retry, now))
        {
            let params = vm::remove_params(store, &v.value, true, true)
                .await
                .map_err(transient)?;
            let params =
                serde_json::to_value(params).map_err(|e| HandlerError::Permanent(e.to_string()))?;
            let cause = Envelope::new(
                "vm.expunge-due",
                &json!({ "vm_id": v.value.id.to_string() }),
            );
            match engine
                .start(expunge_saga_id(&v.value), vm::EXPUNGE, params, None, &cause)
                .await
            {
                Ok(()) => out.expunges_started += 1,
                Err(e) => {
                    out.errors += 1;
                    tracing::warn!(vm_id = %v.value.id, error = %e, "could not start the expunge; the next sweep tries again");
                }
            }
        }
    }
    Ok(out)
}
