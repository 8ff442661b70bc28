//! `im-logic`: operator commands for the logic tier's storage.
//!
//!   im-logic migrate [--config FILE] [--data-dir DIR]
//!
//! Reads the `[storage]` section of the same TOML file `im-gateway` uses
//! (other sections are the gateway's and are ignored here), then creates or
//! migrates the schema: the SQLite file in the data dir, or the MySQL
//! database (created if missing). The server does the same at start; this is
//! for running it ahead of a deployment.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use logic::config::StorageConfig;
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "im-logic",
    version,
    about = "Operator commands for the im logic tier"
)]
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

#[derive(Default, Deserialize)]
struct File {
    #[serde(default)]
    storage: StorageConfig,
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match Cli::parse().command {
        Command::Migrate { config, data_dir } => {
            let mut file: File = match &config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
                }
                None => File::default(),
            };
            if let Some(dir) = data_dir {
                file.storage.data_dir = dir;
            }
            logic::open_backend(&file.storage)?;
            println!("{} schema is up to date", file.storage.backend);
            Ok(())
        }
    }
}
