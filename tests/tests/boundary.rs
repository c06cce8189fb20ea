//! The runner's boundary is its own Unix user: only that user can invoke a
//! function, play an instance's runtime, read the runner's status, write to
//! the Consul stand-in, or read the root admin's keys. Any other local user
//! reaches the same TCP ports, so every one of them asks for a secret that
//! only the runner's user can read (a 0600 file in a 0700 `STRATUS_HOME`, or
//! an instance's own environment).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use stratus_tests::cloudstack::Platform;
use stratus_tests::{Runner, RunnerOptions, TestEnv, diag_manifest, root};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Whether user `nobody` can read `path`; None when this test cannot switch
/// users (it is not root), or switching does not work here.
fn nobody_can_read(path: &Path) -> Option<bool> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let as_nobody = |p: &Path| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(p)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()
            .map(|s| s.success())
    };
    // The control: nobody reads a world-readable file.
    if as_nobody(Path::new("/etc/hostname")) != Some(true) {
        return None;
    }
    as_nobody(path)
}

fn assert_private(path: &Path) {
    if let Some(readable) = nobody_can_read(path) {
        assert!(!readable, "user nobody can read {}", path.display());
    }
}

fn diag_runner(env: &TestEnv) -> Runner {
    Runner::start(
        env,
        RunnerOptions {
            manifest: diag_manifest(|_| {}),
            topology: None,
            extra_args: vec![],
        },
    )
}

fn noop_event() -> Value {
    serde_json::from_slice(&std::fs::read(root().join("events/rmq/diag.noop.json")).unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_invoke_api_and_the_status_need_the_runners_token() {
    let env = TestEnv::new("boundary-invoke");
    let runner = diag_runner(&env);
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/2015-03-31/functions/diag/invocations",
        runner.runtime_api
    );
    let event = noop_event();
    let without = http.post(&url).json(&event).send().await.unwrap();
    assert_eq!(without.status(), 403, "an invocation without the token");
    let wrong = http
        .post(&url)
        .bearer_auth("f".repeat(64))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403, "an invocation with a wrong token");
    let status = http
        .get(format!("http://{}/local/status", runner.runtime_api))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 403, "the status without the token");
    // Nothing ran for them.
    assert_eq!(runner.function("diag").await["invocations"], 0);

    // The runner's user has the token, in a file only it can read.
    let right = runner.invoke("diag", &event).await;
    assert_eq!(right.status(), 200);
    assert_eq!(
        right.json::<Value>().await.unwrap(),
        json!({"handled": 1, "retried": 0, "parked": 0})
    );
    assert_eq!(mode(&env.home), 0o700, "STRATUS_HOME");
    let address = env.home.join("local-runner.json");
    assert_eq!(mode(&address), 0o600, "local-runner.json");
    assert_private(&address);
    // The token is in no log line.
    assert!(!runner.log().contains(runner.token.as_deref().unwrap()));
}

/// `stratus-local invoke` and `status` find the token themselves.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_status_uses_the_token() {
    let env = TestEnv::new("boundary-cli");
    let _runner = diag_runner(&env);
    let out = std::process::Command::new(stratus_tests::bin_dir().join("stratus-local"))
        .args(["status", "--json"])
        .envs(env.config.to_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["functions"][0]["function"], "diag");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instances_runtime_api_needs_its_secret() {
    let env = TestEnv::new("boundary-runtime");
    let runner = diag_runner(&env);
    let event = noop_event();
    // Instance 1 runs and waits in `/next` for its next event.
    assert_eq!(runner.invoke("diag", &event).await.status(), 200);
    runner
        .wait_for("an idle instance", Duration::from_secs(10), |s| {
            s["functions"][0]["instances"][0]["state"] == "idle"
        })
        .await;
    let http = reqwest::Client::new();
    let base = format!("http://{}/fn/diag/1", runner.runtime_api);
    let guess = "0".repeat(32);
    // Another user plays its runtime: without the instance's secret, or with a guess.
    for next in [
        format!("{base}/2018-06-01/runtime/invocation/next"),
        format!("{base}/{guess}/2018-06-01/runtime/invocation/next"),
    ] {
        let answer = tokio::time::timeout(Duration::from_secs(5), http.get(&next).send())
            .await
            .unwrap_or_else(|_| panic!("{next}: taken as the instance's long poll"))
            .unwrap();
        assert_eq!(answer.status(), 403, "{next}");
    }
    for post in [
        format!("{base}/2018-06-01/runtime/invocation/forged/response"),
        format!("{base}/{guess}/2018-06-01/runtime/invocation/forged/error"),
        format!("{base}/{guess}/2018-06-01/runtime/init/error"),
    ] {
        let answer = http.post(&post).body("{}").send().await.unwrap();
        assert_eq!(answer.status(), 403, "{post}");
    }
    // The instance itself, which has its secret, still serves.
    let again = runner.invoke("diag", &event).await;
    assert_eq!(again.status(), 200);
    assert!(again.headers().get("x-amz-function-error").is_none());
    let f = runner.function("diag").await;
    assert_eq!(
        (f["invocations"].as_u64(), f["errors"].as_u64()),
        (Some(2), Some(0))
    );
    // Its secret is in no log line: the runner's log shows no runtime URL.
    assert!(!runner.log().contains("/fn/diag/1/"), "{}", runner.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_answers_no_secret_and_the_keys_stay_private() {
    let env = TestEnv::new("boundary-keys");
    let p = Platform::start(&env);
    let ini = env.home.join("cloudstack.ini");
    // The first start's answer went to the log: no key in it.
    let log = p.runner.log();
    assert!(!log.contains(&p.secret), "the secret key is in the log");
    assert!(!log.contains(&p.key), "the API key is in the log");

    // Invoked again, through the authorised path, it answers without a secret.
    let again = p
        .runner
        .invoke("bootstrap", &json!({ "endpoint": p.endpoint }))
        .await;
    assert_eq!(again.status(), 200);
    assert!(again.headers().get("x-amz-function-error").is_none());
    let text = again.text().await.unwrap();
    assert!(!text.contains(&p.secret), "the secret key in {text}");
    assert!(!text.contains(&p.key), "the API key in {text}");
    assert!(!text.contains("password"), "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["created"], 0, "{answer}");
    assert_eq!(answer["ini"], ini.display().to_string());
    // The keys are where they were, only the runner's user can read them, and they still work.
    let text = std::fs::read_to_string(&ini).unwrap();
    assert!(text.contains(&format!("secret = {}", p.secret)));
    assert_eq!(mode(&ini), 0o600, "cloudstack.ini");
    assert_eq!(mode(&env.home), 0o700, "STRATUS_HOME");
    assert_private(&ini);
    // The store holds every key too.
    assert_private(&env.home.join("stratus.db"));
    let (code, zones) = p.get(&[("command", "listZones")]).await;
    assert_eq!(code, 200, "{zones}");
}
