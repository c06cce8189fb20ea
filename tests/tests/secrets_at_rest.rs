//! Secrets at rest, end to end (issue 9, item 4): the real runner, bootstrap
//! and API; `registerUserKeys` through `cs`. No secret key is in the raw
//! database or its WAL in any encoding; the state directory and every file
//! holding a secret are private; keys made before a restart verify after it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use stratus_tests::TestEnv;
use stratus_tests::cloudstack::Platform;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_keys_are_sealed_private_and_survive_a_restart() {
    let env = TestEnv::new("at-rest");
    // The test's home was made 0755, as `mkdir` makes one: the start tightens it.
    std::fs::set_permissions(&env.home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = Platform::start(&env);
    let alice = p.create_user("alice");
    // A settings write, so the Consul stand-in's KV file exists.
    p.cs(&["updateConfiguration", "name=default.page.size", "value=500"])
        .unwrap();

    // (1) Neither the bootstrap's keys nor alice's are in the raw files.
    let files: Vec<_> = ["stratus.db", "stratus.db-wal"]
        .iter()
        .map(|f| env.home.join(f))
        .collect();
    for file in &files {
        assert!(file.exists(), "{}", file.display());
    }
    for (who, secret) in [("admin", &p.secret), ("alice", &alice.secret)] {
        let found = stratus_secrets::traces::in_sqlite_files(&env.home.join("stratus.db"), secret);
        assert!(found.is_empty(), "{who}'s secret key is on disk: {found:?}");
    }
    let all: Vec<u8> = files
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect();
    assert!(
        contains(&all, alice.key.as_bytes()),
        "alice's API key (not secret) should be in the files: the search reads them"
    );
    assert!(contains(&all, b"v1:"), "sealed values are stored");

    // (3) Private: the state directory, the database files, the key file,
    // the KV file, cloudstack.ini.
    assert_eq!(format!("{:o}", mode(&env.home)), "700", "STRATUS_HOME");
    for f in [
        "stratus.db",
        "stratus.db-wal",
        "stratus.db-shm",
        "secret.key",
        "consul-kv.json",
        "cloudstack.ini",
    ] {
        assert_eq!(format!("{:o}", mode(&env.home.join(f))), "600", "{f}");
    }

    // (2) A restart: new processes, the same key file; the keys made before verify.
    let (admin_key, admin_secret) = (p.key.clone(), p.secret.clone());
    drop(p);
    let p = Platform::start(&env);
    assert_eq!(
        (&p.key, &p.secret),
        (&admin_key, &admin_secret),
        "bootstrap kept the admin's keys"
    );
    let zones = p.cs(&["listZones"]).unwrap();
    assert_eq!(zones["count"], 1, "{zones}");
    let (status, body) = p
        .get_as(&alice.key, &alice.secret, &[("command", "listZones")])
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, mine) = p
        .get_as(
            &alice.key,
            &alice.secret,
            &[("command", "getUserKeys"), ("id", &alice.user_id)],
        )
        .await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(
        mine["getuserkeysresponse"]["userkeys"]["secretkey"],
        alice.secret.as_str()
    );
    let (status, _) = p
        .get_as(&alice.key, "not-the-secret", &[("command", "listZones")])
        .await;
    assert_eq!(status, 401);
}
