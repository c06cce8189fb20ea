//! The registry of every message type that travels on the broker, and the
//! bodies of the types this crate owns. Every type has a sample wire event
//! under `events/` (a test checks this).

use serde::{Deserialize, Serialize};

use crate::names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Asks one component to do something; published to the commands exchange.
    Command,
    /// Says that something happened; published to the internal events exchange.
    Event,
}

impl Kind {
    /// The exchange a message of this kind is published to.
    pub fn exchange(self) -> &'static str {
        match self {
            Kind::Command => names::COMMANDS_EXCHANGE,
            Kind::Event => names::INTERNAL_EVENTS_EXCHANGE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageType {
    pub name: &'static str,
    pub kind: Kind,
    pub description: &'static str,
}

/// Every message type. Add a type here, give it a body below or in its
/// owner's module, and add its sample under `events/rmq/`.
pub const REGISTRY: &[MessageType] = &[
    MessageType {
        name: diag::NOOP,
        kind: Kind::Command,
        description: "Does nothing and succeeds; measures the platform's own cost.",
    },
    MessageType {
        name: diag::ECHO,
        kind: Kind::Command,
        description: "Publishes a diag.echoed event carrying the same text.",
    },
    MessageType {
        name: diag::ECHOED,
        kind: Kind::Event,
        description: "The answer to diag.echo.",
    },
    MessageType {
        name: diag::FAIL,
        kind: Kind::Command,
        description: "Fails transiently until an attempt number, or permanently.",
    },
    MessageType {
        name: diag::SLEEP,
        kind: Kind::Command,
        description: "Sleeps for a while; exercises invocation timeouts.",
    },
    MessageType {
        name: diag::EXIT,
        kind: Kind::Command,
        description: "Ends the function's process at once; exercises crash recovery.",
    },
    MessageType {
        name: account::DISABLE,
        kind: Kind::Command,
        description: "Disables or locks an account (disableAccount's job); the orchestrator carries it out and ends the job.",
    },
    MessageType {
        name: vm::DEPLOY,
        kind: Kind::Command,
        description: "deployVirtualMachine's job: the orchestrator runs the deploy saga.",
    },
    MessageType {
        name: vm::DESTROY,
        kind: Kind::Command,
        description: "destroyVirtualMachine's job: the orchestrator runs the destroy saga (and the expunge with expunge=true).",
    },
    MessageType {
        name: vm::EXPUNGE,
        kind: Kind::Command,
        description: "expungeVirtualMachine's job, or the expunge of a VM whose expunge.delay passed: the orchestrator runs the expunge saga.",
    },
    MessageType {
        name: network::ALLOCATE_NICS,
        kind: Kind::Command,
        description: "A saga step: the VM's NICs, with their addresses and MACs, on the named networks or the account's default isolated network (made on first use).",
    },
    MessageType {
        name: network::RELEASE_NICS,
        kind: Kind::Command,
        description: "A saga step (undo of allocate-nics, or part of an expunge): releases the VM's NICs and addresses.",
    },
    MessageType {
        name: network::STEP_RESULT,
        kind: Kind::Event,
        description: "The result of a networking saga step.",
    },
    MessageType {
        name: compute::RESERVE_CAPACITY,
        kind: Kind::Command,
        description: "A saga step: places the VM on a host and holds its CPU and memory there.",
    },
    MessageType {
        name: compute::RELEASE_CAPACITY,
        kind: Kind::Command,
        description: "A saga step (undo of reserve-capacity, or part of a stop or expunge): gives back what the VM held on its host.",
    },
    MessageType {
        name: compute::STEP_RESULT,
        kind: Kind::Event,
        description: "The result of a compute saga step.",
    },
    MessageType {
        name: storage::ALLOCATE_VOLUMES,
        kind: Kind::Command,
        description: "A saga step: the VM's root volume (and data volume) on a primary storage pool with room, the pool's capacity accounted.",
    },
    MessageType {
        name: storage::RELEASE_VOLUMES,
        kind: Kind::Command,
        description: "A saga step (undo of allocate-volumes, or part of an expunge): removes the VM's volumes and gives back their pool capacity.",
    },
    MessageType {
        name: storage::STEP_RESULT,
        kind: Kind::Event,
        description: "The result of a storage saga step.",
    },
    MessageType {
        name: agent::CREATE_VOLUMES,
        kind: Kind::Command,
        description: "To one host's agent: creates the VM's volumes on the host (CloudStack's CreateCommand).",
    },
    MessageType {
        name: agent::DESTROY_VOLUMES,
        kind: Kind::Command,
        description: "To one host's agent: destroys the VM's volumes on the host (CloudStack's DestroyCommand).",
    },
    MessageType {
        name: agent::START_VM,
        kind: Kind::Command,
        description: "To one host's agent: defines and starts the VM (CloudStack's StartCommand).",
    },
    MessageType {
        name: agent::STOP_VM,
        kind: Kind::Command,
        description: "To one host's agent: stops the VM and forgets it (CloudStack's StopCommand); a VM the host lacks is already stopped.",
    },
    MessageType {
        name: agent::STEP_RESULT,
        kind: Kind::Event,
        description: "The result of a host agent's saga step.",
    },
    MessageType {
        name: agent::VM_REPORT,
        kind: Kind::Event,
        description: "A host agent's report of the VMs it holds and their power state: in full when it starts, and for each VM whose state changed.",
    },
];

pub fn lookup(name: &str) -> Option<&'static MessageType> {
    REGISTRY.iter().find(|t| t.name == name)
}

/// The diagnostics function's messages: a smoke test for a deployment, and the
/// function the platform's own tests and benchmark drive.
pub mod diag {
    use super::*;

