//! The `stickylb` command line: parse arguments, load the config, call the library, map
//! errors to exit codes (2 = bad config, 1 = could not run or, for `health`, not healthy).

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Probe the instance the config file describes (admin /healthz, or the first client
    /// listener when admin.listen = ""): exit 0 healthy, 1 not, 2 bad config
    Health,
    /// Start three demo backends and the balancer, no config file needed
    Demo {
        /// Where the balancer listens
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the admin API listens
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// Which session kind to show: insert (stickylb's cookie), servlet (Tomcat jvmRoute
        /// in JSESSIONID), soap (Axis2 ServiceGroupId), preferred (replicating backends)
        #[arg(long, default_value = "insert")]
        mode: stickylb::demo::Kind,
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
        Command::Health => match stickylb::config::load(&path) {
            Ok(config) => probe::run(stickylb::config::HealthProbe::for_config(&config)),
            Err(e) => config_error(&e),
        },
        Command::Demo { listen, admin, mode } => block_on(stickylb::demo(listen, admin, mode)),
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

/// `stickylb health`: one blocking probe with a minimal HTTP/1.0 request, for a container's
/// HEALTHCHECK (no curl in the image).
mod probe {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::process::ExitCode;
    use std::time::{Duration, Instant};
    use stickylb::config::HealthProbe;

    /// The whole probe: connect, send, read the status line.
    const TIMEOUT: Duration = Duration::from_secs(2);
    /// Enough for any status line.
    const MAX_HEAD: usize = 1024;

    pub fn run(probe: HealthProbe) -> ExitCode {
        let deadline = Instant::now() + TIMEOUT;
        let addr = probe.addr();
        let result = match probe {
            HealthProbe::Admin(_) => status(addr, "GET", "/healthz", deadline).and_then(|code| match code {
                200 => Ok(format!("GET http://{addr}/healthz answered 200")),
                code => Err(format!("GET http://{addr}/healthz answered {code}")),
            }),
            HealthProbe::Listener { tls: false, .. } => status(addr, "HEAD", "/", deadline)
                .map(|code| format!("HEAD http://{addr}/ answered {code} (admin API off: any answer is healthy)")),
            HealthProbe::Listener { tls: true, .. } => {
                connect(addr, deadline).map(|_| format!("{addr} accepted a connection (admin API off, TLS listener)"))
            }
        };
        match result {
            Ok(message) => {
                println!("healthy: {message}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("unhealthy: {message}");
                ExitCode::FAILURE
            }
        }
    }

    fn left(deadline: Instant) -> Result<Duration, String> {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(format!("no answer within {TIMEOUT:?}"))
        } else {
            Ok(d)
        }
    }

    fn connect(addr: std::net::SocketAddr, deadline: Instant) -> Result<TcpStream, String> {
        TcpStream::connect_timeout(&addr, left(deadline)?).map_err(|e| format!("cannot connect to {addr}: {e}"))
    }

    /// The status code of `METHOD PATH` on `addr`.
    fn status(addr: std::net::SocketAddr, method: &str, path: &str, deadline: Instant) -> Result<u16, String> {
        let mut stream = connect(addr, deadline)?;
        let io = |e: std::io::Error| format!("{addr}: {e}");
        stream.set_write_timeout(Some(left(deadline)?)).map_err(io)?;
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: stickylb-health\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < MAX_HEAD {
            stream.set_read_timeout(Some(left(deadline)?)).map_err(io)?;
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Err(format!("{addr}: no answer within {TIMEOUT:?}"));
                }
                Err(e) => return Err(io(e)),
            }
        }
        let line = String::from_utf8_lossy(&head);
        let line = line.lines().next().unwrap_or("");
        let mut words = line.split_whitespace();
        match (words.next(), words.next().and_then(|c| c.parse::<u16>().ok())) {
            (Some(version), Some(code)) if version.starts_with("HTTP/") => Ok(code),
            _ => Err(format!("{addr} did not answer HTTP (got {line:?})")),
        }
    }
}
