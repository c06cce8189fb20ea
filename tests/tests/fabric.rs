//! Host health end to end: the real runner starts one `stratus-agent` per
//! host (from the manifest), the agents register in Consul (the stand-in)
//! with TTL checks, and the scheduled fabric monitor moves each host between
//! CloudStack's states. A frozen agent takes its host Up -> Alert -> Down,
//! and back Up when it resumes; the changes are in listEvents and listAlerts.
//! Then the monitor's lock: one sweeper at a time, taken over when its holder ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_discovery::settings::ConsulSettings;
use stratus_fn_fabric_monitor::Monitor;
use stratus_tests::TestEnv;
use stratus_tests::cloudstack::Platform;

/// The pid of the runner's child process whose command line names `host`.
fn agent_pid(runner_pid: u32, host: &str) -> u32 {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Field 4 (after the parenthesised command name) is the parent pid.
        let ppid: Option<u32> = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|p| p.parse().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if ppid == Some(runner_pid) && cmdline.contains("stratus-agent") && cmdline.contains(host) {
            return pid;
        }
    }
    panic!("no agent process for {host} under the runner {runner_pid}");
}

async fn host_state(p: &Platform, name: &str) -> String {
    let (status, body) = p.get(&[("command", "listHosts"), ("name", name)]).await;
    assert_eq!(status, 200, "{body}");
    body["listhostsresponse"]["host"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Polls until the host is in `want`; the states seen on the way.
async fn wait_for(p: &Platform, host: &str, want: &str, within: Duration) -> Vec<String> {
    let started = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let state = host_state(p, host).await;
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if state == want {
            return seen;
        }
        assert!(
            started.elapsed() < within,
            "{host} never reached {want} within {within:?}; seen {seen:?}\n{}",
            p.runner.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_whose_agent_stops_goes_alert_then_down_and_comes_back_up() {
    let env = TestEnv::new("fabric-health");
    let p = Platform::start(&env);
    // Marvin's simulator settings: a short ping interval; Down after 2 x 1.5 = 3 s.
    p.cs(&["updateConfiguration", "name=ping.interval", "value=2"])
        .unwrap();
    p.cs(&["updateConfiguration", "name=ping.timeout", "value=1.5"])
        .unwrap();
    let host = "SimHost-c0-h0";
    for h in [host, "SimHost-c0-h1", "SimHost-c1-h0"] {
        wait_for(&p, h, "Up", Duration::from_secs(30)).await;
    }
    let hosts = p.cs(&["listHosts"]).unwrap();
    assert!(
        hosts["host"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["state"] == "Up" && h["lastpinged"].is_string()),
        "{hosts}"
    );
    // Let the agents pick up the 2 s TTL (they watch the setting).
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The agent hangs (frozen, so its supervisor does not restart it).
    let pid = agent_pid(p.runner.pid(), host) as libc::pid_t;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let stopped = Instant::now();
    let seen = wait_for(&p, host, "Down", Duration::from_secs(30)).await;
    let took = stopped.elapsed();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(seen, ["Up", "Alert", "Down"], "Up -> Alert -> Down");
    // Not before the check's TTL (2 s) lapsed; the agent had passed it at most
    // a third of that before it froze. (`lastpinged` is kept to one ping
    // interval, as CloudStack keeps it, so Down may follow Alert closely.)
    assert!(
        took >= Duration::from_millis(1300),
        "down after only {took:?}"
    );
    // The others were never touched.
    assert_eq!(host_state(&p, "SimHost-c1-h0").await, "Up");

    // It resumes: Up again.
    wait_for(&p, host, "Up", Duration::from_secs(20)).await;

    // Each change is an event; Alert and Down raised host alerts.
    let events = p.cs(&["listEvents", "type=HOST.STATE"]).unwrap();
    let texts: Vec<&str> = events["event"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["description"].as_str().unwrap().contains(host))
        .map(|e| e["description"].as_str().unwrap())
        .collect();
    for needle in ["to Alert", "to Down", "is Up (was Down)"] {
        assert!(
            texts.iter().any(|t| t.contains(needle)),
            "{needle} not in {texts:?}"
        );
    }
    let alerts = p.cs(&["listAlerts"]).unwrap();
    let subjects: Vec<&str> = alerts["alert"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["description"].as_str().unwrap())
        .collect();
    assert!(
        subjects
            .iter()
            .any(|s| s.starts_with(&format!("Host is down, name: {host}"))),
        "{subjects:?}"
    );
    assert!(alerts["alert"][0]["type"] == 7 && alerts["alert"][0]["name"] == "ALERT.HOST");
}

/// Two monitors over one store and one Consul: only the lock holder sweeps;
/// when its session ends, the other takes over.
#[tokio::test(flavor = "multi_thread")]
async fn one_monitor_sweeps_at_a_time() {
    let env = TestEnv::new("fabric-lock");
    let p = Platform::start_with(&env, |m| {
        // This test plays the monitors itself.
        m["functions"]
            .as_array_mut()
            .unwrap()
            .retain(|f| f["name"] != "fabric-monitor");
    });
    let consul = p.runner.consul_client();
    let store = Arc::new(
        stratus_store::Store::open(&env.config.store, &env.config.table_prefix)
            .await
            .unwrap(),
    );
    let monitor = |name: &str| {
        Monitor::new(
            store.clone(),
            consul.clone(),
            ConsulSettings::new(consul.clone(), Duration::from_secs(3)),
            name.to_string(),
        )
    };
    let (a, b) = (monitor("a"), monitor("b"));
    let now = chrono::Utc::now();
    let first = a.tick(now).await.unwrap();
    assert!(first.swept && first.hosts == 3, "{first:?}");
    let second = b.tick(now).await.unwrap();
    assert!(!second.swept, "two monitors swept at once");
    assert!(a.tick(now).await.unwrap().swept, "the holder lost its lock");
    // The holder's session ends (its instance went away): the other takes over at once (lock-delay 0).
    let holder = consul
        .kv_get(
            stratus_contracts::names::FABRIC_MONITOR_LOCK,
            &Default::default(),
        )
        .await
        .unwrap()
        .value
        .unwrap();
    assert_eq!(holder.value.as_deref(), Some(&b"a"[..]));
    assert!(
        consul
            .session_destroy(holder.session.as_deref().unwrap())
            .await
            .unwrap()
    );
    assert!(
        b.tick(now).await.unwrap().swept,
        "the lock was not taken over"
    );
    assert!(
        !a.tick(now).await.unwrap().swept,
        "the old holder swept again"
    );
}
