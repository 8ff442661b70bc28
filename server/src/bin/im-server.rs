//! `im-server`: the all-in-one node. With no other process it is a complete
//! server on its embedded store.
//!
//!   im-server [--config FILE] [--listen ADDR] [--data-dir DIR] [--print-config] [--check-config]
//!   im-server token --uid N [--ttl SECS]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use server::{Config, Node};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

#[derive(Parser)]
#[command(
    name = "im-server",
    version,
    about = "One-to-one instant-messaging server (all-in-one node)"
)]
struct Cli {
    /// The TOML configuration file (every field has a default).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Client address to listen on; overrides gateway.listen.
    #[arg(long)]
    listen: Option<String>,
    /// Data directory; overrides storage.data_dir.
    #[arg(long, global = true)]
    data_dir: Option<String>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
    /// Check the configuration and exit (non-zero if it is invalid).
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Mint a login token with the server's secret.
    Token {
        #[arg(long)]
        uid: u64,
        /// Seconds the token stays valid (default: auth.token_ttl_secs).
        #[arg(long)]
        ttl: Option<u64>,
    },
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(listen) = cli.listen {
        config.gateway.listen = listen;
    }
    if let Some(data_dir) = cli.data_dir {
        config.storage.data_dir = data_dir;
    }
    config.validate()?;

    if cli.print_config {
        print!("{}", config.printable()?);
        return Ok(());
    }
    if cli.check_config {
        println!("configuration ok");
        return Ok(());
    }
    if let Some(Command::Token { uid, ttl }) = cli.command {
        let data_dir = std::path::Path::new(&config.storage.data_dir);
        let auth = logic::Authenticator::from_config(&config.auth, data_dir)?;
        println!(
            "{}",
            auth.mint(uid, ttl.unwrap_or(config.auth.token_ttl_secs))
        );
        return Ok(());
    }

    match runtime::fd_limit::raise_to_hard_limit() {
        Some(limit) => log::info!("open-file limit: {limit}"),
        None => log::warn!("cannot read the open-file limit"),
    }
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    let node = Node::start(&config)?;
    if let Some(signal) = signals.forever().next() {
        log::info!("signal {signal}: shutting down");
    }
    node.shutdown();
    Ok(())
}
