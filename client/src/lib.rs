//! The ThreadSpace reference client, used by loadgen, the end-to-end tests and the local-stack
//! demo: the WebSocket protocol of docs/protocol.md (`ws`) and the REST API of the api service
//! (`rest`). Clients in other languages are written from the same two documents.

pub mod rest;
pub mod ws;

pub use ws::{Client, ClientError, ConnectOptions, Incoming};
