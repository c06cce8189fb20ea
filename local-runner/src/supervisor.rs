//! Supervised long-running processes (host agents): `min_instances` of each
//! are kept running, restarted with backoff when they exit. Each instance gets
//! `STRATUS_INSTANCE` (its index) and the platform's environment.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::process::Command;
use tokio::sync::{Mutex, watch};

use crate::backoff::Backoff;

#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub name: String,
    pub binary: PathBuf,
    pub args: Vec<String>,
    pub environment: Vec<(String, String)>,
    pub instances: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessStatus {
    pub name: String,
    pub instance: u32,
    pub pid: Option<u32>,
    pub restarts: u64,
}

struct Slot {
    name: String,
    instance: u32,
    pid: AtomicU32,
    restarts: AtomicU64,
}

pub struct Supervisor {
    slots: Mutex<Vec<Arc<Slot>>>,
    stop: watch::Sender<bool>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self {
            slots: Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
        }
    }
}

impl Supervisor {
    pub async fn start(&self, spec: ProcessSpec) {
        for instance in 0..spec.instances {
            let slot = Arc::new(Slot {
                name: spec.name.clone(),
                instance,
                pid: AtomicU32::new(0),
                restarts: AtomicU64::new(0),
            });
            self.slots.lock().await.push(slot.clone());
            let spec = spec.clone();
            let mut stop = self.stop.subscribe();
            tokio::spawn(async move {
                let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
                loop {
                    let mut cmd = Command::new(&spec.binary);
                    cmd.args(&spec.args)
                        .envs(
                            spec.environment
                                .iter()
                                .map(|(k, v)| (k.as_str(), v.as_str())),
                        )
                        .env("STRATUS_INSTANCE", instance.to_string())
                        .stdin(std::process::Stdio::null())
                        .kill_on_drop(true);
                    let started = std::time::Instant::now();
                    match cmd.spawn() {
                        Ok(mut child) => {
                            slot.pid.store(child.id().unwrap_or(0), Ordering::Relaxed);
                            tracing::info!(process = %spec.name, instance, pid = child.id(), "process started");
                            tokio::select! {
                                status = child.wait() => {
                                    tracing::warn!(process = %spec.name, instance, status = ?status, "process exited; restarting");
                                }
                                _ = stop.changed() => {
                                    let _ = child.kill().await;
                                    return;
                                }
                            }
                            if started.elapsed() > Duration::from_secs(60) {
                                backoff.reset();
                            }
                        }
                        Err(e) => {
                            tracing::error!(process = %spec.name, binary = %spec.binary.display(), error = %e, "cannot start process")
                        }
                    }
                    slot.pid.store(0, Ordering::Relaxed);
                    slot.restarts.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.changed() => return,
                    }
                }
            });
        }
    }

    pub async fn status(&self) -> Vec<ProcessStatus> {
        self.slots
            .lock()
            .await
            .iter()
            .map(|s| ProcessStatus {
                name: s.name.clone(),
                instance: s.instance,
                pid: Some(s.pid.load(Ordering::Relaxed)).filter(|p| *p != 0),
                restarts: s.restarts.load(Ordering::Relaxed),
            })
            .collect()
    }

    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}
