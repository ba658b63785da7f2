//! Frame headers, frame encode/decode and protocol headers.

use crate::decode::Decoder;
use crate::error::{DecodeError, EncodeError};
use crate::performative::{Performative, SaslFrame};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The AMQP protocol header (`AMQP 0 1 0 0`).
pub const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// The SASL protocol header (`AMQP 3 1 0 0`).
pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// The TLS protocol header (`AMQP 2 1 0 0`).
pub const TLS_HEADER: [u8; 8] = *b"AMQP\x02\x01\x00\x00";
/// Frame type of AMQP frames.
pub const FRAME_TYPE_AMQP: u8 = 0;
/// Frame type of SASL frames.
pub const FRAME_TYPE_SASL: u8 = 1;
/// The smallest max-frame-size a peer may impose (spec: 512).
pub const MIN_MAX_FRAME_SIZE: u32 = 512;
/// Size of the fixed frame header.
pub const FRAME_HEADER_SIZE: usize = 8;

/// A protocol header received from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolHeader {
    /// Plain AMQP.
    Amqp,
    /// SASL negotiation.
    Sasl,
    /// TLS negotiation.
    Tls,
}

impl ProtocolHeader {
    /// Parses the 8-byte header at the start of `buf`. Returns `Ok(None)` if fewer than 8 bytes.
    pub fn parse(buf: &[u8]) -> Result<Option<Self>, DecodeError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let h = &buf[..8];
        if h == AMQP_HEADER {
            Ok(Some(ProtocolHeader::Amqp))
        } else if h == SASL_HEADER {
            Ok(Some(ProtocolHeader::Sasl))
        } else if h == TLS_HEADER {
            Ok(Some(ProtocolHeader::Tls))
        } else {
            Err(DecodeError::Malformed { offset: 0, reason: "unsupported protocol header" })
        }
    }

    /// The header's bytes.
    pub fn bytes(self) -> [u8; 8] {
        match self {
            ProtocolHeader::Amqp => AMQP_HEADER,
            ProtocolHeader::Sasl => SASL_HEADER,
            ProtocolHeader::Tls => TLS_HEADER,
        }
    }
}

/// The body of a decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameBody {
    /// An AMQP performative and (for transfers) its payload.
    Amqp(Performative, Bytes),
    /// A SASL frame.
    Sasl(SaslFrame),
    /// An empty frame (heartbeat).
    Empty,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Channel number (0 for SASL and heartbeats).
    pub channel: u16,
    /// The body.
    pub body: FrameBody,
}

/// Splits one complete frame off the front of `buf` and decodes it.
///
/// Returns `Ok(None)` when `buf` does not hold a whole frame yet. A declared size above
/// `max_frame_size` fails with [`DecodeError::TooLarge`] before any of it is buffered further.
pub fn decode_frame(buf: &mut BytesMut, max_frame_size: u32) -> Result<Option<Frame>, DecodeError> {
    let Some(raw) = split_frame(buf, max_frame_size)? else {
        return Ok(None);
    };
    decode_frame_bytes(raw).map(Some)
}

/// Splits one complete frame (header included) off `buf`, checking its declared size.
pub fn split_frame(buf: &mut BytesMut, max_frame_size: u32) -> Result<Option<Bytes>, DecodeError> {
    if buf.len() < FRAME_HEADER_SIZE {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size > max_frame_size {
        return Err(DecodeError::TooLarge { limit: max_frame_size.into(), actual: size.into() });
    }
    if (size as usize) < FRAME_HEADER_SIZE {
        return Err(DecodeError::Malformed { offset: 0, reason: "frame size smaller than its header" });
    }
    let doff = buf[4];
    if doff < 2 || (doff as usize) * 4 > size as usize {
        return Err(DecodeError::Malformed { offset: 4, reason: "invalid data offset" });
    }
    if buf.len() < size as usize {
        buf.reserve(size as usize - buf.len());
        return Ok(None);
    }
    Ok(Some(buf.split_to(size as usize).freeze()))
}

/// Decodes a frame whose bytes (header included) are exactly `raw`.
pub fn decode_frame_bytes(raw: Bytes) -> Result<Frame, DecodeError> {
    let doff = raw[4] as usize * 4;
    let ftype = raw[5];
    let channel = u16::from_be_bytes([raw[6], raw[7]]);
    if raw.len() == doff {
        return Ok(Frame { channel, body: FrameBody::Empty });
    }
    let mut dec = Decoder::with_range(&raw, doff, raw.len());
    let body = match ftype {
        FRAME_TYPE_AMQP => {
            let p = Performative::decode(&mut dec)?;
            let rest = dec.position();
            let payload = if rest < raw.len() { raw.slice(rest..) } else { Bytes::new() };
            if !payload.is_empty() && !matches!(p, Performative::Transfer(_)) {
                return Err(DecodeError::Malformed {
                    offset: rest,
                    reason: "payload after a non-transfer performative",
                });
            }
            FrameBody::Amqp(p, payload)
        }
        FRAME_TYPE_SASL => {
            let s = SaslFrame::decode(&mut dec)?;
            if !dec.is_empty() {
                return Err(DecodeError::Malformed { offset: dec.position(), reason: "trailing bytes in SASL frame" });
            }
            FrameBody::Sasl(s)
        }
        _ => return Err(DecodeError::Malformed { offset: 5, reason: "unknown frame type" }),
    };
    Ok(Frame { channel, body })
}

/// Starts a frame: writes the 8-byte header with a placeholder size. Finish with [`finish_frame`].
pub fn start_frame(out: &mut BytesMut, frame_type: u8, channel: u16) -> usize {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(2);
    out.put_u8(frame_type);
    out.put_u16(channel);
    start
}

/// Patches the size of a frame started at `start`.
pub fn finish_frame(out: &mut BytesMut, start: usize) -> Result<(), EncodeError> {
    let size = out.len() - start;
    let size32 = u32::try_from(size).map_err(|_| EncodeError::TooLarge(size))?;
    out[start..start + 4].copy_from_slice(&size32.to_be_bytes());
    Ok(())
}

/// Encodes an AMQP frame carrying `p` and `payload`.
pub fn encode_frame(out: &mut BytesMut, channel: u16, p: &Performative, payload: &[u8]) -> Result<(), EncodeError> {
    let start = start_frame(out, FRAME_TYPE_AMQP, channel);
    p.encode(out)?;
    out.extend_from_slice(payload);
    finish_frame(out, start)
}

/// Encodes a SASL frame.
pub fn encode_sasl_frame(out: &mut BytesMut, s: &SaslFrame) -> Result<(), EncodeError> {
    let start = start_frame(out, FRAME_TYPE_SASL, 0);
    s.encode(out)?;
    finish_frame(out, start)
}

/// Encodes an empty (heartbeat) frame.
pub fn encode_empty_frame(out: &mut BytesMut) {
    out.put_slice(&[0, 0, 0, 8, 2, 0, 0, 0]);
}

/// Reads a frame header's declared size without consuming anything.
pub fn peek_frame_size(buf: &[u8]) -> Option<u32> {
    let mut b = buf.get(..4)?;
    Some(b.get_u32())
}
