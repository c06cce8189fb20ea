//! `stratus-agent`: the host agent, one supervised process per hypervisor
//! host. So far it keeps its host's heartbeat in Consul (see the library);
//! the VM work comes with the compute issue.

use std::time::Duration;

use clap::Parser;
use stratus_agent::Heartbeat;
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    stratus_messaging::logging::init();
    let args = Args::parse();
    let consul = stratus_discovery::Client::from_env().ok_or_else(|| {
        anyhow::anyhow!("CONSUL_HTTP_ADDR is not set: the agent registers its host in Consul")
    })?;
    let settings = ConsulSettings::new(consul.clone(), Duration::from_secs(3));
    // A long-running process watches its settings (ping.interval) as they change.
    tokio::spawn(settings.clone().watch());
    let heartbeat = Heartbeat {
        consul,
        settings: settings.clone(),
        host: args.host,
        address: args.address,
    };
    tracing::info!(host = %heartbeat.host, consul = %heartbeat.consul.addr(), "agent started");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = heartbeat.run() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    heartbeat.deregister().await;
    tracing::info!(host = %heartbeat.host, "agent stopped");
    Ok(())
}
