//! CloudStack's error codes (`ApiErrorCode`), `cserrorcode`s and the exact
//! texts clients match on. The HTTP status of an error is its code.

use serde_json::{Value, json};

/// `ApiErrorCode`. 436 and 437 do not exist; 433 became 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not an `ApiErrorCode`: the servlet's answer to a session request without a command.
    BadRequest = 400,
    Unauthorized = 401,
    MethodNotAllowed = 405,
    ApiLimitExceeded = 429,
    MalformedParameter = 430,
    ParamError = 431,
    UnsupportedAction = 432,
    InternalError = 530,
    AccountError = 531,
    AccountResourceLimit = 532,
    InsufficientCapacity = 533,
    ResourceUnavailable = 534,
    ResourceAllocation = 535,
    ResourceInUse = 536,
    NetworkRuleConflict = 537,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        self as u16
    }
}

/// `cserrorcode` of a `ServerApiException`, by far the most common.
pub const CS_SERVER_API_EXCEPTION: u32 = 9999;
/// `cserrorcode` of an `InvalidParameterValueException`.
pub const CS_INVALID_PARAMETER_VALUE: u32 = 4350;
/// `cserrorcode` of a `PermissionDeniedException`.
pub const CS_PERMISSION_DENIED: u32 = 4365;
/// `cserrorcode` of a `CloudRuntimeException`.
pub const CS_CLOUD_RUNTIME: u32 = 4250;

/// One API error: its code, its `cserrorcode` (absent where CloudStack's
/// servlet answers before any command runs, as for a bad signature), its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {text}", code.code())]
pub struct ApiError {
    pub code: ErrorCode,
    pub cs_code: Option<u32>,
    pub text: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        Self {
            code,
            cs_code: Some(CS_SERVER_API_EXCEPTION),
            text: text.into(),
        }
    }

    pub fn with_cs_code(mut self, cs_code: u32) -> Self {
        self.cs_code = Some(cs_code);
        self
    }

    /// A bad or missing signature, an unknown key, a disabled user or account,
    /// an expired `expires`, API-key access switched off.
    pub fn unverified() -> Self {
        Self {
            code: ErrorCode::Unauthorized,
            cs_code: None,
            text: "unable to verify user credentials and/or request signature".into(),
        }
    }

    /// A stale session, or a session key that does not match.
    pub fn bad_session() -> Self {
        Self {
            code: ErrorCode::Unauthorized,
            cs_code: None,
            text: "unable to verify user credentials".into(),
        }
    }

    /// A command the caller's role may not call.
    pub fn not_available(command: &str) -> Self {
        Self {
            code: ErrorCode::Unauthorized,
            cs_code: None,
            text: format!(
                "The given command '{command}' either does not exist, is not available for user."
            ),
        }
    }

    /// A command that does not exist (answered under `errorresponse`).
    pub fn unknown_command(command: &str) -> Self {
        Self::new(
            ErrorCode::UnsupportedAction,
            format!("Unknown API command: {command}"),
        )
    }

    /// A session request with no `command`.
    pub fn no_command() -> Self {
        Self {
            code: ErrorCode::BadRequest,
            cs_code: None,
            text: "no command specified".into(),
        }
    }

    /// `ApiDispatcher`'s text for a missing required parameter.
    pub fn missing_parameter(command: &str, param: &str) -> Self {
        Self::new(
            ErrorCode::ParamError,
            format!(
                "Unable to execute API command {} due to missing parameter {param}",
                command.to_lowercase()
            ),
        )
    }

    /// `ApiDispatcher`'s text for a value that does not parse as its type.
    pub fn invalid_value(command: &str, param: &str, value: &str) -> Self {
        Self::new(
            ErrorCode::ParamError,
            format!(
                "Unable to execute API command {} due to invalid value {value} for parameter {param}",
                command.to_lowercase()
            ),
        )
    }

    /// The text clients (cloudstack-go, Terraform, egoscale) take as "not
    /// found": a UUID that names no object the caller may see.
    pub fn entity_not_found(command: &str, param: &str, uuid: &str) -> Self {
        Self::new(
            ErrorCode::ParamError,
            format!(
                "Unable to execute API command {} due to invalid value. Invalid parameter {param} value={uuid} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.",
                command.to_lowercase()
            ),
        )
    }

    /// An invalid parameter value, in the caller's words (`InvalidParameterValueException`).
    pub fn invalid_parameter(text: impl Into<String>) -> Self {
        Self::new(ErrorCode::ParamError, text).with_cs_code(CS_INVALID_PARAMETER_VALUE)
    }

    /// Acting on what the caller may not touch (`PermissionDeniedException`).
    pub fn permission_denied(text: impl Into<String>) -> Self {
        Self::new(ErrorCode::AccountError, text).with_cs_code(CS_PERMISSION_DENIED)
    }

    /// A failure of ours, never the caller's.
    pub fn internal(text: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalError, text).with_cs_code(CS_CLOUD_RUNTIME)
    }

    /// The error object inside the envelope.
    pub fn body(&self) -> Value {
        let mut v = json!({
            "uuidList": [],
            "errorcode": self.code.code(),
            "errortext": self.text,
        });
        if let Some(cs) = self.cs_code {
            v["cserrorcode"] = json!(cs);
        }
        v
    }

    /// The `jobresult` of a failed async job.
    pub fn job_result(&self) -> Value {
        json!({ "errorcode": self.code.code(), "errortext": self.text })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_not_found_text_is_the_one_clients_match() {
        let e = ApiError::entity_not_found(
            "listVirtualMachines",
            "id",
            "3c5d5d3e-0000-4000-8000-000000000000",
        );
        assert_eq!(e.code.code(), 431);
        assert!(e.text.contains("Invalid parameter id value=3c5d5d3e-0000-4000-8000-000000000000 due to incorrect long value format, or entity does not exist"));
        assert!(e.text.starts_with(
            "Unable to execute API command listvirtualmachines due to invalid value."
        ));
        assert_eq!(e.body()["cserrorcode"], 9999);
    }

    #[test]
    fn signature_failures_carry_no_cserrorcode() {
        let b = ApiError::unverified().body();
        assert_eq!(
            b,
            json!({"uuidList": [], "errorcode": 401, "errortext": "unable to verify user credentials and/or request signature"})
        );
    }

    #[test]
    fn missing_parameter_text() {
        assert_eq!(
            ApiError::missing_parameter("queryAsyncJobResult", "jobid").text,
            "Unable to execute API command queryasyncjobresult due to missing parameter jobid"
        );
    }
}
