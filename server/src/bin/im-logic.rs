//! `im-logic`: the logic tier on its own.
//!
//!   im-logic serve [--config FILE] [--link-listen ADDR] [--data-dir DIR] [--admin ADDR]
//!   im-logic migrate [--config FILE] [--data-dir DIR]
//!
//! `serve` runs the logic tier and listens for gateways (`im-gateway`) on
//! `link.listen`. `migrate` creates or migrates the storage schema ahead of
//! a deployment (the server also does it at start). Both read the same
//! TOML file as `im-server` and check all of it first.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use server::{LogicNode, cli};

#[derive(Parser)]
#[command(name = "im-logic", version, about = "The im logic tier")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Common {
    /// The TOML configuration file (every field has a default).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides storage.data_dir (the embedded store).
    #[arg(long)]
    data_dir: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the logic tier; gateways connect to it.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Where gateways connect; overrides link.listen.
        #[arg(long)]
        link_listen: Option<String>,
        #[command(flatten)]
        flags: cli::ConfigFlags,
    },
    /// Create or migrate the storage schema.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
}

fn load(
    common: Common,
    overrides: impl FnOnce(&mut server::Config),
) -> anyhow::Result<server::Config> {
    cli::load(common.config.as_deref(), |config| {
        if let Some(dir) = common.data_dir {
            config.storage.data_dir = dir;
        }
        overrides(config);
    })
}

fn main() -> anyhow::Result<()> {
    cli::init_logging();
    match Cli::parse().command {
        Command::Serve {
            common,
            link_listen,
            flags,
        } => {
            let config = load(common, |config| {
                if let Some(listen) = link_listen {
                    config.link.listen = listen;
                }
                flags.apply(config);
            })?;
            if flags.done(&config)? {
                return Ok(());
            }
            cli::serve(|| LogicNode::start(&config), |_| {}, LogicNode::shutdown)
        }
        Command::Migrate { common } => {
            let config = load(common, |_| {})?;
            logic::open_backend(&config.storage)?;
            println!("{} schema is up to date", config.storage.backend.name());
            Ok(())
        }
    }
}
