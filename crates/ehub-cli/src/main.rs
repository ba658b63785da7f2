//! `ehub`: the command line of the ehub toolkit.
//!
//! Exit codes (documented in `ehub --help` and the README):
//! 0 success, 1 other error, 2 bad usage, 3 authentication, 4 connection, 5 not found,
//! 6 event rejected or too large, 7 timeout, 8 consumer disconnected, 9 server busy.

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

mod admin;
mod bench;
mod checkpoints;
mod client;
mod process;
mod serve;
mod timefmt;
mod top;
mod transfer;

const EXIT_CODES: &str = "Exit codes: 0 success, 1 other error, 2 bad usage, 3 authentication, 4 connection, \
5 not found, 6 event rejected or too large, 7 timeout, 8 consumer disconnected, 9 server busy.";

#[derive(Parser)]
#[command(
    name = "ehub",
    version,
    about = "Azure Event Hubs toolkit: an Event Hubs-compatible broker and client tools",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Log filter (RUST_LOG syntax), e.g. `info` or `ehub_broker_amqp=debug`.
    #[arg(long, global = true, env = "EHUB_LOG")]
    log: Option<String>,
    /// Connection string of the namespace (default: a local `ehub serve` with its defaults,
    /// "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;", hub eh1).
    #[arg(long, global = true, env = "EVENTHUB_CONNECTION_STRING", hide_env_values = true)]
    connection_string: Option<String>,
    /// Event Hub name (default: the connection string's EntityPath).
    #[arg(long, global = true)]
    hub: Option<String>,
    /// Connect to this address instead of the namespace's (`amqps://host:port`,
    /// `wss://host:port`, `amqp://host:port`), e.g. an `ehub serve --tls-self-signed`.
    #[arg(long, global = true, value_name = "URL")]
    custom_endpoint: Option<String>,
    /// Also trust the CA certificates in this PEM file for TLS (e.g. ehub-data/tls/ca.pem).
    #[arg(long, global = true, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// The broker's management endpoint, for `hubs` and `consumer-groups` (default: port 5300
    /// on the connection string's host).
    #[arg(long, global = true, env = "EHUB_MANAGEMENT", value_name = "URL")]
    management: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Event Hubs-compatible broker.
    Serve(ServeArgs),
    /// Show hub and partition properties.
    Info,
    /// Send events: bodies as arguments, files, one per line from stdin, or generated.
    Send(client::SendArgs),
    /// Receive events from one or all partitions.
    Receive(client::ReceiveArgs),
    /// Measure throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Inspect what event processors keep in a checkpoint store.
    #[command(subcommand)]
    Checkpoints(checkpoints::CheckpointsCommand),
    /// A live view of an `ehub serve` from its /metrics: rates per partition, receivers,
    /// connections, fsyncs.
    Top(top::TopArgs),
    /// Make an `ehub serve` misbehave on purpose (its management API): detach links, close
    /// connections, expire tokens, throttle sends, slow fsyncs or writes, shorten idle timeouts.
    #[command(subcommand)]
    Fault(admin::FaultCommand),
    /// List, create, grow and delete hubs of an `ehub serve` while it runs (its management API).
    #[command(subcommand)]
    Hubs(admin::HubsCommand),
    /// List, create and delete the consumer groups of a hub (--hub) of an `ehub serve`.
    #[command(subcommand, name = "consumer-groups")]
    ConsumerGroups(admin::ConsumerGroupsCommand),
    /// Write a partition's events to JSON lines (a file, continued where it ends; or stdout).
    Export(transfer::ExportArgs),
    /// Send JSON lines written by `export` (or `receive --output json`) back as events.
    Import(transfer::ImportArgs),
    /// Print a shell completion script (e.g. `ehub completions bash > /etc/bash_completion.d/ehub`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `ehub man > ehub.1`.
    Man,
}

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (plain AMQP).
    #[arg(long)]
    listen: Option<String>,
    /// Also serve AMQP over WebSockets (path /$servicebus/websocket, no TLS) on HOST:PORT.
    #[arg(long)]
    listen_ws: Option<String>,
    /// Serve the Azure Blob endpoint (for checkpoint stores) on HOST:PORT, or `off`.
    /// Default 127.0.0.1:10000.
    #[arg(long)]
    listen_blob: Option<String>,
    /// Serve the HTTP management endpoint (GET /health, the hubs and consumer-groups API) on
    /// HOST:PORT, or `off`. Default 127.0.0.1:5300.
    #[arg(long)]
    listen_management: Option<String>,
    /// Serve the Kafka endpoint (SASL PLAIN, user `$ConnectionString`, a connection string as
    /// password) on HOST:PORT, or `off`. Default 127.0.0.1:9092.
    #[arg(long)]
    listen_kafka: Option<String>,
    /// The HOST:PORT the Kafka endpoint tells clients to connect to (behind a port mapping or a
    /// proxy). Default: the address each client reached.
    #[arg(long, value_name = "HOST:PORT")]
    kafka_advertised: Option<String>,
    /// Where the Kafka endpoint listens over TLS (SASL_SSL, the service's port 9093), or "off";
    /// served when TLS is on (--tls-self-signed or --tls-cert). Default 127.0.0.1:9093.
    #[arg(long, value_name = "HOST:PORT|off")]
    listen_kafka_tls: Option<String>,
    /// The HOST:PORT the Kafka endpoint tells SASL_SSL clients to connect to. Default: the
    /// address each client reached.
    #[arg(long, value_name = "HOST:PORT")]
    kafka_advertised_tls: Option<String>,
    /// Serve AMQP over TLS with this certificate chain (PEM; needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key", conflicts_with = "tls_self_signed")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve AMQP over TLS with a development CA created in <data-dir>/tls on first start (the
    /// CA's path is printed; clients trust it) and a certificate for localhost, 127.0.0.1 and
    /// the config's [tls] hosts.
    #[arg(long)]
    tls_self_signed: bool,
    /// Where AMQP over TLS is served when TLS is on (HOST:PORT or off). Default 127.0.0.1:5671.
    #[arg(long)]
    listen_tls: Option<String>,
    /// Also serve AMQP over WebSockets over TLS (the service's port 443 path) on HOST:PORT.
    #[arg(long)]
    listen_wss: Option<String>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Config file: our TOML, or Microsoft's emulator Config.json.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Durability: always (fsync before ack), interval, or never.
    #[arg(long)]
    fsync: Option<String>,
    /// Print the shipped default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
}

