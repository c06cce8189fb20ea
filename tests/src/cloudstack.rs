//! The platform as CloudStack users meet it: the real local runner with the
//! real manifest (API, bootstrap, relay), the `cs` client from PyPI, and a
//! signed-request client of our own for what `cs` cannot send.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::{Runner, RunnerOptions, TestEnv, root};

/// The repository's manifest, with the bootstrap's zone file made absolute
/// (the test's manifest lives in its own home).
pub fn platform_manifest() -> Value {
    let text = std::fs::read_to_string(root().join("infra/manifest.json")).unwrap();
    let mut m: Value = serde_json::from_str(&text).unwrap();
    for f in m["functions"].as_array_mut().unwrap() {
        for t in f["triggers"].as_array_mut().unwrap() {
            if let Some(file) = t["event"]["zone_file"].as_str() {
                t["event"]["zone_file"] =
                    Value::String(root().join("infra").join(file).display().to_string());
            }
        }
    }
    m
}

/// The whole platform, bootstrapped; the root admin's keys from its `cloudstack.ini`.
pub struct Platform {
    pub runner: Runner,
    pub endpoint: String,
    pub key: String,
    pub secret: String,
    /// A `cloudstack.ini` for `cs`, polling every 0.2 s.
    pub ini: PathBuf,
}

impl Platform {
    pub fn start(env: &TestEnv) -> Self {
        Self::start_with(env, |_| {})
    }

    /// Starts the platform with the manifest changed by `edit` (extra environment, say).
    pub fn start_with(env: &TestEnv, edit: impl FnOnce(&mut Value)) -> Self {
        let mut manifest = platform_manifest();
        edit(&mut manifest);
        let runner = Runner::start(
            env,
            RunnerOptions {
                manifest,
                topology: None,
                extra_args: vec![],
            },
        );
        let written = env.home.join("cloudstack.ini");
        let text = std::fs::read_to_string(&written)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", written.display(), runner.log()));
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} = ")))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .to_string()
        };
        let (endpoint, key, secret) = (field("endpoint"), field("key"), field("secret"));
        assert_eq!(
            endpoint,
            format!("http://{}/client/api", runner.gateway.as_deref().unwrap())
        );
        let ini = env.home.join("cs-test.ini");
        std::fs::write(&ini, format!("{text}poll_interval = 0.2\ntimeout = 30\n")).unwrap();
        Platform {
            runner,
            endpoint,
            key,
            secret,
            ini,
        }
    }

    /// Runs the real `cs` CLI; its JSON output, or the error text it printed.
    pub fn cs(&self, args: &[&str]) -> Result<Value, String> {
        self.cs_with(&self.ini, args)
    }

    pub fn cs_with(&self, ini: &std::path::Path, args: &[&str]) -> Result<Value, String> {
        let out = Command::new(root().join(".venv/bin/cs"))
            .args(args)
            .env("CLOUDSTACK_CONFIG", ini)
            .env_remove("CLOUDSTACK_ENDPOINT")
            .env_remove("CLOUDSTACK_KEY")
            .env_remove("CLOUDSTACK_SECRET")
            .current_dir(ini.parent().unwrap())
            .output()
            .expect("cs runs (scripts/test installs it into .venv)");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stdout}"))
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// A signed GET with the admin's keys: the status and the JSON body.
    pub async fn get(&self, params: &[(&str, &str)]) -> (u16, Value) {
        self.get_as(&self.key, &self.secret, params).await
    }

    pub async fn get_as(&self, key: &str, secret: &str, params: &[(&str, &str)]) -> (u16, Value) {
        self.raw_get(&Self::signed(key, secret, params)).await
    }

    /// The status of a signed GET with the admin's keys, whatever the body.
    pub async fn status_of(&self, params: &[(&str, &str)]) -> u16 {
        let query = Self::signed(&self.key, &self.secret, params);
        reqwest::get(format!("{}?{query}", self.endpoint))
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A signed query string (v3, expiring in 10 minutes unless `params` says otherwise).
    pub fn signed(key: &str, secret: &str, params: &[(&str, &str)]) -> String {
        let mut pairs: Vec<(String, String)> = vec![
            ("apiKey".into(), key.into()),
            ("response".into(), "json".into()),
        ];
        if !params
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("expires"))
        {
            pairs.push(("signatureVersion".into(), "3".into()));
            let expires = chrono::Utc::now() + chrono::Duration::minutes(10);
            pairs.push((
                "expires".into(),
                expires.format("%Y-%m-%dT%H:%M:%S%z").to_string(),
            ));
        }
        pairs.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        stratus_cloudstack::signature::signed_query(&pairs, secret)
    }

    /// A GET with this exact query string.
    pub async fn raw_get(&self, query: &str) -> (u16, Value) {
        let r = reqwest::get(format!("{}?{query}", self.endpoint))
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}, body not JSON ({e}): {text}"));
        (status, body)
    }
}

/// Sets `key=value` in the environment of function `function` in a manifest.
pub fn set_env(manifest: &mut Value, function: &str, key: &str, value: &str) {
    let f = manifest["functions"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == function)
        .unwrap_or_else(|| panic!("no function {function}"));
    if f.get("environment").is_none() {
        f["environment"] = serde_json::json!({});
    }
    f["environment"][key] = Value::String(value.into());
}

/// A user account made through the API (`createAccount`), with its own keys (`registerUserKeys`).
pub struct ApiUser {
    pub account_id: String,
    pub user_id: String,
    pub key: String,
    pub secret: String,
    pub ini: PathBuf,
}

impl Platform {
    pub fn create_user(&self, name: &str) -> ApiUser {
        let created = self
            .cs(&[
                "createAccount",
                &format!("username={name}"),
                "password=pa ss~word",
                &format!("email={name}@example.com"),
                "firstname=Test",
                &format!("lastname={name}"),
                "accounttype=0",
            ])
            .unwrap();
        let account = &created["account"];
        let user_id = account["user"][0]["id"].as_str().unwrap().to_string();
        let keys = self
            .cs(&["registerUserKeys", &format!("id={user_id}")])
            .unwrap();
        let (key, secret) = (
            keys["userkeys"]["apikey"].as_str().unwrap().to_string(),
            keys["userkeys"]["secretkey"].as_str().unwrap().to_string(),
        );
        let ini = self.ini.with_file_name(format!("cs-{name}.ini"));
        std::fs::write(
            &ini,
            format!(
                "[cloudstack]\nendpoint = {}\nkey = {key}\nsecret = {secret}\npoll_interval = 0.2\ntimeout = 30\n",
                self.endpoint
            ),
        )
        .unwrap();
        ApiUser {
            account_id: account["id"].as_str().unwrap().to_string(),
            user_id,
            key,
            secret,
            ini,
        }
    }
}
