//! `im-gateway`: the connection tier on its own, linked to the logic tier
//! (`im-logic serve`). Run several, each with its own client port.
//!
//!   im-gateway [--config FILE] [--logic ADDR[,ADDR...]] [--listen ADDR] [--print-config] [--check-config]

use std::path::PathBuf;

use clap::Parser;
use server::{GatewayNode, cli};

#[derive(Parser)]
#[command(
    name = "im-gateway",
    version,
    about = "The im connection tier, linked to im-logic serve"
)]
struct Cli {
    /// The TOML configuration file (every field has a default).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The logic tier's link addresses; overrides link.logic.
    #[arg(long, value_delimiter = ',')]
    logic: Vec<String>,
    /// Client address to listen on; overrides gateway.listen.
    #[arg(long)]
    listen: Option<String>,
    #[command(flatten)]
    flags: cli::ConfigFlags,
}

fn main() -> anyhow::Result<()> {
    cli::init_logging();
    let cli = Cli::parse();
    let config = cli::load(cli.config.as_deref(), |config| {
        if !cli.logic.is_empty() {
            config.link.logic = cli.logic;
        }
        if let Some(listen) = cli.listen {
            config.gateway.listen = listen;
        }
        cli.flags.apply(config);
    })?;
    if cli.flags.done(&config)? {
        return Ok(());
    }
    cli::serve(
        || GatewayNode::start(&config),
        GatewayNode::reload_tls,
        GatewayNode::shutdown,
    )
}
