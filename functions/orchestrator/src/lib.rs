//! The orchestration engine's handlers. A job's flow changes state through
//! the data service and ends the job in the same transaction as its last
//! effect, together with the record that this message was handled: a
//! redelivered message finds the job ended (or the record) and does nothing.
//!
//! disableAccount is one step with nothing to undo: the account's state
//! changes and the job succeeds together, or the job fails and nothing changed.
//! The VM jobs are sagas ([`saga`], [`vm`]): deploy, destroy, expunge.

pub mod parked;
pub mod saga;
#[cfg(test)]
mod saga_tests;
pub mod sweep;
pub mod vm;

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};
use stratus_cloudstack::{ApiError, views};
use stratus_contracts::message_types::{self as types, account, saga::StepResult};
use stratus_messaging::{Effects, Envelope, HandlerError, Handlers};
use stratus_model::*;
use stratus_store::{Index, Store, StoreError, Transaction, Versioned};

pub use saga::Engine;

/// The consumer name in handled-message records.
pub const CONSUMER: &str = "orchestrator";

pub fn handlers(engine: Arc<Engine>) -> Handlers {
    let store = engine.store.clone();
    let mut h = Handlers::new().on(
        account::DISABLE,
        move |env: Envelope, body: account::Disable| {
            let store = store.clone();
            async move { disable_account(&store, &env, body).await }
        },
    );
    let e = engine.clone();
    h = h.on(
        types::vm::DEPLOY,
        move |env: Envelope, body: types::vm::Deploy| {
            let e = e.clone();
            async move { deploy(&e, &env, body).await }
        },
    );
    let e = engine.clone();
    h = h.on(
        types::vm::DESTROY,
        move |env: Envelope, body: types::vm::Destroy| {
            let e = e.clone();
            async move { remove(&e, &env, &body.vm_id, body.expunge, false).await }
        },
    );
    let e = engine.clone();
    h = h.on(
        types::vm::EXPUNGE,
        move |env: Envelope, body: types::vm::Expunge| {
            let e = e.clone();
            async move { remove(&e, &env, &body.vm_id, true, true).await }
        },
    );
    for result in [
        types::network::STEP_RESULT,
        types::compute::STEP_RESULT,
        types::storage::STEP_RESULT,
        types::agent::STEP_RESULT,
    ] {
        let e = engine.clone();
        h = h.on(result, move |env: Envelope, body: StepResult| {
            let e = e.clone();
            async move {
                e.on_result(&env, body).await?;
                Ok(Effects::new())
            }
        });
    }
    h
}

/// deployVirtualMachine's job: its saga, started (or continued).
async fn deploy(
    engine: &Engine,
    env: &Envelope,
    body: types::vm::Deploy,
) -> Result<Effects, HandlerError> {
    let store = &engine.store;
    let Some(job) = pending_job(store, env).await? else {
        return Ok(Effects::new());
    };
    let saga_id = saga::saga_id_for_job(job.value.id);
    if store.get(saga_id).await.map_err(transient)?.is_none() {
        match vm::deploy_params(store, &body).await {
            Ok(params) => {
                let params = serde_json::to_value(params)
                    .map_err(|e| HandlerError::Permanent(e.to_string()))?;
                engine
                    .start(saga_id, vm::DEPLOY, params, Some(job), env)
                    .await?;
            }
            Err(saga::StepError::Failed(f)) => {
                return fail_job(store, &job, f).await;
            }
            Err(saga::StepError::Store(e)) => return Err(transient(e)),
        }
    } else {
        engine.resume_by_id(saga_id, env).await?;
    }
    Ok(Effects::new())
}

/// destroyVirtualMachine's or expungeVirtualMachine's job.
async fn remove(
    engine: &Engine,
    env: &Envelope,
    vm_id: &str,
    expunge: bool,
    expunge_only: bool,
) -> Result<Effects, HandlerError> {
    let store = &engine.store;
    let Some(job) = pending_job(store, env).await? else {
        return Ok(Effects::new());
    };
    let command = if expunge_only {
        "expungeVirtualMachine"
    } else {
        "destroyVirtualMachine"
    };
    let saga_id = saga::saga_id_for_job(job.value.id);
    if store.get(saga_id).await.map_err(transient)?.is_some() {
        engine.resume_by_id(saga_id, env).await?;
        return Ok(Effects::new());
    }
    let found = match vm_id.parse::<Id<Vm>>() {
        Ok(id) => store.get(id).await.map_err(transient)?,
        Err(_) => None,
    };
    let Some(found) = found else {
        let e = ApiError::entity_not_found(command, "id", vm_id);
        return fail_job(store, &job, saga::Failure::from_api(e)).await;
    };
    let params = vm::remove_params(store, &found.value, expunge, expunge_only)
        .await
        .map_err(transient)?;
    let params =
        serde_json::to_value(params).map_err(|e| HandlerError::Permanent(e.to_string()))?;
    let kind = if expunge_only {
        vm::EXPUNGE
    } else {
        vm::DESTROY
    };
    engine.start(saga_id, kind, params, Some(job), env).await?;
    Ok(Effects::new())
}

