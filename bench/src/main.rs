//! `stratus-bench`: measurements that decide and check the platform's design.
//! Run in release: `cargo run --release -p stratus-bench -- <bench>`.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use stratus_contracts::topology::{QueueArguments, QueueType};

mod api_bench;
mod deploy_bench;
mod runner_bench;
mod stats;
mod store_bench;
use stats::Summary;

#[derive(Parser)]
struct Cli {
    #[arg(
        long,
        env = "STRATUS_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672"
    )]
    amqp_url: String,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// The API function through the gateway and the runner against a bare axum
    /// handler answering the same JSON: signed listZones, and a page of 500 of
    /// 10,000 VMs.
    Api {
        #[arg(long, default_value_t = 4000)]
        requests: usize,
        #[arg(long, default_value_t = 200)]
        vm_requests: usize,
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        #[arg(long, default_value_t = 10_000)]
        vms: usize,
    },
    /// VM deploy latency through every real hop (the repository's manifest,
    /// three simulated hosts), one at a time, against a one-step job.
    Deploy {
        #[arg(long, default_value_t = 100)]
        deploys: usize,
        #[arg(long, default_value_t = 50)]
        baseline_jobs: usize,
    },
    /// Confirm latency of one persistent publish at a time, classic against quorum queues.
    ConfirmLatency {
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        #[arg(long, default_value_t = 512)]
        payload: usize,
    },
    /// The data service's store: operations, then CloudStack paging with counts.
    Store {
        /// `sqlite` or `dynamodb`.
        #[arg(long, default_value = "sqlite")]
        backend: String,
        /// The DynamoDB endpoint (moto's server in tests).
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        endpoint: String,
        #[arg(long, default_value_t = 2000)]
        ops: usize,
        /// VMs in the paging test (100,000 on SQLite, 10,000 on moto).
        #[arg(long)]
        vms: Option<usize>,
        #[arg(long, default_value_t = 500)]
        pagesize: usize,
    },
    /// The local runner and the diag function against a bare lapin consumer:
    /// drain throughput and added latency.
    Runner {
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        #[arg(long, default_value_t = 100)]
        batch_size: u16,
        #[arg(long, default_value_t = 3000)]
        latency_messages: usize,
        /// Messages per second in the latency run.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.bench {
        Bench::Api {
            requests,
            vm_requests,
            concurrency,
            vms,
        } => {
            api_bench::run(
                &cli.amqp_url,
                api_bench::Options {
                    requests,
                    vm_requests,
                    concurrency,
                    vms,
                },
            )
            .await
        }
        Bench::Deploy {
            deploys,
            baseline_jobs,
        } => {
            deploy_bench::run(
                &cli.amqp_url,
                deploy_bench::Options {
                    deploys,
                    baseline_jobs,
                },
            )
            .await
        }
        Bench::ConfirmLatency { messages, payload } => {
            confirm_latency(&cli.amqp_url, messages, payload).await
        }
        Bench::Store {
            backend,
            endpoint,
            ops,
            vms,
            pagesize,
        } => {
            let vms = vms.unwrap_or(if backend == "dynamodb" {
                10_000
            } else {
                100_000
            });
            store_bench::run(store_bench::Options {
                backend,
                endpoint,
                ops,
                vms,
                pagesize,
            })
            .await
        }
        Bench::Runner {
            messages,
            batch_size,
            latency_messages,
            rate,
        } => {
            runner_bench::run(
                &cli.amqp_url,
                runner_bench::Options {
                    messages,
                    batch_size,
                    latency_messages,
                    rate,
                },
            )
            .await
        }
    }
}

async fn confirm_latency(url: &str, messages: usize, payload: usize) -> anyhow::Result<()> {
    let conn = Connection::connect(&format!("{url}/%2F"), ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ")?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let body = vec![b'x'; payload];
    println!(
        "confirm latency, one persistent {payload} B publish awaited at a time, {messages} messages"
    );
    let mut baseline = None;
    for queue_type in [QueueType::Classic, QueueType::Quorum] {
        let queue = format!("stratus.bench.confirm.{queue_type:?}").to_lowercase();
        let args = stratus_messaging::broker::queue_arguments(&QueueArguments {
            queue_type: Some(queue_type),
            ..Default::default()
        });
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        channel
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await?;
        let mut samples = Vec::with_capacity(messages);
        for i in 0..messages + 100 {
            let start = Instant::now();
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await?;
            if i >= 100 {
                samples.push(start.elapsed());
            }
        }
        let s = Summary::of(&mut samples);
        let base = *baseline.get_or_insert(s.p50);
        println!(
            "  {:<8} p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  {:>7.0} msg/s   p50 ratio to classic {:.2}",
            format!("{queue_type:?}").to_lowercase(),
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            messages as f64 / s.total.as_secs_f64(),
            s.p50.as_secs_f64() / base.as_secs_f64()
        );
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
