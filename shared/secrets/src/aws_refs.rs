//! Settings kept in AWS rather than in a function's environment: on Lambda a
//! function's environment is readable by whoever may read its configuration,
//! so the secrets among its settings arrive as references, resolved once at
//! start ([`config_from_env`]):
//!
//! - `CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN` and `STRATUS_SECRET_KEY` may be
//!   `ssm:NAME`: the value of that SSM parameter (a SecureString is decrypted);
//! - `STRATUS_AMQP_CREDENTIALS=secretsmanager:ARN` names a Secrets Manager
//!   secret `{"username": ..., "password": ...}` (the one the Amazon MQ event
//!   source mappings use), put into `STRATUS_AMQP_URL`.
//!
//! A process with no reference (the local runner, a developer's shell) makes
//! no AWS call at all. Every call is bounded by [`CALL_TIMEOUT`]; an error
//! names the variable and the reference, never a value.

use std::collections::BTreeMap;
use std::time::Duration;

use stratus_contracts::config::{
    Config, ConfigError, ENV_AMQP_CREDENTIALS, ENV_AMQP_URL, ENV_CONSUL_HTTP_ADDR,
    ENV_CONSUL_HTTP_TOKEN, ENV_SECRET_KEY,
};

/// The longest one call to SSM, Secrets Manager or KMS may take. The calls
/// run at a cold start, in the function's init phase: Lambda gives it 10 s,
/// and runs an init that overran again within the invocation's timeout.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The variables whose value may be an `ssm:` reference.
pub const SSM_RESOLVED: &[&str] = &[ENV_CONSUL_HTTP_ADDR, ENV_CONSUL_HTTP_TOKEN, ENV_SECRET_KEY];

/// Names the variable holding the KMS key that makes the secret key's data
/// key when its parameter is missing (the bootstrap's `secret-key-create`).
pub const ENV_KMS_KEY_ID: &str = "STRATUS_KMS_KEY_ID";

