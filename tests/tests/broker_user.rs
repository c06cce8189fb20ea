//! The scripts' broker user (scripts/lib.sh `ensure_broker_user`): Stratus's
//! own user with rights on its own vhost only, its generated password in a
//! 0600 file under a 0700 STRATUS_HOME, the same password on every run.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use lapin::{Connection, ConnectionProperties};
use stratus_tests::root;

fn rabbitmqctl(args: &[&str]) {
    let _ = Command::new("rabbitmqctl").args(args).output();
}

/// Runs `ensure_broker_user` as `scripts/run-local` does; the URL it exports.
fn ensure_broker_user(home: &std::path::Path, name: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"source "$1/scripts/lib.sh" && ensure_broker_user && printf '%s' "$STRATUS_AMQP_URL""#)
        .arg("bash")
        .arg(root())
        .env_remove("STRATUS_AMQP_URL")
        .env("STRATUS_HOME", home)
        .env("STRATUS_AMQP_USER", name)
        .env("STRATUS_AMQP_VHOST", name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ensure_broker_user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn connect(url: &str, vhost: &str) -> Result<Connection, lapin::Error> {
    Connection::connect(&format!("{url}/{vhost}"), ConnectionProperties::default()).await
}

#[tokio::test]
async fn the_scripts_make_a_broker_user_of_stratus_own_on_its_vhost_only() {
    let name = format!(
        "stratus-t{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let home = std::env::temp_dir().join(&name);
    let url = ensure_broker_user(&home, &name);
    let result = async {
        assert!(url.starts_with(&format!("amqp://{name}:")), "{url}");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home), 0o700);
        let file = home.join("amqp-password");
        assert_eq!(mode(&file), 0o600);
        let password = std::fs::read_to_string(&file).unwrap();
        assert!(password.len() >= 16 && url.contains(&password));
        // Its own vhost: yes. The default vhost, where guest lives: no.
        let c = connect(&url, &name)
            .await
            .expect("the user reaches its vhost");
        c.close(200, "ok".into()).await.unwrap();
        assert!(
            connect(&url, "%2F").await.is_err(),
            "the user reached vhost /"
        );
        // A second run keeps the password, and it still works.
        assert_eq!(ensure_broker_user(&home, &name), url);
        let c = connect(&url, &name)
            .await
            .expect("the user reaches its vhost again");
        c.close(200, "ok".into()).await.unwrap();
        // A wrong password is refused: the broker checks the hash it was given.
        let wrong = url.replace(&password, "not-the-password-at-all");
        assert!(connect(&wrong, &name).await.is_err());
    }
    .await;
    rabbitmqctl(&["-q", "delete_user", &name]);
    rabbitmqctl(&["-q", "delete_vhost", &name]);
    let _ = std::fs::remove_dir_all(&home);
    result
}
