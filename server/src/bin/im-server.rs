//! `im-server`: the all-in-one node. With no other process it is a complete
//! server on its embedded store.
//!
//!   im-server [--config FILE] [--listen ADDR] [--data-dir DIR] [--print-config] [--check-config]
//!   im-server token --uid N [--ttl SECS]
//!   im-server revoke --uid N [--before-ms MS]

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use server::{Node, cli};

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
    #[command(flatten)]
    flags: cli::ConfigFlags,
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
    /// Revoke a user's tokens issued until now (a stolen phone): asks the
    /// running server through its business API (api.listen, its first key
    /// or <data_dir>/api.key).
    Revoke {
        #[arg(long)]
        uid: u64,
        /// Revoke those issued at or before this Unix time in ms (default: now).
        #[arg(long, default_value_t = 0)]
        before_ms: u64,
    },
}

fn main() -> anyhow::Result<()> {
    cli::init_logging();
    let cli = Cli::parse();
    let config = cli::load(cli.config.as_deref(), |config| {
        if let Some(listen) = cli.listen {
            config.gateway.listen = listen;
        }
        if let Some(data_dir) = cli.data_dir {
            config.storage.data_dir = data_dir;
        }
        cli.flags.apply(config);
    })?;
    if cli.flags.done(&config)? {
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
    if let Some(Command::Revoke { uid, before_ms }) = cli.command {
        let answer = cli::revoke(&config, uid, before_ms)?;
        println!("{answer}");
        return Ok(());
    }
    cli::serve(|| Node::start(&config), Node::reload_tls, Node::shutdown)
}
