//! The simulator driver: a host that behaves as CloudStack's simulator
//! (`MockVmManagerImpl`, `MockStorageManagerImpl`), kept apart from the
//! agent's production path as omicron keeps its simulated sled agent: the
//! agent sees only the [`Driver`] trait.
//!
//! What the host holds, VMs (id, name, CPU, memory, NICs, volumes, power
//! state) and volumes (id, size, pool), lives in
//! `$STRATUS_HOME/agents/<host>/state.json` (0600, replaced atomically: a
//! temporary file renamed over it), so an agent restart keeps its VMs, as a
//! real agent restart leaves its hypervisor's VMs running.
//!
//! **Simulated host reboot.** A host that reboots loses its running VMs. To
//! simulate it, create the file `$STRATUS_HOME/agents/<host>/reboot` and
//! restart the agent: at start the simulator drops every VM (volumes stay,
//! as disks survive a reboot) and removes the file. The agent's full
//! `agent.vm-report` then lists no VM, and the compute function reconciles.
//!
//! **Run-time behaviour.** Before each command the simulator applies the
//! `configureSimulator` mocks ([`mocks`]): a wait, then a pass, a failure
//! (530, "Simulated failure", as CloudStack's simulator answers) or a fault
//! (no answer at all).
//!
//! Start checks what CloudStack's simulator does not: every volume the VM
//! names must be on the host ("volume ... not found on host ..."), so that a
//! saga that skipped or undid `create-volumes` fails visibly.

pub mod mocks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stratus_contracts::message_types::Placement;
use stratus_contracts::message_types::agent::{self, PowerState, StartVm, VmPower};
use stratus_contracts::message_types::network::NicInfo;
use stratus_contracts::message_types::storage::VolumeInfo;
use stratus_contracts::simulator::MockResult;

use crate::driver::{Driver, DriverError};
pub use mocks::Mocks;

/// The file that holds a simulated host's VMs and volumes.
pub const STATE_FILE: &str = "state.json";
/// The marker file that simulates a host reboot at the agent's next start.
pub const REBOOT_MARKER: &str = "reboot";

/// CloudStack simulator's text for a `result:fail` mock.
pub const SIMULATED_FAILURE: &str = "Simulated failure";
/// CloudStack simulator's text for a `result:fault` mock (its exception).
pub const SIMULATED_FAULT: &str = "Simulated fault";

/// A VM on the simulated host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimVm {
    pub id: String,
    pub name: String,
    pub cpu_number: u32,
    /// MHz per CPU.
    pub cpu_speed: u32,
    pub memory_mb: u32,
    pub nics: Vec<NicInfo>,
    pub volume_ids: Vec<String>,
    pub power_state: PowerState,
}

/// A volume on the simulated host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimVolume {
    pub id: String,
    /// The VM it was made for.
    pub vm_id: String,
    pub name: String,
    /// Bytes.
    pub size: u64,
    pub pool_id: String,
}

/// Everything the simulated host holds, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimState {
    #[serde(default)]
    pub vms: BTreeMap<String, SimVm>,
    #[serde(default)]
    pub volumes: BTreeMap<String, SimVolume>,
}

/// Whether `host` can name the agent's state directory and queue: letters,
/// digits, `.`, `_` and `-`, and not `.` or `..` (it becomes a path).
pub fn valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host != "."
        && host != ".."
        && host.len() <= 200
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The directory of a simulated host's state: `<home>/agents/<host>`.
pub fn state_dir(home: &Path, host: &str) -> PathBuf {
    home.join("agents").join(host)
}

pub struct SimDriver {
    host: String,
    dir: PathBuf,
    state: Mutex<SimState>,
    mocks: Mocks,
}