    pub const NOOP: &str = "diag.noop";
    pub const ECHO: &str = "diag.echo";
    pub const ECHOED: &str = "diag.echoed";
    pub const FAIL: &str = "diag.fail";
    pub const SLEEP: &str = "diag.sleep";
    pub const EXIT: &str = "diag.exit";

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Noop {}

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Echo {
        pub text: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Echoed {
        pub text: String,
        /// The message id of the `diag.echo` this answers.
        pub in_reply_to: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    pub enum Failure {
        /// Retried through the delay tiers.
        Transient,
        /// Parked at once.
        Permanent,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Fail {
        pub failure: Failure,
        /// A transient failure stops once the message's attempt reaches this number
        /// (absent: it never stops, and the attempts run out).
        #[serde(default)]
        pub until_attempt: Option<u32>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Sleep {
        pub millis: u64,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Exit {
        pub code: i32,
    }
}

/// Accounts: commands the API sends for account jobs.
pub mod account {
    use super::*;

    pub const DISABLE: &str = "account.disable";

    /// disableAccount: the job's id travels in the envelope's `job_id`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Disable {
        pub account_id: String,
        /// true: lock (users cannot log in); false: disable.
        pub lock: bool,
    }
}

/// VM jobs: the commands the API sends to the orchestrator. Each job's id
/// travels in the envelope's `job_id`; ids are UUIDs as strings.
pub mod vm {
    use super::*;

    pub const DEPLOY: &str = "vm.deploy";
    pub const DESTROY: &str = "vm.destroy";
    pub const EXPUNGE: &str = "vm.expunge";

    /// deployVirtualMachine, its ids checked by the API (they exist and are
    /// in the caller's scope); the orchestrator checks the rest.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Deploy {
        /// The VM's id, made by the API and returned as `id` with the job.
        pub vm_id: String,
        pub name: String,
        pub display_name: String,
        /// The VM's owner.
        pub account_id: String,
        pub domain_id: String,
        pub zone_id: String,
        pub service_offering_id: String,
        pub template_id: String,
        /// startvm (default true).
        pub start: bool,
        /// networkids, in order; empty: the account's default isolated network.
        #[serde(default)]
        pub network_ids: Vec<String>,
        #[serde(default)]
        pub ip_address: Option<String>,
        #[serde(default)]
        pub keypairs: Vec<String>,
        /// userdata, base64 as given.
        #[serde(default)]
        pub user_data: Option<String>,
        /// hostid (admins): place the VM on this host or fail.
        #[serde(default)]
        pub host_id: Option<String>,
        /// rootdisksize, GB.
        #[serde(default)]
        pub root_disk_size_gb: Option<u64>,
        #[serde(default)]
        pub disk_offering_id: Option<String>,
        /// size, GB, for a custom disk offering.
        #[serde(default)]
        pub size_gb: Option<u64>,
    }

    /// destroyVirtualMachine.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Destroy {
        pub vm_id: String,
        pub expunge: bool,
    }

    /// expungeVirtualMachine (or the expunge sweep).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Expunge {
        pub vm_id: String,
    }
}

/// The saga protocol between the orchestrator and the components: a step's
/// command carries [`saga::StepRef`] and its input; the component answers with
/// its `<component>.step-result` event carrying the same `StepRef`.
///
/// Every action is idempotent on the VM (keys derive from `vm_id`), and every
/// undo is safe when its action never ran: a step may be undone while its
/// command is still in flight.
pub mod saga {
    use super::*;

