//! `ehub`: the command line of the ehub toolkit.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

mod serve;

#[derive(Parser)]
#[command(name = "ehub", version, about = "Azure Event Hubs toolkit: an Event Hubs-compatible broker and client tools")]
struct Cli {
    /// Log filter (RUST_LOG syntax), e.g. `info` or `ehub_broker=debug`.
    #[arg(long, global = true, env = "EHUB_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Event Hubs-compatible broker.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (plain AMQP).
    #[arg(long)]
    listen: Option<String>,
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => serve::run(args),
    }
}
