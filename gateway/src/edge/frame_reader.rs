//! Reads client WebSocket frames without holding a buffer while the connection is idle.
//!
//! fastwebsockets' read half preallocates an 8 KiB buffer per connection for the connection's
//! whole life; at 15,000 mostly idle connections per gateway that buffer alone was most of the
//! gateway's memory. This reader reads the fixed-size header into the future's own state
//! (at most 14 bytes) and allocates a payload only when a frame arrives, so an idle connection
//! costs no read buffer at all. It implements exactly what a server needs from RFC 6455
//! §5.2–5.5 for client frames: masking required, reserved bits zero, known opcodes, control
//! frames unfragmented and at most 125 bytes, a size cap checked before allocating, and UTF-8
//! for unfragmented text (fragmented text is checked once assembled). fastwebsockets still does
//! the upgrade, every write, and the client side.

use fastwebsockets::OpCode;
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// One frame from the client, unmasked.
#[derive(Debug, PartialEq, Eq)]
pub struct InFrame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: Vec<u8>,
}

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Eof,
    #[error("socket error")]
    Io(#[source] std::io::Error),
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: u64, max: usize },
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("text frame is not valid UTF-8")]
    InvalidUtf8,
}

impl From<std::io::Error> for ReadError {
    fn from(error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            Self::Eof
        } else {
            Self::Io(error)
        }
    }
}

/// Reads frames from `io`, refusing any larger than `max_frame` bytes.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    max_frame: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R, max_frame: usize) -> Self {
        Self { io, max_frame }
    }

    /// Reads and discards raw bytes until the peer closes or the read fails. Used while a
    /// closing connection lingers: after a cancelled `read_frame` the stream may be mid-frame,
    /// so the bytes are not parsed as frames.
    pub async fn discard_until_eof(&mut self) {
        let _ = tokio::io::copy(&mut self.io, &mut tokio::io::sink()).await;
    }

    /// Reads the next frame. Not cancel-safe: a cancelled read leaves the stream mid-frame, so
    /// callers cancel only when they are abandoning the connection.
    pub async fn read_frame(&mut self) -> Result<InFrame, ReadError> {
        let mut head = [0u8; 2];
        self.io.read_exact(&mut head).await?;
        let fin = head[0] & 0x80 != 0;
        if head[0] & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let opcode = OpCode::try_from(head[0] & 0x0f).map_err(|_| ReadError::Protocol("unknown opcode"))?;
        if head[1] & 0x80 == 0 {
            return Err(ReadError::Protocol("client frames must be masked"));
        }
        let len = match head[1] & 0x7f {
            126 => {
                let mut ext = [0u8; 2];
                self.io.read_exact(&mut ext).await?;
                u64::from(u16::from_be_bytes(ext))
            }
            127 => {
                let mut ext = [0u8; 8];
                self.io.read_exact(&mut ext).await?;
                let len = u64::from_be_bytes(ext);
                if len >> 63 != 0 {
                    return Err(ReadError::Protocol("frame length has the top bit set"));
                }
                len
            }
            n => u64::from(n),
        };
        let control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
        if control && (!fin || len > 125) {
            return Err(ReadError::Protocol("control frames must be unfragmented and at most 125 bytes"));
        }
        if len > self.max_frame as u64 {
            return Err(ReadError::TooLarge { len, max: self.max_frame });
        }
        let mut mask = [0u8; 4];
        self.io.read_exact(&mut mask).await?;
        let mut payload = vec![0u8; len as usize];
        self.io.read_exact(&mut payload).await?;
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i & 3];
        }
        if opcode == OpCode::Text && fin && std::str::from_utf8(&payload).is_err() {
            return Err(ReadError::InvalidUtf8);
        }
        Ok(InFrame { fin, opcode, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastwebsockets::{Frame, Payload};
    use proptest::prelude::*;

    /// Encodes a frame the way a client does (masked), with fastwebsockets' own encoder.
    fn client_bytes(fin: bool, opcode: OpCode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut frame = Frame::new(fin, opcode, Some(mask), Payload::Owned(payload.to_vec()));
        frame.mask();
        let mut buf = Vec::new();
        frame.write(&mut buf).to_vec()
    }

    async fn read(bytes: &[u8], max: usize) -> Result<InFrame, ReadError> {
        FrameReader::new(bytes, max).read_frame().await
    }

    #[tokio::test]
    async fn reads_masked_frames_of_every_length_class() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let bytes = client_bytes(true, OpCode::Text, &payload, [1, 2, 3, 4]);
            let frame = read(&bytes, 100_000).await.expect("valid frame");
            assert_eq!(frame, InFrame { fin: true, opcode: OpCode::Text, payload }, "len {len}");
        }
    }

    #[tokio::test]
    async fn refuses_what_the_rfc_forbids() {
        let unmasked = [0x81u8, 0x01, b'x'];
        assert!(matches!(read(&unmasked, 100).await, Err(ReadError::Protocol(_))));
        let mut reserved = client_bytes(true, OpCode::Text, b"x", [0; 4]);
        reserved[0] |= 0x40;
        assert!(matches!(read(&reserved, 100).await, Err(ReadError::Protocol(_))));
        let mut unknown = client_bytes(true, OpCode::Text, b"x", [0; 4]);
        unknown[0] = (unknown[0] & 0xf0) | 0x3;
        assert!(matches!(read(&unknown, 100).await, Err(ReadError::Protocol(_))));
        let fragmented_ping = client_bytes(false, OpCode::Ping, b"x", [0; 4]);
        assert!(matches!(read(&fragmented_ping, 100).await, Err(ReadError::Protocol(_))));
        let big_ping = client_bytes(true, OpCode::Ping, &[0; 126], [0; 4]);
        assert!(matches!(read(&big_ping, 1000).await, Err(ReadError::Protocol(_))));
        let big = client_bytes(true, OpCode::Text, &[b'a'; 101], [0; 4]);
        assert!(matches!(read(&big, 100).await, Err(ReadError::TooLarge { len: 101, max: 100 })));
        let bad_utf8 = client_bytes(true, OpCode::Text, &[0xff, 0xfe], [9; 4]);
        assert!(matches!(read(&bad_utf8, 100).await, Err(ReadError::InvalidUtf8)));
        let truncated = &client_bytes(true, OpCode::Text, b"hello", [0; 4])[..5];
        assert!(matches!(read(truncated, 100).await, Err(ReadError::Eof)));
        assert!(matches!(read(&[], 100).await, Err(ReadError::Eof)));
    }

    #[tokio::test]
    async fn a_huge_declared_length_is_refused_before_allocating() {
        let mut bytes = vec![0x82u8, 0x80 | 127];
        bytes.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(matches!(read(&bytes, 65_536).await, Err(ReadError::TooLarge { .. })));
    }

    proptest! {
        #[test]
        fn round_trips_fastwebsockets_client_frames(
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            mask in any::<[u8; 4]>(),
            fin in any::<bool>(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let bytes = client_bytes(fin, OpCode::Binary, &payload, mask);
            let frame = runtime.block_on(read(&bytes, 4096)).expect("valid frame");
            prop_assert_eq!(frame, InFrame { fin, opcode: OpCode::Binary, payload });
        }

        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let _ = runtime.block_on(read(&bytes, 1024));
        }
    }
}
