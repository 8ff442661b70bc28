//! WebSocket framing (RFC 6455, section 5): the frame header, and frames
//! made, as the gateway sends them (unmasked) and as clients must (masked).
//! No I/O: the gateway's WebSocket transport and the load tester drive it.

/// Opcodes.
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    pub opcode: u8,
    /// Bytes of the header, up to the payload.
    pub header_len: usize,
    pub payload_len: u64,
    /// The client's masking key.
    pub mask: Option<[u8; 4]>,
}

/// Why bytes are not a WebSocket frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("WebSocket extension bits set (no extension was agreed)")]
    Reserved,
}

/// The header at the front of `buf`, once all of it is there.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, WsError> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(WsError::Reserved);
    }
    let (payload_len, mut at) = match second & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (
                u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
                10,
            ),
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    let mask = if second & 0x80 != 0 {
        let Some(key) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    Ok(Some(Header {
        fin: first & 0x80 != 0,
        opcode: first & 0x0f,
        header_len: at,
        payload_len,
        mask,
    }))
}

/// Appends one whole frame carrying `payload`, masked with `mask` (a
/// client's frames must be, a server's must not).
pub fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.push(0x80 | opcode);
    let masked = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(masked | n as u8),
        n @ 126..=0xffff => {
            out.push(masked | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(masked | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        None => out.extend_from_slice(payload),
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
    }
}

/// Unmasks (or masks: it is its own inverse) a payload in place.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_once_whole() {
        let mut frame = Vec::new();
        push_frame(&mut frame, OP_BINARY, &[9; 300], Some([1, 2, 3, 4]));
        for cut in 0..8 {
            assert_eq!(parse_header(&frame[..cut]), Ok(None), "cut at {cut}");
        }
        let header = parse_header(&frame).unwrap().unwrap();
        assert_eq!(
            (
                header.fin,
                header.opcode,
                header.header_len,
                header.payload_len
            ),
            (true, OP_BINARY, 8, 300)
        );
        assert_eq!(header.mask, Some([1, 2, 3, 4]));
        let mut payload = frame[8..].to_vec();
        unmask(&mut payload, [1, 2, 3, 4]);
        assert_eq!(payload, vec![9; 300]);
        assert_eq!(parse_header(&[0xC2, 0]), Err(WsError::Reserved));
    }

    #[test]
    fn server_frames_carry_their_length() {
        let mut out = Vec::new();
        push_frame(&mut out, OP_BINARY, &[7; 5], None);
        push_frame(&mut out, OP_BINARY, &[7; 200], None);
        push_frame(&mut out, OP_BINARY, &vec![7; 70_000], None);
        assert_eq!(&out[..2], &[0x82, 5]);
        assert_eq!(&out[7..11], &[0x82, 126, 0, 200]);
        assert_eq!(out[7 + 204 + 1], 127);
        assert_eq!(out.len(), 7 + 204 + 10 + 70_000);
    }
}
