//! `stratus-agent`: the host agent, one supervised process per hypervisor
//! host. It runs two things side by side (see the library):
//!
//! - the heartbeat, which registers the host in Consul and keeps its TTL
//!   check passing; it needs `CONSUL_HTTP_ADDR` (without it no heartbeat
//!   runs, which is said in the log, and the host is never Up);
//! - the VM work: it consumes `stratus.agent.<host>` and runs each command on
//!   the simulator driver, whose state lives in `$STRATUS_HOME/agents/<host>/`.
//!   Consul is optional for it: without `CONSUL_HTTP_ADDR` the simulator has
//!   no `configureSimulator` mocks.

use std::time::Duration;

use clap::Parser;
use stratus_agent::sim::{Mocks, SimDriver};
use stratus_agent::{Agent, Heartbeat};
use stratus_discovery::settings::ConsulSettings;

#[derive(Parser)]
#[command(name = "stratus-agent", version, about = "The Stratus host agent")]
struct Args {
    /// The host this agent runs, by its name in the data service.
    #[arg(long)]
    host: String,
    /// The address the agent is reached at.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stratus_messaging::logging::init();
    let args = Args::parse();
    let config = stratus_secrets::aws_refs::config_from_env().await?;
    let consul = stratus_discovery::Client::from_config(&config);
    let heartbeat = match &consul {
        Some(consul) => {
            let settings = ConsulSettings::new(consul.clone(), Duration::from_secs(3));
            // A long-running process watches its settings (ping.interval) as they change.
            tokio::spawn(settings.clone().watch());
            Some(Heartbeat {
                consul: consul.clone(),
                settings,
                host: args.host.clone(),
                address: args.address.clone(),
            })
        }
        None => {
            tracing::warn!(host = %args.host, "CONSUL_HTTP_ADDR is not set: no heartbeat runs (the host is not registered and will not be Up), and the simulator has no mocks");
            None
        }
    };
    let driver = SimDriver::open(&config.home, &args.host, Mocks::from_consul(consul.clone()))?;
    let agent = Agent::new(config, &args.host, driver)?;
    tracing::info!(host = %args.host, queue = %agent.queue_name(), consul = consul.as_ref().map(|c| c.addr()).unwrap_or(""), "agent started");
    let beating = async {
        match &heartbeat {
            Some(h) => h.run().await,
            None => std::future::pending().await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = beating => {}
        () = agent.run() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    if let Some(heartbeat) = &heartbeat {
        heartbeat.deregister().await;
    }
    tracing::info!(host = %args.host, "agent stopped");
    Ok(())
}
