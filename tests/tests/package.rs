//! The Lambda package (`stratus-local package`): the diag function's zip is
//! reproducible, holds exactly `bootstrap` (mode 0755, deflate, 1980-01-01,
//! no extra fields), its checksum file matches its bytes, and the `bootstrap`
//! inside it, run under the local runner, answers an invocation: the artifact
//! Lambda would run is the one tested.
//!
//! The zip is read here with a parser of its own (the central directory and
//! the local header), and the checksum with `sha256sum`, not with the code
//! under test.
//!
//! Build first: `cargo build --workspace --bins` (the test packages the diag
//! binary already in target/debug).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine;
use stratus_contracts::message_types::diag;
use stratus_contracts::names;
use stratus_messaging::Envelope;
use stratus_messaging::broker;
use stratus_tests::{TestEnv, bin_dir, root};

const WAIT: Duration = Duration::from_secs(30);

/// Packages the diag function into `out`. With `--no-build`: the nested
/// `cargo build` that `package` would run needs `--target`, which cargo
/// builds in a tree of its own (target/x86_64-unknown-linux-gnu/debug): every
/// dependency compiled again, minutes on 2 cores, while the host binaries
/// `cargo build --workspace --bins` made are already there. (Cargo itself
/// does not stand in the way: it holds its build-directory lock only while
/// it compiles, not while the test binary runs; /proc/locks shows no lock
/// on target/debug/.cargo-lock during this test.)
fn package(out: &Path) -> Output {
    let started = Instant::now();
    let output = Command::new(bin_dir().join("stratus-local"))
        .current_dir(root())
        .args([
            "package",
            "--only",
            "diag",
            "--profile",
            "dev",
            "--no-build",
        ])
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    println!(
        "packaged diag into {} in {:.1} s; stderr:\n{}",
        out.display(),
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// One zip entry as its central directory and local header describe it.
#[derive(Debug, PartialEq)]
struct Entry {
    name: String,
    made_by_system: u8,
    method: u16,
    dos_date: u16,
    dos_time: u16,
    unix_mode: u32,
    central_extra: u16,
    local_extra: u16,
    uncompressed: u32,
}

/// The entries of a zip with no archive comment (the end record is its last 22 bytes).
fn entries(zip: &[u8]) -> Vec<Entry> {
    let end = zip.len() - 22;
    assert_eq!(
        u32_at(zip, end),
        0x0605_4b50,
        "end of central directory record"
    );
    assert_eq!(u16_at(zip, end + 20), 0, "no archive comment");
    let count = u16_at(zip, end + 10) as usize;
    let mut at = u32_at(zip, end + 16) as usize;
    let mut out = Vec::new();
    for _ in 0..count {
        assert_eq!(u32_at(zip, at), 0x0201_4b50, "central directory header");
        let name_len = u16_at(zip, at + 28) as usize;
        let extra_len = u16_at(zip, at + 30);
        let comment_len = u16_at(zip, at + 32) as usize;
        let local = u32_at(zip, at + 42) as usize;
        assert_eq!(u32_at(zip, local), 0x0403_4b50, "local header");
        out.push(Entry {
            name: String::from_utf8(zip[at + 46..at + 46 + name_len].to_vec()).unwrap(),
            made_by_system: zip[at + 5],
            method: u16_at(zip, at + 10),
            dos_time: u16_at(zip, at + 12),
            dos_date: u16_at(zip, at + 14),
            uncompressed: u32_at(zip, at + 24),
            unix_mode: u32_at(zip, at + 38) >> 16,
            central_extra: extra_len,
            local_extra: u16_at(zip, local + 28),
        });
        at += 46 + name_len + extra_len as usize + comment_len;
    }
    out
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_diag_package_is_reproducible_and_its_bootstrap_answers() {
    let env = TestEnv::new("package");
    let (a, b): (PathBuf, PathBuf) = (env.home.join("dist-a"), env.home.join("dist-b"));
    for out in [&a, &b] {
        let output = package(out);
        assert!(output.status.success(), "package failed");
    }
    let zip_a = std::fs::read(a.join("diag.zip")).unwrap();
    let zip_b = std::fs::read(b.join("diag.zip")).unwrap();
    let binary = std::fs::read(bin_dir().join("stratus-fn-diag")).unwrap();
    println!(
        "binary {} bytes, zip {} bytes ({:.1}%)",
        binary.len(),
        zip_a.len(),
        100.0 * zip_a.len() as f64 / binary.len() as f64
    );
    assert!(
        zip_a == zip_b,
        "packaging the same binary twice gives the same bytes"
    );
    assert_eq!(
        std::fs::read_to_string(a.join("checksums.json")).unwrap(),
        std::fs::read_to_string(b.join("checksums.json")).unwrap()
    );

    // One entry, `bootstrap`, as Lambda's custom runtime wants it.
    let listed = entries(&zip_a);
    println!("{listed:?}");
    assert_eq!(
        listed,
        vec![Entry {
            name: "bootstrap".into(),
            made_by_system: 3, // Unix: the mode in the external attributes counts
            method: 8,         // deflate
            dos_date: (1 << 5) | 1, // 1980-01-01
            dos_time: 0,
            unix_mode: 0o100755,
            central_extra: 0,
            local_extra: 0,
            uncompressed: binary.len() as u32,
        }]
    );
    let unzipped = stratus_local::package::read_bootstrap(&a.join("diag.zip")).unwrap();
    assert!(unzipped == binary, "the zip holds the binary itself");

    // checksums.json: what Terraform's filebase64sha256 gives for the zip.
    let checksums: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("checksums.json")).unwrap()).unwrap();
    println!("checksums.json: {checksums}");
    let entry = &checksums["diag"];
    assert_eq!(checksums.as_object().unwrap().len(), 1, "{checksums}");
    assert_eq!(entry["zip"], "diag.zip");
    assert_eq!(entry["bytes"], zip_a.len() as u64);
    let digest = base64::engine::general_purpose::STANDARD
        .decode(entry["base64sha256"].as_str().unwrap())
        .unwrap();
    assert_eq!(hex(&digest), sha256sum(&a.join("diag.zip")));

    // The packaged bootstrap answers an invocation against this test's vhost.
    // --bin-dir names an empty directory: the only diag binary to run is the zip's.
    let connection = env.connect().await;
    let topology = broker::topology(&env.config).unwrap();
    broker::declare_topology(&connection, &topology)
        .await
        .unwrap();
    let mut echoed = env
        .watch(&connection, names::INTERNAL_EVENTS_EXCHANGE, diag::ECHOED)
        .await;
    let empty = env.home.join("no-binaries");
    std::fs::create_dir_all(&empty).unwrap();
    let started = Instant::now();
    let out = Command::new(bin_dir().join("stratus-local"))
        .args(["invoke", "diag", "--manifest"])
        .arg(root().join("infra/manifest.json"))
        .arg("--event")
        .arg(root().join("events/rmq/diag.echo.json"))
        .arg("--package")
        .arg(a.join("diag.zip"))
        .arg("--bin-dir")
        .arg(&empty)
        .envs(env.config.to_env())
        .output()
        .unwrap();
    println!(
        "invoke from the zip took {:.1} s; stderr:\n{}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "invoke failed");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("answer: {answer}");
    assert_eq!(
        answer,
        serde_json::json!({"handled": 1, "retried": 0, "parked": 0})
    );
    let reply = echoed
        .next(WAIT)
        .await
        .expect("the packaged diag published its diag.echoed");
    let body: diag::Echoed = Envelope::from_rmq(&reply).unwrap().body().unwrap();
    assert_eq!(body.text, "hello, stratus");

    // Without --package the same invocation finds no binary in that directory.
    let out = Command::new(bin_dir().join("stratus-local"))
        .args(["invoke", "diag", "--manifest"])
        .arg(root().join("infra/manifest.json"))
        .arg("--event")
        .arg(root().join("events/rmq/diag.noop.json"))
        .arg("--bin-dir")
        .arg(&empty)
        .envs(env.config.to_env())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The unpacked bootstrap's private directory is gone.
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("stratus-package-")
        })
        .map(|e| e.path())
        .collect();
    println!("stratus-package-* directories left in the temp dir: {left:?}");
}
