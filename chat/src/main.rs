//! `im-chat`: a terminal chat client on the SDK, to try the server in two
//! terminals. Everything it shows comes from the SDK's store; everything it
//! does is an SDK call, so it is also the shortest example of an app.

mod app;
mod ui;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use crossbeam_channel::Sender;

use app::App;

#[derive(Parser)]
#[command(name = "im-chat", about = "A terminal chat client on the im SDK")]
struct Args {
    /// Your user id.
    #[arg(long)]
    uid: u64,
    /// Open the conversation with this user.
    #[arg(long)]
    to: Option<u64>,
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7000")]
    server: String,
    /// Login token; without it one is minted from --secret-file (a server
    /// on this machine, for trying things out).
    #[arg(long)]
    token: Option<String>,
    /// The server's token secret (its data dir's auth.secret).
    #[arg(long, default_value = "data/auth.secret")]
    secret_file: PathBuf,
    #[arg(long, default_value = "terminal")]
    device: String,
    /// The SDK's store (default: data/im-chat-<uid>-<device>.db).
    #[arg(long)]
    store: Option<PathBuf>,
}

/// Wakes the UI when the SDK changes something.
struct Redraw(Sender<()>);

impl sdk::Listener for Redraw {
    fn messages(&self, _: &[sdk::Message]) {
        let _ = self.0.try_send(());
    }
    fn send_state(&self, _: &str, _: sdk::SendState) {
        let _ = self.0.try_send(());
    }
    fn conversation(&self, _: &sdk::Conversation) {
        let _ = self.0.try_send(());
    }
    fn read_receipt(&self, _: u64, _: u64) {
        let _ = self.0.try_send(());
    }
    fn connection(&self, _: &sdk::ConnectionState) {
        let _ = self.0.try_send(());
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = match args.token {
        Some(token) => token,
        None => {
            let secret = std::fs::read_to_string(&args.secret_file).with_context(|| {
                format!(
                    "no --token, and the secret to mint one is not in {} (run from the server's directory, or give --token)",
                    args.secret_file.display()
                )
            })?;
            protocol::token::mint(
                secret.trim().as_bytes(),
                args.uid,
                runtime::clock::unix_secs() + 24 * 3600,
            )
        }
    };
    let store = args
        .store
        .unwrap_or_else(|| PathBuf::from(format!("data/im-chat-{}-{}.db", args.uid, args.device)));
    if let Some(dir) = store.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let config = sdk::Config::new(vec![args.server], args.uid, &token, &args.device, store);
    let (changed, redraw) = crossbeam_channel::bounded(1);
    let sdk = sdk::Sdk::start(config, Arc::new(Redraw(changed)))?;
    let mut app = App::new(sdk, args.to);
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        while !app.quit {
            app.refresh()?;
            terminal.draw(|frame| ui::draw(frame, &app))?;
            if crossterm::event::poll(Duration::from_millis(200))? {
                app.on_event(crossterm::event::read()?)?;
            }
            let _ = redraw.try_recv();
        }
        Ok(())
    })();
    ratatui::restore();
    app.close();
    result
}