/// Connection settings shared by the client commands.
pub(crate) struct Target {
    pub connection_string: String,
    pub hub: Option<String>,
    /// The broker's hubs, when no hub was named and its management endpoint listed them.
    pub known_hubs: Option<Vec<String>>,
    /// Transport settings (custom endpoint, extra CA).
    pub options: ehub::ClientOptions,
    pub output: Output,
}

/// The connection string of a local `ehub serve` with its shipped defaults.
const LOCAL_BROKER: &str =
    "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";
/// The hub a default `ehub serve` has.
const LOCAL_HUB: &str = "eh1";

impl Target {
    /// The connection settings: those given, or else a local `ehub serve` with its defaults
    /// (said in one line on stderr, so nobody mistakes it for the namespace they meant).
    fn from(cli: &Cli) -> Result<Target> {
        let management = cli.management.as_deref();
        let (connection_string, local) = match &cli.connection_string {
            Some(cs) => (cs.clone(), false),
            None => (LOCAL_BROKER.to_owned(), true),
        };
        let entity_path = ehub_model::ConnectionString::parse(&connection_string).ok().and_then(|c| c.entity_path);
        let mut hub = cli.hub.clone();
        let mut known_hubs = None;
        if hub.is_none() && entity_path.is_none() {
            // No hub named anywhere: the broker's only hub, if its management endpoint says it
            // has exactly one.
            known_hubs = admin::Admin::try_hub_names(&connection_string, management);
            hub = match known_hubs.as_deref() {
                Some([only]) => Some(only.clone()),
                Some(_) => None,
                None if local => Some(LOCAL_HUB.to_owned()),
                None => None,
            };
        }
        if local {
            eprintln!(
                "ehub: no connection string given: using the local `ehub serve` at 127.0.0.1:5672{} \
                 (--connection-string or EVENTHUB_CONNECTION_STRING for another namespace)",
                hub.as_deref().map(|h| format!(", hub {h}")).unwrap_or_default()
            );
        }
        let options = ehub::ClientOptions {
            custom_endpoint: cli.custom_endpoint.clone(),
            ca_certificates: cli.ca_file.clone(),
            ..Default::default()
        };
        Ok(Target { connection_string, hub, known_hubs, options, output: cli.output })
    }
}

