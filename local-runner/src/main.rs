//! `stratus-local`: runs Stratus's function binaries on one machine exactly as
//! AWS Lambda runs them: the Runtime API, execution environments with timeouts
//! and crash recovery, the Amazon MQ for RabbitMQ trigger, an API Gateway HTTP
//! API, EventBridge schedules, and supervised long-running processes.
//! It links no function code: it runs the binaries the manifest names.
//! The command line; the runner itself is the `stratus_local` library.

use stratus_local::{package, runner};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "stratus-local",
    version,
    about = "Runs Stratus functions locally, as AWS Lambda runs them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts every function, trigger and process of the manifest, and runs until stopped.
    Up(runner::UpArgs),
    /// Invokes one function once with an event file, like `sam local invoke`, and prints its answer.
    Invoke {
        function: String,
        /// The event, as JSON (`-` reads standard input).
        #[arg(long)]
        event: PathBuf,
        /// Runs the function's `bootstrap` from this Lambda zip (`stratus-local package`)
        /// instead of its binary in --bin-dir.
        #[arg(long, value_name = "ZIP")]
        package: Option<PathBuf>,
        #[command(flatten)]
        common: runner::CommonArgs,
    },
    /// Builds the functions for Lambda (provided.al2023) and writes one zip per
    /// function (its binary as `bootstrap`) and checksums.json.
    Package(package::PackageArgs),
    /// Shows the running runner's functions, instances, queue depths, invocations and errors.
    Status {
        /// Prints the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    stratus_messaging::logging::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stratus-local: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => runner::up(args).await,
            Command::Invoke {
                function,
                event,
                package,
                common,
            } => runner::invoke(&function, &event, package.as_deref(), common).await,
            Command::Package(args) => package::package(args),
            Command::Status { json } => runner::status(json).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stratus-local: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
