//! Bad start-up input gets one clear line and a failing exit code.

use std::process::Command;

use stratus_tests::{TestEnv, bin_dir, root};

fn up(env: &TestEnv, args: &[&str], extra_env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(bin_dir().join("stratus-local"))
        .arg("up")
        .args(["--consul", "127.0.0.1:0"])
        .args(args)
        .envs(env.config.to_env())
        .envs(extra_env.iter().copied())
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("stratus-local: error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr:?}"))
}

#[test]
fn a_malformed_manifest_names_the_file_and_field() {
    let env = TestEnv::new("badmanifest");
    let path = env.home.join("m.json");
    std::fs::write(&path, r#"{"functions":[{"name":"diag","binary":"stratus-fn-diag","timeout_seconds":0,"triggers":[{"type":"queue","queue":"stratus.fn.diag"}]}]}"#).unwrap();
    let (code, stderr) = up(&env, &["--manifest", path.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1));
    let line = error_line(&stderr);
    assert!(
        line.contains("m.json") && line.contains("timeout_seconds"),
        "{line}"
    );
}

#[test]
fn a_missing_binary_is_named() {
    let env = TestEnv::new("nobinary");
    let path = env.home.join("m.json");
    std::fs::write(&path, r#"{"functions":[{"name":"ghost","binary":"stratus-fn-ghost","triggers":[{"type":"queue","queue":"stratus.fn.diag"}]}]}"#).unwrap();
    let (code, stderr) = up(&env, &["--manifest", path.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1));
    let line = error_line(&stderr);
    assert!(
        line.contains("function ghost")
            && line.contains("stratus-fn-ghost")
            && line.contains("cargo build"),
        "{line}"
    );
}

#[test]
fn an_unreachable_broker_says_how_to_start_one() {
    let env = TestEnv::new("nobroker");
    let manifest = root().join("infra/manifest.json");
    let (code, stderr) = up(
        &env,
        &["--manifest", manifest.to_str().unwrap()],
        &[("STRATUS_AMQP_URL", "amqp://guest:secret@127.0.0.1:1")],
    );
    assert_eq!(code, Some(1));
    let line = error_line(&stderr);
    assert!(
        line.contains("cannot reach RabbitMQ")
            && line.contains("rabbitmq-server")
            && !line.contains("secret"),
        "{line}"
    );
}

#[test]
fn a_port_in_use_is_one_clear_line() {
    let env = TestEnv::new("portinuse");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let manifest = root().join("infra/manifest.json");
    let (code, stderr) = up(
        &env,
        &[
            "--manifest",
            manifest.to_str().unwrap(),
            "--runtime-api",
            &addr,
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    let line = error_line(&stderr);
    assert!(line.contains(&addr) && line.contains("in use"), "{line}");
}

#[test]
fn status_without_a_runner_says_so() {
    let env = TestEnv::new("nostatus");
    let out = Command::new(bin_dir().join("stratus-local"))
        .arg("status")
        .envs(env.config.to_env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no stratus-local is running"));
}
