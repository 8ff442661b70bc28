//! `im-logic`: the logic tier's role. Today its operator commands:
//!
//!   im-logic migrate [--config FILE] [--data-dir DIR]
//!
//! Reads the same TOML file as `im-server` and checks all of it (so a file
//! that would not start the server is refused here too), then creates or
//! migrates the storage schema: the SQLite file in the data dir, or the
//! MySQL databases (created if missing). The server does the same at
//! start; this is for running it ahead of a deployment.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use server::Config;

#[derive(Parser)]
#[command(name = "im-logic", version, about = "The im logic tier")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or migrate the storage schema.
    Migrate {
        /// The server's TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides storage.data_dir (the embedded store).
        #[arg(long)]
        data_dir: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match Cli::parse().command {
        Command::Migrate { config, data_dir } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(dir) = data_dir {
                config.storage.data_dir = dir;
            }
            config.validate()?;
            logic::open_backend(&config.storage)?;
            println!("{} schema is up to date", config.storage.backend.name());
            Ok(())
        }
    }
}
