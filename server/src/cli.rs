//! What the binaries share: logging, the configuration file with its
//! overrides and checks, and running a node until SIGTERM or SIGINT.

use std::path::Path;

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::Config;

/// Logs to stderr at `RUST_LOG` (default info).
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

/// The file (or the defaults), the environment, then `overrides` (the
/// command line), checked.
pub fn load(path: Option<&Path>, overrides: impl FnOnce(&mut Config)) -> anyhow::Result<Config> {
    let mut config = Config::load(path)?;
    overrides(&mut config);
    config.validate()?;
    Ok(config)
}

/// `--print-config` and `--check-config`: true when one of them was asked
/// for and done, and the binary should exit.
pub fn print_or_check(config: &Config, print: bool, check: bool) -> anyhow::Result<bool> {
    if print {
        print!("{}", config.printable()?);
    } else if check {
        println!("configuration ok");
    }
    Ok(print || check)
}

/// Starts a node, runs it until SIGTERM or SIGINT, then stops it.
pub fn serve<N, E>(start: impl FnOnce() -> Result<N, E>, stop: impl FnOnce(N)) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match runtime::fd_limit::raise_to_hard_limit() {
        Some(limit) => log::info!("open-file limit: {limit}"),
        None => log::warn!("cannot read the open-file limit"),
    }
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    let node = start()?;
    if let Some(signal) = signals.forever().next() {
        log::info!("signal {signal}: shutting down");
    }
    stop(node);
    Ok(())
}