#[derive(thiserror::Error)]
pub enum RefError {
    #[error("{variable}: {message}")]
    Invalid {
        variable: &'static str,
        message: String,
    },
    #[error("{variable}={reference}: {message}")]
    Lookup {
        variable: &'static str,
        reference: String,
        message: String,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// As its message: a process that fails at start prints its error's `Debug`.
impl std::fmt::Debug for RefError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// What the references are read from: AWS, or a table in tests of the logic.
pub trait Lookups {
    /// An SSM parameter's value, decrypted; `None` when it does not exist.
    fn parameter(
        &self,
        name: &str,
    ) -> impl std::future::Future<Output = Result<Option<String>, String>> + Send;
    /// A Secrets Manager secret's string value.
    fn secret(&self, arn: &str)
    -> impl std::future::Future<Output = Result<String, String>> + Send;
}

/// Whether the environment holds any reference (so whether AWS is needed).
pub fn has_references(env: &BTreeMap<String, String>) -> bool {
    env.contains_key(ENV_AMQP_CREDENTIALS)
        || SSM_RESOLVED
            .iter()
            .any(|v| env.get(*v).is_some_and(|x| x.starts_with("ssm:")))
}

/// Replaces every reference in `env` by what it names.
pub async fn resolve(
    mut env: BTreeMap<String, String>,
    aws: &impl Lookups,
) -> Result<BTreeMap<String, String>, RefError> {
    for variable in SSM_RESOLVED {
        let Some(name) = env.get(*variable).and_then(|v| v.strip_prefix("ssm:")) else {
            continue;
        };
        let name = name.to_string();
        if name.is_empty() {
            return Err(RefError::Invalid {
                variable,
                message: "ssm: needs a parameter name".into(),
            });
        }
        let lookup = |message: String| RefError::Lookup {
            variable,
            reference: format!("ssm:{name}"),
            message,
        };
        let value = aws
            .parameter(&name)
            .await
            .map_err(lookup)?
            .ok_or_else(|| lookup("no such parameter".into()))?;
        env.insert(variable.to_string(), value);
    }
    if let Some(reference) = env.remove(ENV_AMQP_CREDENTIALS) {
        let variable = ENV_AMQP_CREDENTIALS;
        let Some(arn) = reference
            .strip_prefix("secretsmanager:")
            .filter(|a| !a.is_empty())
        else {
            return Err(RefError::Invalid {
                variable,
                message: "expected secretsmanager:SECRET_ARN".into(),
            });
        };
        let lookup = |message: String| RefError::Lookup {
            variable,
            reference: reference.clone(),
            message,
        };
        let text = aws.secret(arn).await.map_err(lookup)?;
        #[derive(serde::Deserialize)]
        struct Credentials {
            username: String,
            password: String,
        }
        let c: Credentials = serde_json::from_str(&text)
            .map_err(|_| lookup("the secret is not JSON {\"username\", \"password\"}".into()))?;
        let url = env.get(ENV_AMQP_URL).cloned().unwrap_or_default();
        env.insert(
            ENV_AMQP_URL.to_string(),
            with_credentials(&url, &c.username, &c.password)?,
        );
    }
    Ok(env)
}

/// `amqps://host:5671` with `user:password@` put after the scheme, both
/// percent-encoded as a URI's user information must be.
fn with_credentials(url: &str, user: &str, password: &str) -> Result<String, RefError> {
    let invalid = |message: &str| RefError::Invalid {
        variable: ENV_AMQP_URL,
        message: message.into(),
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        invalid("STRATUS_AMQP_CREDENTIALS needs STRATUS_AMQP_URL=amqps://HOST:PORT")
    })?;
    if rest.contains('@') {
        return Err(invalid(
            "carries credentials, and STRATUS_AMQP_CREDENTIALS gives them too: keep one",
        ));
    }
    Ok(format!(
        "{scheme}://{}:{}@{rest}",
        encode(user),
        encode(password)
    ))
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The process's configuration, with its references resolved: what every
/// function and host agent reads at start.
pub async fn config_from_env() -> Result<Config, RefError> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let env = if has_references(&env) {
        resolve(env, &Aws::load().await).await?
    } else {
        env
    };
    Ok(Config::from_lookup(|k| env.get(k).cloned())?)
}

/// The configuration in `env`, its references resolved with clients the
/// caller already has (the bootstrap, which uses them again).
pub async fn config_from(env: BTreeMap<String, String>, aws: &Aws) -> Result<Config, RefError> {
    let env = resolve(env, aws).await?;
    Ok(Config::from_lookup(|k| env.get(k).cloned())?)
}

/// The AWS clients the references are read with (region and credentials
/// from the environment, as on Lambda).
pub struct Aws {
    config: aws_config::SdkConfig,
}

impl Aws {
    pub async fn load() -> Self {
        Self {
            config: aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await,
        }
    }

    /// Makes the secret key's data key when `STRATUS_SECRET_KEY=ssm:NAME`
    /// names a parameter that does not exist yet and `STRATUS_KMS_KEY_ID` is
    /// set: KMS makes a 256-bit data key and gives back only its encrypted
    /// form, which is stored as `kms:<CiphertextBlob>` (not a secret: only
    /// KMS can open it). Returns whether it made one. Two callers at once
    /// are safe: the second's write is refused and it uses the first's.
    pub async fn ensure_secret_key(
        &self,
        env: &BTreeMap<String, String>,
    ) -> Result<bool, RefError> {
        let (Some(name), Some(key)) = (
            env.get(ENV_SECRET_KEY).and_then(|v| v.strip_prefix("ssm:")),
            env.get(ENV_KMS_KEY_ID),
        ) else {
            return Ok(false);
        };
        let lookup = |message: String| RefError::Lookup {
            variable: ENV_SECRET_KEY,
            reference: format!("ssm:{name}"),
            message,
        };
        if self.parameter(name).await.map_err(lookup)?.is_some() {
            return Ok(false);
        }
        let made = bounded(
            "KMS GenerateDataKeyWithoutPlaintext",
            aws_sdk_kms::Client::new(&self.config)
                .generate_data_key_without_plaintext()
                .key_id(key)
                .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
                .encryption_context(crate::KMS_CONTEXT.0, crate::KMS_CONTEXT.1)
                .send(),
            |e| aws_sdk_kms::error::DisplayErrorContext(e).to_string(),
        )
        .await
        .map_err(lookup)?;
        let blob = made
            .ciphertext_blob
            .ok_or_else(|| lookup("KMS answered no CiphertextBlob".into()))?;
        use base64::Engine;
        let value = format!(
            "kms:{}",
            base64::engine::general_purpose::STANDARD.encode(blob.as_ref())
        );
        let put = bounded_optional(
            "SSM PutParameter",
            aws_sdk_ssm::Client::new(&self.config)
                .put_parameter()
                .name(name)
                .value(value)
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .description("Stratus: the KMS-encrypted data key that seals secrets at rest")
                .overwrite(false)
                .send(),
            |e| {
                matches!(
                    e.as_service_error(),
                    Some(aws_sdk_ssm::operation::put_parameter::PutParameterError::ParameterAlreadyExists(_))
                )
            },
            |e| aws_sdk_ssm::error::DisplayErrorContext(e).to_string(),
        )
        .await
        .map_err(lookup)?;
        // None: another caller made it first, and its key is the one kept.
        Ok(put.is_some())
    }