    /// Which saga and step a command or result belongs to.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct StepRef {
        pub saga_id: String,
        pub step: String,
        /// true: this is the step's undo.
        pub undo: bool,
    }

    /// A saga step's command: which step, and the input of its action.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Step<T> {
        pub saga: StepRef,
        pub input: T,
    }

    /// How a step ended.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "outcome", rename_all = "kebab-case")]
    pub enum Outcome {
        /// The output feeds later steps (and the undo).
        Done { output: serde_json::Value },
        /// CloudStack's error code (431, 533, 530, ...) and text, as the job
        /// fails with it.
        Failed { code: u16, text: String },
    }

    /// A component's answer to a step's command.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct StepResult {
        pub saga: StepRef,
        pub outcome: Outcome,
    }

    /// The text CloudStack fails a deploy with when nothing has room (533).
    pub fn insufficient_capacity_text(vm_id: &str) -> String {
        format!("Unable to create a deployment for VM instance {{\"id\":\"{vm_id}\"}}")
    }
}

/// Where a placed VM runs: what the host agent's commands and the simulator's
/// scoped behaviour need. Ids are UUIDs as strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    pub zone_id: String,
    pub pod_id: String,
    pub cluster_id: String,
    pub host_id: String,
    /// The host's name: its agent's queue is `stratus.agent.<host_name>`.
    pub host_name: String,
}

/// Networking's saga steps (queue `stratus.fn.network`).
pub mod network {
    use super::*;

    pub const ALLOCATE_NICS: &str = "network.allocate-nics";
    pub const RELEASE_NICS: &str = "network.release-nics";
    pub const STEP_RESULT: &str = "network.step-result";

    /// Allocates NIC `i` on `network_ids[i]` (NIC 0 is the default) with
    /// idempotency key `vm/<vm_id>/nic/<i>`; with no networks named, the
    /// account's isolated network in the zone, made on first use from the
    /// zone's default isolated offering. `ip_address` is for NIC 0.
    /// Output: [`NicsAllocated`].
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct AllocateNics {
        pub vm_id: String,
        pub vm_name: String,
        pub account_id: String,
        pub zone_id: String,
        #[serde(default)]
        pub network_ids: Vec<String>,
        #[serde(default)]
        pub ip_address: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NicInfo {
        pub nic_id: String,
        pub network_id: String,
        pub ip_address: String,
        pub netmask: String,
        pub gateway: String,
        pub mac_address: String,
        pub vlan: Option<String>,
        pub is_default: bool,
        pub device_id: u32,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct NicsAllocated {
        pub nics: Vec<NicInfo>,
    }

    /// Releases every NIC `allocate-nics` could have made for the VM
    /// (`count`: how many networks it was asked for, at least 1).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ReleaseNics {
        pub vm_id: String,
        pub count: u32,
    }
}

/// Compute's saga steps (queue `stratus.fn.compute`, which also takes the
/// agents' `agent.vm-report` events).
pub mod compute {
    use super::*;

    pub const RESERVE_CAPACITY: &str = "compute.reserve-capacity";
    pub const RELEASE_CAPACITY: &str = "compute.release-capacity";
    pub const STEP_RESULT: &str = "compute.step-result";

    /// Places the VM and holds its capacity with key `vm/<vm_id>/host`.
    /// Output: [`super::Placement`]. No host with room: failed, 533.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ReserveCapacity {
        pub vm_id: String,
        pub zone_id: String,
        pub cpu_number: u32,
        /// MHz per CPU.
        pub cpu_speed: u32,
        /// MB.
        pub memory_mb: u32,
        #[serde(default)]
        pub host_tags: Option<String>,
        /// hostid: only this host, or fail.
        #[serde(default)]
        pub host_id: Option<String>,
    }

