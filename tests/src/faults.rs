//! Faults for the disruptive tests: the broker's application stopped and
//! started, its process killed and started again, its process paused; and
//! checks that the runner's status tells the truth about its processes.

use std::process::Command;
use std::time::{Duration, Instant};

fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How the broker goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerFault {
    /// `rabbitmqctl stop_app`, a pause, `start_app`: every connection gets CONNECTION_FORCED.
    StopApp,
    /// `kill -9` of the broker's process, then a fresh `rabbitmq-server -detached`.
    Kill,
}

/// The broker's OS process id.
pub fn broker_pid() -> u32 {
    rabbitmqctl(&["eval", "os:getpid()."])
        .trim()
        .trim_matches('"')
        .parse()
        .expect("a pid from os:getpid()")
}

/// Takes the broker away for `down`, then brings it back and waits until it serves.
pub fn broker_down_and_up(fault: BrokerFault, down: Duration) {
    match fault {
        BrokerFault::StopApp => {
            rabbitmqctl(&["-q", "stop_app"]);
            std::thread::sleep(down);
            rabbitmqctl(&["-q", "start_app"]);
        }
        BrokerFault::Kill => {
            signal(broker_pid(), libc::SIGKILL);
            std::thread::sleep(down);
            let started = Command::new("rabbitmq-server")
                .arg("-detached")
                .status()
                .expect("rabbitmq-server runs");
            assert!(started.success(), "rabbitmq-server -detached: {started}");
        }
    }
    wait_for_broker(Duration::from_secs(90));
}

/// Waits until the broker answers `await_startup`.
pub fn wait_for_broker(within: Duration) {
    let started = Instant::now();
    loop {
        let ok = Command::new("rabbitmqctl")
            .args(["-q", "await_startup", "--timeout", "5"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        assert!(
            started.elapsed() < within,
            "the broker did not come back within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2); a stale pid at worst gets ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// The function processes the runner `runner_pid` has started that are alive
/// (zombies left aside): pid and binary name.
pub fn function_processes(runner_pid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = &stat[stat.find('(').unwrap_or(0) + 1..close];
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().unwrap_or("");
        let ppid: u32 = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == runner_pid && comm.starts_with("stratus-fn-") && state != "Z" {
            found.push((pid, comm.to_string()));
        }
    }
    found.sort();
    found
}

/// Where the status and the processes disagree, if they do: the function
/// instances it lists against the `stratus-fn-*` children of the runner, and
/// any poller it counts without a consumer on the broker.
pub fn status_disagreement(status: &serde_json::Value, runner_pid: u32) -> Option<String> {
    let mut listed: Vec<u32> = status["functions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["instances"].as_array().cloned().unwrap_or_default())
        .map(|i| i["pid"].as_u64().unwrap() as u32)
        .collect();
    listed.sort();
    let running: Vec<u32> = function_processes(runner_pid)
        .iter()
        .map(|(p, _)| *p)
        .collect();
    if listed != running {
        return Some(format!(
            "the status lists instances {listed:?}, the processes are {running:?}"
        ));
    }
    status["queue_triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["pollers"].as_u64().unwrap() > t["consumers"].as_u64().unwrap_or(0))
        .map(|t| format!("a poller counted without a consumer: {t}"))
}