    /// Writes a secret's value. The request token (the version's id, which
    /// more principals may see than the value) is derived from `version`, a
    /// non-secret text that changes whenever the value does, so writing the
    /// same value again makes no new version.
    pub async fn put_secret(&self, arn: &str, value: &str, version: &str) -> Result<(), String> {
        use sha2::Digest;
        let token: String = sha2::Sha256::digest(version.as_bytes())
            .iter()
            .take(24)
            .map(|b| format!("{b:02x}"))
            .collect();
        bounded(
            "Secrets Manager PutSecretValue",
            aws_sdk_secretsmanager::Client::new(&self.config)
                .put_secret_value()
                .secret_id(arn)
                .secret_string(value)
                .client_request_token(token)
                .send(),
            |e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
        )
        .await
        .map(|_| ())
    }
}

impl Lookups for Aws {
    async fn parameter(&self, name: &str) -> Result<Option<String>, String> {
        let answer = bounded_optional(
            "SSM GetParameter",
            aws_sdk_ssm::Client::new(&self.config)
                .get_parameter()
                .name(name)
                .with_decryption(true)
                .send(),
            |e| {
                matches!(
                    e.as_service_error(),
                    Some(
                        aws_sdk_ssm::operation::get_parameter::GetParameterError::ParameterNotFound(
                            _
                        )
                    )
                )
            },
            |e| aws_sdk_ssm::error::DisplayErrorContext(e).to_string(),
        )
        .await?;
        Ok(answer.and_then(|a| a.parameter).and_then(|p| p.value))
    }

    async fn secret(&self, arn: &str) -> Result<String, String> {
        let answer = bounded(
            "Secrets Manager GetSecretValue",
            aws_sdk_secretsmanager::Client::new(&self.config)
                .get_secret_value()
                .secret_id(arn)
                .send(),
            |e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
        )
        .await?;
        answer
            .secret_string
            .ok_or_else(|| "the secret has no string value".to_string())
    }
}

/// One AWS call, given up after [`CALL_TIMEOUT`]; the outer error is the
/// call's failure, described, unless `keep` picks it out as an answer.
pub(crate) async fn bounded<T, E>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
    describe: impl FnOnce(E) -> String,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", describe(e))),
        Err(_) => Err(format!(
            "{what}: no answer within {} s",
            CALL_TIMEOUT.as_secs()
        )),
    }
}