/// Ends a job that failed before its saga could start.
pub(crate) async fn fail_job(
    store: &Store,
    job: &Versioned<AsyncJob>,
    f: saga::Failure,
) -> Result<Effects, HandlerError> {
    let mut tx = Transaction::new();
    let mut done = job.clone();
    done.value.completed = Some(Utc::now());
    done.value.result_type = Some("object".into());
    done.value.status = JobStatus::Failed;
    done.value.result_code = u32::from(f.code);
    done.value.result = Some(f.json());
    tx.update(&done);
    store.transact(tx).await.map_err(transient)?;
    tracing::info!(job_id = %job.value.id, code = f.code, text = %f.text, "job failed before its saga started");
    Ok(Effects::new())
}

fn transient(e: StoreError) -> HandlerError {
    HandlerError::Transient(e.to_string())
}

/// The job this message carries out, if it is still pending.
async fn pending_job(
    store: &Store,
    env: &Envelope,
) -> Result<Option<Versioned<AsyncJob>>, HandlerError> {
    let id: Id<AsyncJob> = env
        .job_id
        .as_deref()
        .and_then(|j| j.parse().ok())
        .ok_or_else(|| HandlerError::Permanent("the message names no job".into()))?;
    // The job is committed before its message is sent, so it exists.
    let job = store
        .get::<AsyncJob>(id)
        .await
        .map_err(transient)?
        .ok_or_else(|| HandlerError::Permanent(format!("job {id} does not exist")))?;
    if job.value.status != JobStatus::Pending {
        tracing::info!(job_id = %id, "job already ended; nothing to do");
        return Ok(None);
    }
    Ok(Some(job))
}

/// Ends `job` in `tx` with a success result or an error.
fn end_job(tx: &mut Transaction, job: &Versioned<AsyncJob>, outcome: Result<Value, ApiError>) {
    let mut done = job.clone();
    done.value.completed = Some(Utc::now());
    done.value.result_type = Some("object".into());
    match outcome {
        Ok(result) => {
            done.value.status = JobStatus::Succeeded;
            done.value.result_code = 0;
            done.value.result = Some(result);
        }
        Err(e) => {
            done.value.status = JobStatus::Failed;
            done.value.result_code = e.code.code() as u32;
            done.value.result = Some(e.job_result());
        }
    }
    tx.update(&done);
}

/// Commits `tx`; a message handled before is a success with no effect.
async fn commit(
    store: &Store,
    tx: Transaction,
    job: Id<AsyncJob>,
) -> Result<Effects, HandlerError> {
    match store.transact(tx).await {
        Ok(()) => {
            tracing::info!(job_id = %job, "job ended");
            Ok(Effects::new())
        }
        Err(e) if e.is_duplicate() => Ok(Effects::new()),
        // Someone else moved the job or the object meanwhile: read again and retry.
        Err(e @ StoreError::Conflict { .. }) => Err(transient(e)),
        Err(e) => Err(transient(e)),
    }
}

async fn disable_account(
    store: &Store,
    env: &Envelope,
    body: account::Disable,
) -> Result<Effects, HandlerError> {
    let Some(job) = pending_job(store, env).await? else {
        return Ok(Effects::new());
    };
    let mut tx = Transaction::new();
    tx.mark_handled(CONSUMER, env.message_id);
    let id: Option<Id<Account>> = body.account_id.parse().ok();
    let found = match id {
        Some(id) => store.get::<Account>(id).await.map_err(transient)?,
        None => None,
    };
    let Some(mut acct) = found else {
        end_job(
            &mut tx,
            &job,
            Err(ApiError::entity_not_found(
                "disableAccount",
                "id",
                &body.account_id,
            )),
        );
        return commit(store, tx, job.value.id).await;
    };
    let target = if body.lock {
        AccountState::Locked
    } else {
        AccountState::Disabled
    };
    if acct.value.state != target {
        acct.value.state = target;
        tx.update(&acct);
    }
    let view = account_view(store, &acct.value).await.map_err(transient)?;
    tx.create(&Event {
        id: Id::new(),
        event_type: "ACCOUNT.DISABLE".into(),
        level: EventLevel::Info,
        state: EventState::Completed,
        description: format!(
            "{} account {}",
            if body.lock { "locking" } else { "disabling" },
            acct.value.name
        ),
        account_id: job.value.account_id,
        resource_type: Some("Account".into()),
        resource_id: Some(acct.value.id.uuid()),
        created: Utc::now(),
    });
    end_job(&mut tx, &job, Ok(json!({ "account": view })));
    commit(store, tx, job.value.id).await
}

