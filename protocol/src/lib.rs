//! Everything that crosses a ThreadSpace process boundary: the WebSocket frames (`frames`), the
//! record stored in JetStream (`stored`), the token format (`token`), the subject layout and
//! partition routing (`subjects`), and a reference client (`client`) used by loadgen, the tests
//! and the local-stack demo. Nothing else is shared between processes.

pub mod client;
pub mod frames;
pub mod ids;
pub mod stored;
pub mod subjects;
pub mod token;

pub use frames::{ClientFrame, ErrorCode, ServerFrame};
pub use ids::{ChannelId, OrgId, Seq, UserId};
