//! What the screen shows and what keys do.

use crossterm::event::{Event, KeyCode, KeyEventKind, KeyModifiers};

/// The client's state between two frames: the SDK's store, read again
/// before each draw, plus the input line and the scroll position.
pub struct App {
    sdk: Option<sdk::Sdk>,
    pub me: u64,
    pub open: Option<u64>,
    pub input: String,
    /// Lines scrolled up from the newest message.
    pub scroll: usize,
    pub conversations: Vec<sdk::Conversation>,
    pub messages: Vec<sdk::Message>,
    /// The open conversation's sends not yet acknowledged, or failed.
    pub unsent: Vec<sdk::Outgoing>,
    pub state: sdk::ConnectionState,
    pub total_unread: u64,
    /// A line about the last thing that went wrong.
    pub notice: String,
    pub quit: bool,
}

impl App {
    pub fn new(sdk: sdk::Sdk, open: Option<u64>) -> App {
        App {
            me: sdk.uid(),
            sdk: Some(sdk),
            open,
            input: String::new(),
            scroll: 0,
            conversations: Vec::new(),
            messages: Vec::new(),
            unsent: Vec::new(),
            state: sdk::ConnectionState::Connecting,
            total_unread: 0,
            notice: String::new(),
            quit: false,
        }
    }

    fn sdk(&self) -> &sdk::Sdk {
        self.sdk.as_ref().expect("open until close")
    }

    /// Reads the store again; the open conversation is marked read.
    pub fn refresh(&mut self) -> anyhow::Result<()> {
        let sdk = self.sdk.as_ref().expect("open until close");
        self.state = sdk.state();
        self.conversations = sdk.conversations()?;
        self.total_unread = sdk.total_unread()?;
        if let Some(peer) = self.open {
            self.messages = sdk.history(peer, 0, 500)?;
            self.unsent = sdk
                .unsent()?
                .into_iter()
                .filter(|o| o.to_uid == peer)
                .collect();
            let conversation = self.conversations.iter().find(|c| c.peer_uid == peer);
            if let Some(c) = conversation.filter(|c| c.unread > 0 && self.scroll == 0) {
                sdk.mark_read(peer, c.last_seq)?;
            }
        }
        Ok(())
    }

    pub fn on_event(&mut self, event: Event) -> anyhow::Result<()> {
        let Event::Key(key) = event else {
            return Ok(());
        };
        if key.kind != KeyEventKind::Press {
            return Ok(());
        }
        match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => self.quit = true,
            KeyCode::Esc => self.quit = true,
            KeyCode::Char(c) => self.input.push(c),
            KeyCode::Backspace => {
                self.input.pop();
            }
            KeyCode::Enter => self.enter()?,
            KeyCode::Up => self.select(-1),
            KeyCode::Down => self.select(1),
            KeyCode::PageUp => self.scroll += 10,
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(10),
            _ => {}
        }
        Ok(())
    }

    fn enter(&mut self) -> anyhow::Result<()> {
        let line = std::mem::take(&mut self.input);
        let line = line.trim();
        if line.is_empty() {
            return Ok(());
        }
        if let Some(rest) = line.strip_prefix("/open ") {
            match rest.trim().parse::<u64>() {
                Ok(peer) if peer != self.me && peer > 0 => self.open_with(peer),
                _ => self.notice = format!("not a user id: {rest}"),
            }
            return Ok(());
        }
        if line == "/quit" {
            self.quit = true;
            return Ok(());
        }
        match self.open {
            Some(peer) => {
                self.sdk().send(peer, 1, line.as_bytes())?;
                self.scroll = 0;
                self.notice.clear();
            }
            None => self.notice = "open a conversation first: /open <uid>".into(),
        }
        Ok(())
    }

    fn open_with(&mut self, peer: u64) {
        self.open = Some(peer);
        self.scroll = 0;
        self.notice.clear();
    }

    /// Opens the conversation above or below the open one in the list.
    fn select(&mut self, step: isize) {
        if self.conversations.is_empty() {
            return;
        }
        let at = self
            .open
            .and_then(|peer| self.conversations.iter().position(|c| c.peer_uid == peer));
        let next = match at {
            Some(i) => (i as isize + step).clamp(0, self.conversations.len() as isize - 1) as usize,
            None => 0,
        };
        self.open_with(self.conversations[next].peer_uid);
    }

    pub fn close(&mut self) {
        if let Some(sdk) = self.sdk.take() {
            sdk.close();
        }
    }
}