impl SimDriver {
    /// Opens the simulated host `host` under `home` (made 0700 if missing),
    /// with its saved VMs and volumes; the reboot marker, if present, drops
    /// the VMs first.
    pub fn open(home: &Path, host: &str, mocks: Mocks) -> anyhow::Result<Self> {
        anyhow::ensure!(
            valid_host_name(host),
            "host name {host:?} is not usable: letters, digits, '.', '_' and '-' only"
        );
        let dir = state_dir(home, host);
        stratus_secrets::private::dir(&dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot make the simulator's directory {}: {e}",
                dir.display()
            )
        })?;
        let path = dir.join(STATE_FILE);
        let mut state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<SimState>(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "the simulator's state {} does not decode ({e}); move it away to start the host empty",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SimState::default(),
            Err(e) => anyhow::bail!("cannot read the simulator's state {}: {e}", path.display()),
        };
        let marker = dir.join(REBOOT_MARKER);
        if marker.exists() {
            let lost: Vec<String> = state.vms.keys().cloned().collect();
            state.vms.clear();
            // Saved before the marker goes: a crash in between reboots again, harmlessly.
            save(&path, &state)
                .map_err(|e| anyhow::anyhow!("cannot save the simulator's state: {e}"))?;
            std::fs::remove_file(&marker).map_err(|e| {
                anyhow::anyhow!("cannot remove the reboot marker {}: {e}", marker.display())
            })?;
            tracing::warn!(host, lost_vms = ?lost, "simulated host reboot: every VM is gone (volumes stay)");
        }
        tracing::info!(host, vms = state.vms.len(), volumes = state.volumes.len(), mocks = mocks.enabled(), state = %path.display(), "simulated host opened");
        Ok(Self {
            host: host.to_string(),
            dir,
            state: Mutex::new(state),
            mocks,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// A copy of what the host holds now.
    pub fn snapshot(&self) -> SimState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves a state that was saved whole
        // or not at all (see `change`), so the poison carries no meaning.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `edit` to a copy of the state, saves the copy, and only then
    /// makes it the host's state, so memory never runs ahead of the file.
    /// `edit` answers whether anything changed (nothing to save otherwise).
    fn change<T>(
        &self,
        edit: impl FnOnce(&mut SimState) -> Result<(bool, T), DriverError>,
    ) -> Result<T, DriverError> {
        let mut state = self.lock();
        let mut next = state.clone();
        let (changed, out) = edit(&mut next)?;
        if changed {
            save(&self.dir.join(STATE_FILE), &next).map_err(|e| {
                DriverError::internal(format!(
                    "Unable to save the state of host {}: {e}",
                    self.host
                ))
            })?;
            *state = next;
        }
        Ok(out)
    }

    /// CloudStack's `configureSimulator` behaviour for this command.
    async fn mocked(&self, message_type: &str, placement: &Placement) -> Result<(), DriverError> {
        let Some(mock) = self.mocks.take(message_type, placement).await else {
            return Ok(());
        };
        tracing::info!(mock_id = %mock.id, command = %mock.name, value = %mock.value, uses_left = ?mock.count, "simulator mock applies");
        if mock.wait_ms > 0 {
            tokio::time::sleep(Duration::from_millis(mock.wait_ms)).await;
        }
        match mock.result {
            MockResult::Pass => Ok(()),
            MockResult::Fail => Err(DriverError::internal(SIMULATED_FAILURE)),
            MockResult::Fault => Err(DriverError::NoAnswer(SIMULATED_FAULT.to_string())),
        }
    }
}

fn save(path: &Path, state: &SimState) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    stratus_secrets::private::replace(path, &bytes)
}

impl Driver for SimDriver {
    async fn create_volume(
        &self,
        placement: &Placement,
        vm_id: &str,
        volume: &VolumeInfo,
    ) -> Result<(), DriverError> {
        self.mocked(agent::CREATE_VOLUMES, placement).await?;
        self.change(|s| {
            if s.volumes.contains_key(&volume.volume_id) {
                return Ok((false, ()));
            }
            s.volumes.insert(
                volume.volume_id.clone(),
                SimVolume {
                    id: volume.volume_id.clone(),
                    vm_id: vm_id.to_string(),
                    name: volume.name.clone(),
                    size: volume.size,
                    pool_id: volume.pool_id.clone(),
                },
            );
            Ok((true, ()))
        })
    }

    async fn destroy_volume(
        &self,
        placement: &Placement,
        _vm_id: &str,
        volume_id: &str,
    ) -> Result<(), DriverError> {
        self.mocked(agent::DESTROY_VOLUMES, placement).await?;
        self.change(|s| {
            // A VM on the host is a running one (a stopped VM is forgotten):
            // its disk cannot go from under it.
            if let Some(vm) = s
                .vms
                .values()
                .find(|vm| vm.volume_ids.iter().any(|v| v == volume_id))
            {
                return Err(DriverError::internal(format!(
                    "volume {volume_id} is in use by VM {} on host {}",
                    vm.id, self.host
                )));
            }
            Ok((s.volumes.remove(volume_id).is_some(), ()))
        })
    }

    async fn start_vm(&self, vm: &StartVm) -> Result<(), DriverError> {
        self.mocked(agent::START_VM, &vm.placement).await?;
        self.change(|s| {
            if s.vms
                .get(&vm.vm_id)
                .is_some_and(|v| v.power_state == PowerState::PowerOn)
            {
                return Ok((false, ()));
            }
            if let Some(missing) = vm.volume_ids.iter().find(|v| !s.volumes.contains_key(*v)) {
                return Err(DriverError::internal(format!(
                    "volume {missing} not found on host {}",
                    self.host
                )));
            }
            s.vms.insert(
                vm.vm_id.clone(),
                SimVm {
                    id: vm.vm_id.clone(),
                    name: vm.vm_name.clone(),
                    cpu_number: vm.cpu_number,
                    cpu_speed: vm.cpu_speed,
                    memory_mb: vm.memory_mb,
                    nics: vm.nics.clone(),
                    volume_ids: vm.volume_ids.clone(),
                    power_state: PowerState::PowerOn,
                },
            );
            Ok((true, ()))
        })
    }