/// Exit code for an error, by the client error kind when there is one.
fn exit_code(e: &anyhow::Error) -> u8 {
    use ehub::ErrorKind as K;
    if let Some(m) = e.chain().find_map(|c| c.downcast_ref::<admin::ManagementError>()) {
        return match m.status {
            401 | 403 => 3,
            404 => 5,
            400 => 2,
            _ => 1,
        };
    }
    let Some(err) = e.chain().find_map(|c| c.downcast_ref::<ehub::Error>()) else { return 1 };
    match err.kind() {
        K::Authentication => 3,
        K::Connect | K::ConnectionLost | K::ClientClosed => 4,
        K::ResourceNotFound => 5,
        K::EventData | K::EventDataSend | K::MessageTooLarge => 6,
        K::OperationTimeout => 7,
        K::ConsumerDisconnected => 8,
        K::ServerBusy => 9,
        K::InvalidArgument => 2,
        _ => 1,
    }
}

/// What to do about an error, by kind.
fn hint(e: &anyhow::Error) -> Option<&'static str> {
    use ehub::ErrorKind as K;
    let err = e.chain().find_map(|c| c.downcast_ref::<ehub::Error>())?;
    Some(match err.kind() {
        K::Authentication => "check SharedAccessKeyName/SharedAccessKey (or the token) and the policy's rights",
        K::Connect | K::ConnectionLost => {
            "check that the namespace is reachable; for a local broker run `ehub serve` and use UseDevelopmentEmulator=true"
        }
        K::ResourceNotFound => "check the hub name (--hub or EntityPath), the consumer group and the partition id",
        K::MessageTooLarge => "send smaller events or smaller batches (the limit is 1 MiB per message)",
        K::ConsumerDisconnected => "another receiver with a higher or equal owner level took the partition",
        K::ServerBusy => "the service is throttling; retry later or send less",
        K::OperationTimeout => "the service did not answer in time; retry or raise the timeout",
        _ => return None,
    })
}

/// mimalloc instead of glibc's malloc: buffers are allocated on one thread and freed on another
/// (network task to log writer, connection task to receiver), and glibc's arena lock showed up as
/// futex traffic in the profiles of both the broker and the client.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    let filter = cli.log.clone().unwrap_or_else(|| default_log.into());
    let filter = match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: invalid --log filter '{filter}': {e}");
            return ExitCode::from(2);
        }
    };
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Info => Target::from(&cli).and_then(|t| client::info(&t)),
        Command::Send(args) => Target::from(&cli).and_then(|t| client::send(&t, args)),
        Command::Receive(args) => Target::from(&cli).and_then(|t| client::receive(&t, args)),
        Command::Bench(b) => Target::from(&cli).and_then(|t| bench::run(&t, b)),
        Command::Checkpoints(c) => Target::from(&cli).and_then(|t| checkpoints::run(&t, c)),
        Command::Export(a) => Target::from(&cli).and_then(|t| transfer::export(&t, a)),
        Command::Top(a) => Target::from(&cli).and_then(|t| top::run(&t, cli.management.as_deref(), a)),
        Command::Fault(c) => Target::from(&cli).and_then(|t| {
            admin::fault(&t.connection_string, cli.management.as_deref(), cli.hub.as_deref(), cli.output, c)
        }),
        Command::Hubs(c) => {
            Target::from(&cli).and_then(|t| admin::hubs(&t.connection_string, cli.management.as_deref(), cli.output, c))
        }
        Command::ConsumerGroups(c) => {
            Target::from(&cli).and_then(|t| admin::consumer_groups(&t, cli.management.as_deref(), c))
        }
        Command::Import(a) => Target::from(&cli).and_then(|t| transfer::import(&t, a)),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "ehub", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(h) = hint(&e) {
                eprintln!("hint: {h}");
            }
            ExitCode::from(exit_code(&e))
        }
    }
}
