//! The `stickylb` command line: parse arguments, load the config, call the library, map
//! errors to exit codes (2 = bad config, 1 = could not run).

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "stickylb", version, about = "A load balancer with sticky sessions for stateful web apps")]
struct Cli {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// Config file (default: $STICKYLB_CONFIG, then ./stickylb.toml)
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the balancer (the default)
    Run,
    /// Validate the config file and exit
    Check,
    /// Start three demo backends and the balancer, no config file needed
    Demo {
        /// Where the balancer listens
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the admin API listens
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.config.config.clone().unwrap_or_else(stickylb::config::default_path);
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => match stickylb::config::load(&path) {
            Ok(_) => {
                println!("config ok");
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Command::Run => {
            let config = match stickylb::config::load(&path) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            let _log = stickylb::logging::init(&config.log);
            block_on(stickylb::run(config, Some(path)))
        }
        Command::Demo { listen, admin } => block_on(stickylb::demo(listen, admin)),
    }
}

fn config_error(e: &stickylb::config::ConfigError) -> ExitCode {
    for m in e.messages() {
        eprintln!("error: {m}");
    }
    ExitCode::from(2)
}

fn block_on(f: impl std::future::Future<Output = Result<(), stickylb::RunError>>) -> ExitCode {
    // The main thread is worker 0: a single-threaded runtime (the library starts one more per
    // CPU); work stealing between cores measured 15-40% slower here (../shared/bench/NOTES.md).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
