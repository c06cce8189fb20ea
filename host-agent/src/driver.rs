//! The driver interface: what the agent asks of the host's hypervisor. The
//! agent's consumer (see [`crate::agent`]) decodes commands, orders them per
//! VM and answers the saga; a driver only does the work on the host. Each
//! call is one CloudStack agent command (`CreateCommand` and
//! `DestroyCommand` act on one volume, as in CloudStack, so an
//! `agent.create-volumes` carrying two volumes is two calls).
//!
//! Every operation is idempotent, because the broker redelivers whatever was
//! unacked when the agent or its connection died: creating a volume that
//! exists, starting a VM that runs, stopping a VM or destroying a volume the
//! host lacks all succeed.
//!
//! The one driver today is the simulator ([`crate::sim`]); a real hypervisor
//! driver implements the same trait and nothing else changes.

use std::future::Future;

use stratus_contracts::message_types::Placement;
use stratus_contracts::message_types::agent::{StartVm, VmPower};
use stratus_contracts::message_types::storage::VolumeInfo;

/// How a driver command ended without success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The host answered failure: CloudStack's error code and the text the
    /// job fails with.
    #[error("failed ({code}): {text}")]
    Failed { code: u16, text: String },
    /// The host never answered (CloudStack's agent threw: a simulated fault,
    /// a hung hypervisor). No step result is sent; the saga's step timeout
    /// ends the job.
    #[error("no answer: {0}")]
    NoAnswer(String),
}

impl DriverError {
    /// A failure with CloudStack's internal error code (530).
    pub fn internal(text: impl Into<String>) -> Self {
        DriverError::Failed {
            code: 530,
            text: text.into(),
        }
    }
}

/// A host's hypervisor, as the agent drives it. `placement` says where the
/// command runs (a simulator scopes its configured behaviour by it; a real
/// driver may ignore it).
pub trait Driver: Send + Sync + 'static {
    /// Creates `volume` for `vm_id` on the host (CloudStack's `CreateCommand`).
    /// A volume that exists is created.
    fn create_volume(
        &self,
        placement: &Placement,
        vm_id: &str,
        volume: &VolumeInfo,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Destroys a volume (CloudStack's `DestroyCommand`). A volume the host
    /// lacks is destroyed.
    fn destroy_volume(
        &self,
        placement: &Placement,
        vm_id: &str,
        volume_id: &str,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Defines and starts the VM (CloudStack's `StartCommand`). A VM that
    /// runs is started; every volume it names must be on the host.
    fn start_vm(&self, vm: &StartVm) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Stops the VM and forgets it (CloudStack's `StopCommand`). A VM the
    /// host lacks is stopped.
    fn stop_vm(
        &self,
        placement: &Placement,
        vm_id: &str,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Every VM the host holds, with its power state.
    fn list_vms(&self) -> impl Future<Output = Result<Vec<VmPower>, DriverError>> + Send;
}
