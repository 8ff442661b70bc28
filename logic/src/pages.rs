//! Fitting pages into one frame.
//!
//! History, Sync and Conversations pages are filled only as far as fits in
//! one frame of `max_frame` bytes; the response then says there is more.
//! The size of a repeated message field is exactly known from prost, so a
//! page is trimmed by arithmetic, not by encoding and retrying.

use prost::Message;

/// Room kept in every frame for everything but the page's items: req_id,
/// the oneof's tag and length, `more`, a cursor, total_unread.
pub const FRAME_OVERHEAD: usize = 64;

/// Which end of a page to keep when trimming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Keep the first items (ascending pages reading forward).
    Front,
    /// Keep the last items (pages ending at the newest message).
    Back,
}

/// Bytes one item adds to its parent as an element of a repeated field.
pub fn item_len<M: Message>(item: &M) -> usize {
    let len = item.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// Drops items from the other end until the rest fit in `max_frame`.
/// Returns how many were dropped.
pub fn fit<M: Message>(items: &mut Vec<M>, max_frame: usize, keep: Keep) -> usize {
    let budget = max_frame.saturating_sub(FRAME_OVERHEAD);
    let mut used = 0;
    let mut fitting = 0;
    let sizes: Vec<usize> = match keep {
        Keep::Front => items.iter().map(item_len).collect(),
        Keep::Back => items.iter().rev().map(item_len).collect(),
    };
    for size in sizes {
        if used + size > budget {
            break;
        }
        used += size;
        fitting += 1;
    }
    let dropped = items.len() - fitting;
    match keep {
        Keep::Front => items.truncate(fitting),
        Keep::Back => {
            items.drain(..dropped);
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Frame, FrameCodec, pb};

    fn messages(n: u64, size: usize) -> Vec<pb::Message> {
        (1..=n)
            .map(|seq| pb::Message {
                seq,
                msg_id: seq,
                content: vec![7; size],
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn trimmed_page_fits_in_one_frame() {
        for keep in [Keep::Front, Keep::Back] {
            let mut page = messages(200, 16_384);
            let dropped = fit(&mut page, 65_536, keep);
            assert_eq!(page.len(), 3);
            assert_eq!(dropped, 197);
            let expected_first = if keep == Keep::Front { 1 } else { 198 };
            assert_eq!(page[0].seq, expected_first);
            let frame = Frame {
                req_id: u64::MAX,
                body: Some(
                    pb::HistoryResp {
                        messages: page,
                        more: true,
                    }
                    .into(),
                ),
            };
            assert!(FrameCodec::new(65_536).encode_to_bytes(&frame).is_ok());
        }
    }

    #[test]
    fn small_page_is_untouched() {
        let mut page = messages(10, 100);
        assert_eq!(fit(&mut page, 65_536, Keep::Back), 0);
        assert_eq!(page.len(), 10);
    }
}
