//! Drawing: a status line, the conversation list beside the open
//! conversation, and the input line.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, Paragraph};

use crate::app::App;

pub fn draw(frame: &mut Frame, app: &App) {
    let [status, middle, input] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(3),
    ])
    .areas(frame.area());
    let [list, chat] =
        Layout::horizontal([Constraint::Length(22), Constraint::Min(20)]).areas(middle);

    let state = match &app.state {
        sdk::ConnectionState::Waiting { retry_in } => {
            format!("offline, retrying in {:.1} s", retry_in.as_secs_f64())
        }
        other => format!("{other:?}").to_lowercase(),
    };
    frame.render_widget(
        Paragraph::new(format!(
            " im-chat · uid {} · {state} · unread {} · {}",
            app.me, app.total_unread, app.notice
        ))
        .style(Style::default().add_modifier(Modifier::REVERSED)),
        status,
    );

    let items: Vec<ListItem> = app
        .conversations
        .iter()
        .map(|c| {
            let marker = if Some(c.peer_uid) == app.open {
                "▸"
            } else {
                " "
            };
            let unread = if c.unread > 0 {
                format!(" ({})", c.unread)
            } else {
                String::new()
            };
            ListItem::new(format!("{marker} uid {}{unread}", c.peer_uid))
        })
        .collect();
    frame.render_widget(
        List::new(items).block(Block::default().borders(Borders::ALL).title("chats")),
        list,
    );

    let title = match app.open {
        Some(peer) => format!("with uid {peer}"),
        None => "no conversation open: /open <uid>".into(),
    };
    let peer_read = app
        .open
        .and_then(|peer| app.conversations.iter().find(|c| c.peer_uid == peer))
        .map_or(0, |c| c.peer_read_seq);
    let mut lines: Vec<Line> = app
        .messages
        .iter()
        .map(|m| {
            let who = if m.from_uid == app.me {
                "me".to_owned()
            } else {
                m.from_uid.to_string()
            };
            let mut spans = vec![
                Span::raw(format!("{} ", clock(m.server_time_ms))),
                Span::styled(
                    format!("{who}: "),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(String::from_utf8_lossy(&m.content).into_owned()),
            ];
            if m.from_uid == app.me && m.seq <= peer_read {
                spans.push(Span::raw("  ✓ seen"));
            }
            Line::from(spans)
        })
        .collect();
    lines.extend(app.unsent.iter().map(|o| {
        let state = match o.state {
            sdk::SendState::Failed { code } => format!("failed ({code})"),
            _ => "sending…".into(),
        };
        Line::from(format!(
            "         me: {}  ({state})",
            String::from_utf8_lossy(&o.content)
        ))
    }));
    let height = chat.height.saturating_sub(2) as usize;
    let bottom = lines.len().saturating_sub(app.scroll);
    let top = bottom.saturating_sub(height);
    let shown: Vec<Line> = lines.drain(top..bottom).collect();
    frame.render_widget(
        Paragraph::new(shown).block(Block::default().borders(Borders::ALL).title(title)),
        chat,
    );

    frame.render_widget(
        Paragraph::new(format!("> {}", app.input)).block(
            Block::default()
                .borders(Borders::ALL)
                .title("Enter send · /open <uid> · ↑↓ chats · PgUp/PgDn scroll · Esc quit"),
        ),
        input,
    );
}

/// `HH:MM:SS` (UTC) of a Unix time in ms.
fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}
