//! Reassembles fragmented WebSocket messages, within the message size limit.

use fastwebsockets::OpCode;
use threadspace_protocol::frames::close_code;

use crate::edge::frame_reader::InFrame;

/// Why a fragment sequence was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AssembleError {
    /// The assembled message would exceed the cap.
    TooLarge,
    /// A continuation without a start, or a new message inside a fragmented one.
    Protocol,
}

impl AssembleError {
    pub(crate) fn close_code(self) -> u16 {
        match self {
            Self::TooLarge => close_code::TOO_LARGE,
            Self::Protocol => close_code::PROTOCOL_ERROR,
        }
    }

    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "message too large",
            Self::Protocol => "invalid fragment sequence",
        }
    }
}

/// Assembles fragmented messages with a cap on the assembled size (fastwebsockets caps only
/// single frames).
#[derive(Debug)]
pub(crate) struct Assembler {
    cap: usize,
    opcode: Option<OpCode>,
    buffer: Vec<u8>,
}

impl Assembler {
    pub(crate) fn new(cap: usize) -> Self {
        Self { cap, opcode: None, buffer: Vec::new() }
    }

    /// Drops any partial message.
    pub(crate) fn reset(&mut self) {
        self.opcode = None;
        self.buffer = Vec::new();
    }

    /// Feeds one data frame; returns a complete message when `fin` ends one.
    pub(crate) fn push(&mut self, frame: InFrame) -> Result<Option<(OpCode, Vec<u8>)>, AssembleError> {
        match (frame.opcode, self.opcode) {
            (OpCode::Text | OpCode::Binary, None) => {
                if frame.payload.len() > self.cap {
                    return Err(AssembleError::TooLarge);
                }
                if frame.fin {
                    return Ok(Some((frame.opcode, frame.payload)));
                }
                self.opcode = Some(frame.opcode);
                self.buffer = frame.payload;
                Ok(None)
            }
            (OpCode::Continuation, Some(opcode)) => {
                if self.buffer.len() + frame.payload.len() > self.cap {
                    self.reset();
                    return Err(AssembleError::TooLarge);
                }
                self.buffer.extend_from_slice(&frame.payload);
                if frame.fin {
                    let bytes = std::mem::take(&mut self.buffer);
                    self.opcode = None;
                    return Ok(Some((opcode, bytes)));
                }
                Ok(None)
            }
            _ => Err(AssembleError::Protocol),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> InFrame {
        InFrame { fin, opcode, payload: payload.to_vec() }
    }

    #[test]
    fn assembles_fragments() {
        let mut a = Assembler::new(10);
        assert_eq!(a.push(frame(false, OpCode::Text, b"ab")), Ok(None));
        assert_eq!(a.push(frame(false, OpCode::Continuation, b"cd")), Ok(None));
        assert_eq!(
            a.push(frame(true, OpCode::Continuation, b"e")),
            Ok(Some((OpCode::Text, b"abcde".to_vec())))
        );
        assert_eq!(a.push(frame(true, OpCode::Text, b"x")), Ok(Some((OpCode::Text, b"x".to_vec()))));
    }

    #[test]
    fn caps_the_assembled_size() {
        let mut a = Assembler::new(4);
        assert_eq!(a.push(frame(false, OpCode::Text, b"abc")), Ok(None));
        assert_eq!(a.push(frame(false, OpCode::Continuation, b"de")), Err(AssembleError::TooLarge));
        assert_eq!(a.push(frame(true, OpCode::Text, b"abcde")), Err(AssembleError::TooLarge));
    }

    #[test]
    fn rejects_bad_sequences() {
        let mut a = Assembler::new(10);
        assert_eq!(a.push(frame(true, OpCode::Continuation, b"x")), Err(AssembleError::Protocol));
        assert_eq!(a.push(frame(false, OpCode::Text, b"x")), Ok(None));
        assert_eq!(a.push(frame(true, OpCode::Text, b"y")), Err(AssembleError::Protocol));
    }
}