    /// Gives back what the VM holds (key `vm/<vm_id>/host`); safe to repeat.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ReleaseCapacity {
        pub vm_id: String,
    }
}

/// Storage's saga steps (queue `stratus.fn.storage`).
pub mod storage {
    use super::*;

    pub const ALLOCATE_VOLUMES: &str = "storage.allocate-volumes";
    pub const RELEASE_VOLUMES: &str = "storage.release-volumes";
    pub const STEP_RESULT: &str = "storage.step-result";

    /// The VM's root volume (id derived from `vm/<vm_id>/root`, size from the
    /// template or `root_disk_size_gb`) and, with a disk offering, its data
    /// volume (`vm/<vm_id>/data`), on a primary pool in the zone with room
    /// (in the placed cluster when `cluster_id` is given), the pool's
    /// allocated size raised. Output: [`VolumesAllocated`].
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct AllocateVolumes {
        pub vm_id: String,
        pub vm_name: String,
        pub account_id: String,
        pub zone_id: String,
        pub template_id: String,
        #[serde(default)]
        pub root_disk_size_gb: Option<u64>,
        #[serde(default)]
        pub disk_offering_id: Option<String>,
        #[serde(default)]
        pub size_gb: Option<u64>,
        #[serde(default)]
        pub cluster_id: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct VolumeInfo {
        pub volume_id: String,
        pub name: String,
        /// `ROOT` or `DATADISK`.
        pub volume_type: String,
        /// Bytes.
        pub size: u64,
        pub pool_id: String,
        pub device_id: u32,
        /// The template a root volume is made from.
        #[serde(default)]
        pub template_id: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct VolumesAllocated {
        pub volumes: Vec<VolumeInfo>,
    }

    /// Removes the VM's volumes (root and data) and gives their pool
    /// capacity back; safe to repeat and when they never existed.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ReleaseVolumes {
        pub vm_id: String,
    }
}

/// Host agents' commands (routing key `<type>.<host name>`, queue
/// `stratus.agent.<host name>`) and events. An agent touches no store.
pub mod agent {
    use super::*;

    pub const CREATE_VOLUMES: &str = "agent.create-volumes";
    pub const DESTROY_VOLUMES: &str = "agent.destroy-volumes";
    pub const START_VM: &str = "agent.start-vm";
    pub const STOP_VM: &str = "agent.stop-vm";
    pub const STEP_RESULT: &str = "agent.step-result";
    pub const VM_REPORT: &str = "agent.vm-report";

    /// Creates the volumes on the host; output `{}`. Idempotent per volume.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct CreateVolumes {
        pub vm_id: String,
        pub placement: Placement,
        pub volumes: Vec<super::storage::VolumeInfo>,
    }

    /// Destroys the volumes on the host; a volume it lacks is already gone.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DestroyVolumes {
        pub vm_id: String,
        pub placement: Placement,
        pub volume_ids: Vec<String>,
    }

    /// Defines and starts the VM; output `{"power_state": "PowerOn"}`. A VM
    /// already running is started.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct StartVm {
        pub vm_id: String,
        pub vm_name: String,
        pub placement: Placement,
        pub cpu_number: u32,
        pub cpu_speed: u32,
        pub memory_mb: u32,
        pub nics: Vec<super::network::NicInfo>,
        pub volume_ids: Vec<String>,
        #[serde(default)]
        pub user_data: Option<String>,
    }

    /// Stops the VM and removes it from the host; output `{}`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct StopVm {
        pub vm_id: String,
        pub placement: Placement,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum PowerState {
        PowerOn,
        PowerOff,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct VmPower {
        pub vm_id: String,
        pub power_state: PowerState,
    }

    /// What a host holds. `full`: every VM the host has (sent when the agent
    /// starts); else only the VMs listed changed.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct VmReport {
        pub host_name: String,
        pub full: bool,
        pub vms: Vec<VmPower>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_valid_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for t in REGISTRY {
            assert!(names::is_valid_message_type(t.name), "{}", t.name);
            assert!(seen.insert(t.name), "duplicate {}", t.name);
        }
        assert_eq!(lookup("diag.echo").unwrap().kind, Kind::Command);
        assert_eq!(
            lookup("diag.echoed").unwrap().kind.exchange(),
            "stratus.events"
        );
        assert!(lookup("diag.nope").is_none());
    }
}
