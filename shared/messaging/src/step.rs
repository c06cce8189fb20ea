//! A component's side of the saga protocol: run a step's action or undo and
//! answer with its `<component>.step-result` event. The answer's message id
//! derives from the command's, so a handler that runs twice answers once
//! as far as the orchestrator can tell (it ignores a result it no longer
//! waits on anyway).

use serde::Serialize;
use serde_json::Value;
use stratus_contracts::message_types::saga::{Outcome, StepRef, StepResult};

use crate::envelope::Envelope;
use crate::harness::{Effects, HandlerError, emit};

/// How a step's action or undo failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The step fails, and the saga undoes what it did: CloudStack's error
    /// code (431, 533, 530, ...) and the text the job fails with.
    #[error("step failed ({code}): {text}")]
    Failed { code: u16, text: String },
    /// Try the message again later (a store conflict, a dependency down).
    #[error("transient: {0}")]
    Transient(String),
}

impl StepError {
    pub fn failed(code: u16, text: impl Into<String>) -> Self {
        StepError::Failed {
            code,
            text: text.into(),
        }
    }
    pub fn internal(text: impl Into<String>) -> Self {
        Self::failed(530, text)
    }
    pub fn transient(e: impl std::fmt::Display) -> Self {
        StepError::Transient(e.to_string())
    }
}

/// The result event for `saga`'s step, answering `cause`, published as
/// `result_type` (e.g. `compute.step-result`). A transient error is not
/// answered: the message is retried.
pub fn reply<T: Serialize>(
    cause: &Envelope,
    result_type: &str,
    saga: StepRef,
    result: Result<T, StepError>,
) -> Result<Effects, HandlerError> {
    let outcome = match result {
        Ok(output) => Outcome::Done {
            output: serde_json::to_value(output).unwrap_or(Value::Null),
        },
        Err(StepError::Failed { code, text }) => {
            tracing::warn!(saga_id = %saga.saga_id, step = %saga.step, undo = saga.undo, code, text = %text, "step failed");
            Outcome::Failed { code, text }
        }
        Err(StepError::Transient(e)) => return Err(HandlerError::Transient(e)),
    };
    let body = StepResult { saga, outcome };
    Ok(vec![emit(cause, "step-result", result_type, &body)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_contracts::message_types::saga::Step;
    use stratus_contracts::message_types::{compute, saga};

    #[test]
    fn an_answer_is_the_same_message_each_time() {
        let step = Step {
            saga: saga::StepRef {
                saga_id: "s".into(),
                step: "reserve-capacity".into(),
                undo: false,
            },
            input: compute::ReleaseCapacity { vm_id: "v".into() },
        };
        let env = Envelope::new(compute::RELEASE_CAPACITY, &step).with_job_id("j");
        let a = reply(
            &env,
            compute::STEP_RESULT,
            step.saga.clone(),
            Ok(Value::Null),
        )
        .unwrap();
        let b = reply(
            &env,
            compute::STEP_RESULT,
            step.saga.clone(),
            Ok(Value::Null),
        )
        .unwrap();
        assert_eq!(a[0].properties.message_id(), b[0].properties.message_id());
        assert_eq!(a[0].exchange, "stratus.events");
        let failed: Result<Value, _> = Err(StepError::failed(533, "no room"));
        let c = reply(&env, compute::STEP_RESULT, step.saga.clone(), failed).unwrap();
        let body: StepResult = serde_json::from_slice(&c[0].body).unwrap();
        assert_eq!(
            body.outcome,
            Outcome::Failed {
                code: 533,
                text: "no room".into()
            }
        );
        assert!(
            reply::<Value>(
                &env,
                compute::STEP_RESULT,
                step.saga,
                Err(StepError::transient("x"))
            )
            .is_err()
        );
    }
}