    async fn stop_vm(&self, placement: &Placement, vm_id: &str) -> Result<(), DriverError> {
        self.mocked(agent::STOP_VM, placement).await?;
        self.change(|s| Ok((s.vms.remove(vm_id).is_some(), ())))
    }

    async fn list_vms(&self) -> Result<Vec<VmPower>, DriverError> {
        Ok(self
            .lock()
            .vms
            .values()
            .map(|vm| VmPower {
                vm_id: vm.id.clone(),
                power_state: vm.power_state,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::mocks::tests::{FakeMocks, mock, placement};
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    struct Home(PathBuf);
    impl Home {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "stratus-agent-sim-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }
    impl Drop for Home {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn volume(id: &str) -> VolumeInfo {
        VolumeInfo {
            volume_id: id.into(),
            name: format!("ROOT-{id}"),
            volume_type: "ROOT".into(),
            size: 2 << 30,
            pool_id: "pool-1".into(),
            device_id: 0,
            template_id: Some("t1".into()),
        }
    }

    fn start(vm_id: &str, volumes: &[&str]) -> StartVm {
        StartVm {
            vm_id: vm_id.into(),
            vm_name: format!("i-2-{vm_id}-VM"),
            placement: placement(),
            cpu_number: 1,
            cpu_speed: 500,
            memory_mb: 512,
            nics: vec![NicInfo {
                nic_id: "n1".into(),
                network_id: "net1".into(),
                ip_address: "10.1.1.10".into(),
                netmask: "255.255.255.0".into(),
                gateway: "10.1.1.1".into(),
                mac_address: "02:00:4c:00:00:01".into(),
                vlan: Some("vlan://100".into()),
                is_default: true,
                device_id: 0,
            }],
            volume_ids: volumes.iter().map(|v| v.to_string()).collect(),
            user_data: None,
        }
    }

    #[tokio::test]
    async fn vms_and_volumes_survive_a_reopen_in_a_private_file() {
        let home = Home::new();
        let p = placement();
        {
            let sim = SimDriver::open(&home.0, "SimHost-1", Mocks::none()).unwrap();
            sim.create_volume(&p, "vm1", &volume("v1")).await.unwrap();
            sim.start_vm(&start("vm1", &["v1"])).await.unwrap();
            sim.create_volume(&p, "vm2", &volume("v2")).await.unwrap();
        }
        let sim = SimDriver::open(&home.0, "SimHost-1", Mocks::none()).unwrap();
        let state = sim.snapshot();
        assert_eq!(state.volumes.len(), 2);
        let vm = &state.vms["vm1"];
        assert_eq!(vm.power_state, PowerState::PowerOn);
        assert_eq!(vm.volume_ids, vec!["v1".to_string()]);
        assert_eq!(vm.nics[0].ip_address, "10.1.1.10");
        assert_eq!((vm.cpu_number, vm.cpu_speed, vm.memory_mb), (1, 500, 512));
        assert_eq!(state.volumes["v2"].pool_id, "pool-1");
        assert_eq!(
            sim.list_vms().await.unwrap(),
            vec![VmPower {
                vm_id: "vm1".into(),
                power_state: PowerState::PowerOn
            }]
        );
        let dir = state_dir(&home.0, "SimHost-1");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(STATE_FILE)), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // Only the state file: no temporary file left beside it.
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(files.len(), 1);
        // Another host has its own state.
        let other = SimDriver::open(&home.0, "SimHost-2", Mocks::none()).unwrap();
        assert!(other.list_vms().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_reboot_marker_drops_vms_keeps_volumes_and_goes() {
        let home = Home::new();
        let p = placement();
        {
            let sim = SimDriver::open(&home.0, "SimHost-1", Mocks::none()).unwrap();
            sim.create_volume(&p, "vm1", &volume("v1")).await.unwrap();
            sim.start_vm(&start("vm1", &["v1"])).await.unwrap();
        }
        let marker = state_dir(&home.0, "SimHost-1").join(REBOOT_MARKER);
        std::fs::write(&marker, b"").unwrap();
        let sim = SimDriver::open(&home.0, "SimHost-1", Mocks::none()).unwrap();
        assert!(sim.list_vms().await.unwrap().is_empty());
        assert!(sim.snapshot().volumes.contains_key("v1"));
        assert!(!marker.exists());
        // The VM can start again on its surviving volume, and a plain restart keeps it.
        sim.start_vm(&start("vm1", &["v1"])).await.unwrap();
        drop(sim);
        let sim = SimDriver::open(&home.0, "SimHost-1", Mocks::none()).unwrap();
        assert_eq!(sim.list_vms().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn every_command_is_idempotent() {
        let home = Home::new();
        let p = placement();
        let sim = SimDriver::open(&home.0, "SimHost-1", Mocks::none()).unwrap();
        // Absent things are already stopped and destroyed.
        sim.stop_vm(&p, "nope").await.unwrap();
        sim.destroy_volume(&p, "nope", "nope").await.unwrap();
        sim.create_volume(&p, "vm1", &volume("v1")).await.unwrap();
        let mut bigger = volume("v1");
        bigger.size *= 2;
        sim.create_volume(&p, "vm1", &bigger).await.unwrap();
        assert_eq!(
            sim.snapshot().volumes["v1"].size,
            2 << 30,
            "the first one stays"
        );
        sim.start_vm(&start("vm1", &["v1"])).await.unwrap();
        let before = sim.snapshot();
        sim.start_vm(&start("vm1", &["v1"])).await.unwrap();
        assert_eq!(sim.snapshot(), before);
        // A running VM's disk cannot be destroyed.
        let busy = sim.destroy_volume(&p, "vm1", "v1").await.unwrap_err();
        assert_eq!(
            busy,
            DriverError::internal("volume v1 is in use by VM vm1 on host SimHost-1")
        );
        sim.stop_vm(&p, "vm1").await.unwrap();
        sim.stop_vm(&p, "vm1").await.unwrap();
        assert!(sim.list_vms().await.unwrap().is_empty());
        sim.destroy_volume(&p, "vm1", "v1").await.unwrap();
        sim.destroy_volume(&p, "vm1", "v1").await.unwrap();
        assert_eq!(sim.snapshot(), SimState::default());
    }

    #[tokio::test]
    async fn a_vm_needs_its_volumes_on_the_host() {
        let home = Home::new();
        let sim = SimDriver::open(&home.0, "SimHost-1", Mocks::none()).unwrap();
        let err = sim.start_vm(&start("vm1", &["v9"])).await.unwrap_err();
        assert_eq!(
            err,
            DriverError::Failed {
                code: 530,
                text: "volume v9 not found on host SimHost-1".into()
            }
        );
        assert!(sim.list_vms().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn mocks_fail_fault_and_wait_then_run_out() {
        let home = Home::new();
        let fake = Arc::new(FakeMocks::default());
        fake.add(mock("f", "StartCommand", MockResult::Fail, Some(1)));
        let mut fault = mock("x", "StopCommand", MockResult::Fault, Some(1));
        fault.host_id = Some("h1".into());
        fake.add(fault);
        let mut slow = mock("w", "CreateCommand", MockResult::Pass, Some(1));
        slow.wait_ms = 150;
        fake.add(slow);
        let sim = SimDriver::open(&home.0, "SimHost-1", Mocks::new(fake.clone())).unwrap();
        let p = placement();

        let started = std::time::Instant::now();
        sim.create_volume(&p, "vm1", &volume("v1")).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150));

        let err = sim.start_vm(&start("vm1", &["v1"])).await.unwrap_err();
        assert_eq!(err, DriverError::internal("Simulated failure"));
        assert!(
            sim.list_vms().await.unwrap().is_empty(),
            "a failed start starts nothing"
        );
        sim.start_vm(&start("vm1", &["v1"])).await.unwrap();

        let err = sim.stop_vm(&p, "vm1").await.unwrap_err();
        assert_eq!(err, DriverError::NoAnswer("Simulated fault".into()));
        assert_eq!(
            sim.list_vms().await.unwrap().len(),
            1,
            "a fault does nothing"
        );
        sim.stop_vm(&p, "vm1").await.unwrap();
        assert!(sim.list_vms().await.unwrap().is_empty());
        for id in ["f", "x", "w"] {
            assert_eq!(fake.count_of(id), Some(0), "{id}");
        }
    }

    #[test]
    fn host_names_that_would_escape_the_state_directory_are_refused() {
        for good in ["SimHost-c0-h0", "h1", "kvm.example.com", "a_b"] {
            assert!(valid_host_name(good), "{good}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "a b", "h\0"] {
            assert!(!valid_host_name(bad), "{bad:?}");
        }
        let home = Home::new();
        assert!(SimDriver::open(&home.0, "../escape", Mocks::none()).is_err());
    }

    #[test]
    fn a_corrupt_state_file_is_named_not_replaced() {
        let home = Home::new();
        let dir = state_dir(&home.0, "SimHost-1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(STATE_FILE), b"{not json").unwrap();
        let err = SimDriver::open(&home.0, "SimHost-1", Mocks::none())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("state.json") && err.contains("does not decode"),
            "{err}"
        );
        assert_eq!(std::fs::read(dir.join(STATE_FILE)).unwrap(), b"{not json");
    }
}