/// Like [`bounded`], but a failure `absent` recognises is `Ok(None)`.
async fn bounded_optional<T, E>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
    absent: impl FnOnce(&E) -> bool,
    describe: impl FnOnce(E) -> String,
) -> Result<Option<T>, String> {
    let mut missing = false;
    let answer = bounded(what, call, |e| {
        missing = absent(&e);
        describe(e)
    })
    .await;
    match answer {
        Ok(v) => Ok(Some(v)),
        Err(_) if missing => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lookups' logic over a fixed table (the AWS calls themselves are
    /// exercised against moto's server in tests/tests/aws_refs.rs).
    struct Table(BTreeMap<String, String>);

    impl Lookups for Table {
        async fn parameter(&self, name: &str) -> Result<Option<String>, String> {
            Ok(self.0.get(&format!("ssm:{name}")).cloned())
        }
        async fn secret(&self, arn: &str) -> Result<String, String> {
            self.0
                .get(&format!("sm:{arn}"))
                .cloned()
                .ok_or_else(|| "ResourceNotFoundException".to_string())
        }
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn references_are_replaced_and_plain_values_kept() {
        let aws = Table(env(&[
            ("ssm:/s/consul/addr", "10.0.0.5:8500"),
            ("ssm:/s/consul/token", "t0ken-s3cret"),
            ("ssm:/s/secret-key", "kms:AQIDBA=="),
            (
                "sm:arn:broker",
                r#"{"username":"stratus","password":"p@ss:w/rd"}"#,
            ),
        ]));
        let resolved = resolve(
            env(&[
                ("CONSUL_HTTP_ADDR", "ssm:/s/consul/addr"),
                ("CONSUL_HTTP_TOKEN", "ssm:/s/consul/token"),
                ("STRATUS_SECRET_KEY", "ssm:/s/secret-key"),
                ("STRATUS_AMQP_URL", "amqps://b-1.mq.example:5671"),
                ("STRATUS_AMQP_CREDENTIALS", "secretsmanager:arn:broker"),
                ("STRATUS_AMQP_VHOST", "ssm:not-resolved-here"),
            ]),
            &aws,
        )
        .await
        .unwrap();
        assert!(has_references(&env(&[("STRATUS_AMQP_CREDENTIALS", "x")])));
        assert!(!has_references(&env(&[(
            "CONSUL_HTTP_ADDR",
            "127.0.0.1:8500"
        )])));
        let config = Config::from_lookup(|k| resolved.get(k).cloned()).unwrap();
        assert_eq!(config.consul_http_addr.as_deref(), Some("10.0.0.5:8500"));
        assert_eq!(
            config.consul_http_token.as_ref().map(|t| t.expose()),
            Some("t0ken-s3cret")
        );
        assert_eq!(config.secret_key, SecretKeySourceKms("AQIDBA=="));
        assert_eq!(
            config.amqp_uri(),
            "amqps://stratus:p%40ss%3Aw%2Frd@b-1.mq.example:5671/ssm%3Anot-resolved-here?heartbeat=10"
        );
        assert!(!resolved.contains_key("STRATUS_AMQP_CREDENTIALS"));
    }

    #[allow(non_snake_case)]
    fn SecretKeySourceKms(blob: &str) -> stratus_contracts::config::SecretKeySource {
        stratus_contracts::config::SecretKeySource::Kms(blob.into())
    }

    #[tokio::test]
    async fn a_missing_reference_names_the_variable_not_a_value() {
        let aws = Table(env(&[("sm:arn:bad", "password-only-s3cret")]));
        let e = resolve(env(&[("CONSUL_HTTP_TOKEN", "ssm:/missing")]), &aws)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(e, "CONSUL_HTTP_TOKEN=ssm:/missing: no such parameter");
        let e = resolve(
            env(&[
                ("STRATUS_AMQP_URL", "amqps://h:5671"),
                ("STRATUS_AMQP_CREDENTIALS", "secretsmanager:arn:bad"),
            ]),
            &aws,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "STRATUS_AMQP_CREDENTIALS=secretsmanager:arn:bad: the secret is not JSON"
            ),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        for (url, reference, want) in [
            (
                "amqps://u:p@h:5671",
                "secretsmanager:arn:x",
                "carries credentials",
            ),
            ("amqps://h:5671", "arn:x", "expected secretsmanager:"),
        ] {
            let e = resolve(
                env(&[
                    ("STRATUS_AMQP_URL", url),
                    ("STRATUS_AMQP_CREDENTIALS", reference),
                ]),
                &Table(env(&[("sm:arn:x", r#"{"username":"a","password":"b"}"#)])),
            )
            .await
            .unwrap_err()
            .to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
