//! What the binaries share: logging, the configuration file with its
//! overrides and checks, and running a node until SIGTERM or SIGINT.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
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

/// What every role's command line says about its configuration.
#[derive(clap::Args)]
pub struct ConfigFlags {
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Check the configuration and exit (non-zero if it is invalid).
    #[arg(long)]
    pub check_config: bool,
    /// Admin address (/metrics, /healthz); overrides admin.listen ("" turns it off).
    #[arg(long)]
    pub admin: Option<String>,
    /// Business API address; overrides api.listen ("" turns it off).
    #[arg(long)]
    pub api: Option<String>,
}

impl ConfigFlags {
    /// Applies `--admin` and `--api`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(admin) = &self.admin {
            config.admin.listen = admin.clone();
        }
        if let Some(api) = &self.api {
            config.api.listen = api.clone();
        }
    }

    /// `--print-config` and `--check-config`: true when one of them was
    /// asked for and done, and the binary should exit.
    pub fn done(&self, config: &Config) -> anyhow::Result<bool> {
        if self.print_config {
            print!("{}", config.printable()?);
        } else if self.check_config {
            println!("configuration ok");
        }
        Ok(self.print_config || self.check_config)
    }
}

/// Set by SIGTERM or SIGINT once `serve` has begun: what a node still
/// starting (a standby waiting for the writer's lease) watches.
pub fn stopping() -> Arc<AtomicBool> {
    static STOPPING: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    STOPPING.get_or_init(Arc::default).clone()
}

/// Starts a node, runs it until SIGTERM or SIGINT, then stops it. SIGHUP
/// calls `reload` (the TLS certificate, for the roles that have one). A
/// signal while it is still starting (a standby) ends it cleanly too.
pub fn serve<N, E>(
    start: impl FnOnce() -> Result<N, E>,
    reload: impl Fn(&N),
    stop: impl FnOnce(N),
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match runtime::fd_limit::raise_to_hard_limit() {
        Some(limit) => log::info!("open-file limit: {limit}"),
        None => log::warn!("cannot read the open-file limit"),
    }
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("cannot install signal handlers")?;
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register(signal, stopping())
            .context("cannot install signal handlers")?;
    }
    let node = match start() {
        Ok(node) => node,
        Err(e) if stopping().load(Ordering::Acquire) => {
            log::info!("stopped before starting: {e}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    for signal in signals.forever() {
        if signal == SIGHUP {
            log::info!("SIGHUP: reloading");
            reload(&node);
            continue;
        }
        log::info!("signal {signal}: shutting down");
        break;
    }
    stop(node);
    Ok(())
}

/// `revoke`: asks the running node's business API to revoke `uid`'s
/// tokens issued at or before `before_ms` (0: now); returns its JSON answer.
pub fn revoke(config: &Config, uid: u64, before_ms: u64) -> anyhow::Result<String> {
    let addr = config
        .api
        .addr()?
        .ok_or_else(|| anyhow::anyhow!("api.listen is off: the revocation goes through the API"))?;
    let key = match config.api.keys.first() {
        Some(entry) => entry
            .split_once(':')
            .map_or(entry.as_str(), |(_, secret)| secret)
            .to_owned(),
        None => {
            let path = std::path::Path::new(&config.storage.data_dir).join("api.key");
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    anyhow::anyhow!("no api.keys and cannot read {}: {e}", path.display())
                })?
                .trim()
                .to_owned()
        }
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(format!("http://{addr}/v1/users/{uid}/revoke"))
        .header("Authorization", format!("Bearer {key}"))
        .send_json(serde_json::json!({ "before_ms": before_ms }))?;
    let status = response.status();
    let body = response.body_mut().read_to_string()?;
    anyhow::ensure!(status.is_success(), "the API answered {status}: {body}");
    Ok(body)
}
