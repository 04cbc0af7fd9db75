//! Everything that crosses a ThreadSpace process boundary: the WebSocket frames (`frames`), the
//! record stored in JetStream (`stored`), the token format (`token`), the subject layout and
//! partition routing (`subjects`). Nothing else is shared between processes.
//!
//! This crate is pure protocol: its only dependencies are serde and the token code's crypto
//! (no async runtime, no HTTP, no sockets). The reference client lives in `threadspace-client`.

pub mod frames;
pub mod ids;
pub mod stored;
pub mod subjects;
pub mod token;

pub use frames::{ClientFrame, ErrorCode, ServerFrame};
pub use ids::{ChannelId, OrgId, Seq, UserId};

/// An error with its sources, `a: b: c`: how every ThreadSpace binary logs an error.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