async fn account_view(store: &Store, a: &Account) -> Result<Value, StoreError> {
    let domain = store
        .get::<Domain>(a.domain_id)
        .await?
        .map(|d| d.value)
        .ok_or(StoreError::NotFound {
            kind: Domain::KIND,
            id: a.domain_id.uuid(),
        })?;
    let users = store
        .list::<User>(&Index::Account(a.id.uuid()), None, 100)
        .await?;
    let users = users
        .items
        .iter()
        .map(|u| {
            let mut u = u.value.clone();
            if a.state != AccountState::Enabled {
                u.state = a.state;
            }
            views::user(&u, a, &domain, None)
        })
        .collect();
    Ok(views::account(a, &domain, users))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_model::samples::{Fixture, Sample};
    use stratus_store::Backend;
    use stratus_store::sqlite::SqliteStore;

    async fn setup() -> (Arc<Store>, Account, Versioned<AsyncJob>) {
        let store = Arc::new(Store::new(Backend::Sqlite(
            SqliteStore::open_scratch("t_").unwrap(),
        )));
        let f = Fixture::default();
        store
            .create(&Domain {
                id: f.domain,
                ..Domain::sample(&f)
            })
            .await
            .unwrap();
        let account = store.create(&Account::sample(&f)).await.unwrap().value;
        let job = store
            .create(&AsyncJob {
                status: JobStatus::Pending,
                result: None,
                completed: None,
                ..AsyncJob::sample(&f)
            })
            .await
            .unwrap();
        (store, account, job)
    }

    fn message(job: &AsyncJob, account: &str, lock: bool) -> Envelope {
        Envelope::new(
            account::DISABLE,
            &account::Disable {
                account_id: account.into(),
                lock,
            },
        )
        .with_job_id(job.id.to_string())
    }

    #[tokio::test]
    async fn disabling_ends_the_job_once_even_when_the_message_comes_twice() {
        let (store, account, job) = setup().await;
        let env = message(&job.value, &account.id.to_string(), false);
        for _ in 0..2 {
            disable_account(
                &store,
                &env,
                account::Disable {
                    account_id: account.id.to_string(),
                    lock: false,
                },
            )
            .await
            .unwrap();
        }
        let a = store.get(account.id).await.unwrap().unwrap();
        assert_eq!((a.value.state, a.version), (AccountState::Disabled, 2));
        let j = store.get(job.value.id).await.unwrap().unwrap();
        assert_eq!((j.value.status, j.version), (JobStatus::Succeeded, 2));
        assert_eq!(j.value.result.unwrap()["account"]["state"], "disabled");
        assert_eq!(store.count::<Event>(&Index::All).await.unwrap(), 1);
        assert!(store.was_handled(CONSUMER, env.message_id).await.unwrap());
    }

    #[tokio::test]
    async fn an_unknown_account_fails_the_job_with_cloudstacks_error() {
        let (store, _, job) = setup().await;
        let missing = Id::<Account>::new().to_string();
        let env = message(&job.value, &missing, true);
        disable_account(
            &store,
            &env,
            account::Disable {
                account_id: missing.clone(),
                lock: true,
            },
        )
        .await
        .unwrap();
        let j = store.get(job.value.id).await.unwrap().unwrap().value;
        assert_eq!((j.status, j.result_code), (JobStatus::Failed, 431));
        let result = j.result.unwrap();
        assert_eq!(result["errorcode"], 431);
        assert!(result["errortext"].as_str().unwrap().contains(&missing));
    }

    #[tokio::test]
    async fn a_message_without_its_job_is_parked_not_retried() {
        let (store, account, _) = setup().await;
        let env = Envelope::new(
            account::DISABLE,
            &account::Disable {
                account_id: account.id.to_string(),
                lock: false,
            },
        );
        let e = disable_account(
            &store,
            &env,
            account::Disable {
                account_id: account.id.to_string(),
                lock: false,
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(e, HandlerError::Permanent(_)), "{e}");
    }
}
