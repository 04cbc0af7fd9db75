//! Delivery: getting stored messages to connections. The hub (who is connected, in which
//! channels, with what outbound queue), the fanout (the stream's records, in seq order, to the
//! hub), publishing a send to the stream, and the resume replay.
//!
//! Delivery knows nothing of sockets or of the client protocol's ops: the edge hands it a
//! connection handle and, for replay, somewhere to write frames ([`replay::FrameSink`]).

pub(crate) mod fanout;
pub(crate) mod hub;
pub(crate) mod publish;
pub(crate) mod replay;
