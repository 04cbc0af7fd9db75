//! WebSocket frames: one JSON object per text frame, discriminated by `op`.
//! `docs/protocol.md` is the prose version of this file; keep them in step.
//!
//! Client frames are decoded in two steps (`decode_client_frame`): first the envelope (`op`,
//! `ref`), so that any later error can still name the request it belongs to, then the op's own
//! fields, so that the error names the field that was wrong.

use serde::{Deserialize, Serialize};

use crate::ids::{ChannelId, OrgId, Seq, UserId};

/// Longest accepted `ref` and `client_msg_id`, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// A frame sent by a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientFrame {
    /// First frame of every connection.
    Hello {
        token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<Resume>,
    },
    /// Post a message to a channel.
    Send {
        #[serde(rename = "ref")]
        reference: String,
        channel: ChannelId,
        client_msg_id: String,
        body: String,
    },
    /// Everything in `channel` up to `seq` has been read; acknowledged by `read_ack` once stored.
    Read {
        #[serde(rename = "ref")]
        reference: String,
        channel: ChannelId,
        seq: Seq,
    },
    /// The user is typing in a channel. Send at most every few seconds while typing; the
    /// gateway forwards at most one per user and channel per [`TYPING_THROTTLE_MS`].
    Typing { channel: ChannelId },
    /// This connection's user is `online` (back at the keyboard) or `idle` (away: window
    /// hidden, screen locked). Any `send`, `typing` or `read` also counts as `online`.
    Presence { status: ClientStatus },
    /// Application-level liveness check (WebSocket pings are also answered).
    Ping {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
}

/// Resume cursor presented in `hello`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The highest `seq` the client has seen (or the `head_seq` of its last `welcome`).
    pub last_seq: Seq,
}

/// A frame sent by the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome(Welcome),
    /// The message was stored in JetStream under `seq`.
    Ack {
        #[serde(rename = "ref")]
        reference: String,
        client_msg_id: String,
        seq: Seq,
        /// True when this was a retry of an already stored `client_msg_id`.
        duplicate: bool,
    },
    Msg(MessageFrame),
    /// Replay after a resume is complete; live messages follow.
    Resumed {
        replayed: u64,
        through_seq: Seq,
    },
    /// Messages of the client's channels with `after_seq < seq <= through_seq` cannot be replayed
    /// from the stream; page them from history. Live messages follow.
    HistoryRequired {
        after_seq: Seq,
        through_seq: Seq,
    },
    /// The user's membership changed.
    Member {
        channel: ChannelId,
        user: UserId,
        change: MemberChange,
    },
    /// A channel of the user's was renamed or got a new topic or purpose (`updated`, with all
    /// three as they are now), was archived (it leaves the user's channels: read-only, its
    /// history stays), or was unarchived (it is back, with its name, topic and purpose).
    Channel {
        channel: ChannelId,
        change: ChannelChange,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purpose: Option<String>,
    },
    Error {
        code: ErrorCode,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        message: String,
    },
    /// The gateway is going away: reconnect (to any gateway) after `after_ms`.
    Reconnect {
        after_ms: u64,
        reason: String,
    },
    Pong {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// The read marker is stored: `seq` is the marker now in force (higher than the request
    /// when a newer one was already stored: markers never move back).
    ReadAck {
        #[serde(rename = "ref")]
        reference: String,
        channel: ChannelId,
        seq: Seq,
    },
    /// `user` (possibly you, on another device) has read `channel` up to `seq`.
    Read {
        channel: ChannelId,
        user: UserId,
        seq: Seq,
    },
    /// Another member is typing in `channel`: show it until `expires_ms` pass without another
    /// `typing` from them, or their next message arrives.
    Typing {
        channel: ChannelId,
        user: UserId,
        expires_ms: u64,
    },
    /// Presence changes of users of your org, coalesced: each user at most once, with the
    /// status now in force. Apply on top of the `welcome` snapshot.
    Presence {
        users: Vec<PresenceEntry>,
    },
}

/// What a client may say about itself in `presence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientStatus {
    Online,
    Idle,
}

/// A user's presence as other users see it: `online` while at least one of their connections
/// is active, `idle` while all of them are idle, `offline` once the last one is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Idle,
    Offline,
}

impl PresenceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Idle => "idle",
            Self::Offline => "offline",
        }
    }
}

/// One user's presence in a `presence` frame or the `welcome` snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEntry {
    pub user: UserId,
    pub status: PresenceStatus,
}

/// The gateway forwards at most one `typing` per user and channel in this many milliseconds.
pub const TYPING_THROTTLE_MS: u64 = 3_000;
/// How long a client shows a `typing` indicator without a newer one.
pub const TYPING_EXPIRES_MS: u64 = 6_000;

/// Body of `welcome`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub user: UserInfo,
    pub session_id: u64,
    pub channels: Vec<ChannelInfo>,
    pub limits: Limits,
    pub heartbeat_ms: u64,
    /// Every message with `seq > head_seq` in the user's channels will be delivered on this
    /// connection (after any replay). A client with no cursor yet uses this as its cursor.
    pub head_seq: Seq,
    /// The org's users who are `online` or `idle` (everyone else is `offline`); `presence`
    /// frames update it from here on.
    #[serde(default)]
    pub presence: Vec<PresenceEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: UserId,
    pub org: OrgId,
    pub handle: String,
    pub display_name: String,
    pub role: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    pub id: ChannelId,
    pub kind: ChannelKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user's read marker in this channel (0: nothing read yet).
    #[serde(default)]
    pub last_read: Seq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Public,
    Private,
    Dm,
    GroupDm,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Dm => "dm",
            Self::GroupDm => "group_dm",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "public" => Self::Public,
            "private" => Self::Private,
            "dm" => Self::Dm,
            "group_dm" => Self::GroupDm,
            _ => return None,
        })
    }
}

/// Limits the gateway enforces on this connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_body_bytes: usize,
    pub sends_per_second: u32,
    pub send_burst: u32,
}

/// A delivered message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageFrame {
    pub seq: Seq,
    pub channel: ChannelId,
    pub sender: UserId,
    pub client_msg_id: String,
    pub body: String,
    /// Gateway time at publish, milliseconds since the Unix epoch.
    pub ts: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    Joined,
    Left,
}

/// What happened to a channel (the `channel` frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelChange {
    Updated,
    Archived,
    Unarchived,
}

/// Stable error codes of `error` frames (documented in `docs/protocol.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a JSON object.
    BadJson,
    /// A binary message, or a fragmented text message that is not UTF-8 once assembled.
    BadFrame,
    /// `op` is missing or not a known op.
    UnknownOp,
    /// A field is missing, has the wrong type, or an invalid value; the message names it.
    InvalidField,
    /// The first frame was not `hello`.
    HelloRequired,
    /// A second `hello` on an authenticated connection.
    AlreadyAuthenticated,
    /// The token was rejected; the connection closes with 4001.
    AuthFailed,
    /// The user is not a member of the channel.
    NotMember,
    /// The body is longer than `limits.max_body_bytes`.
    BodyTooLarge,
    /// Too many frames or sends; slow down.
    RateLimited,
    /// The message could not be stored (JetStream unavailable); retry with the same id.
    Unavailable,
    /// The `client_msg_id` was already used, within the dedup window, for a different message
    /// (another channel or body): nothing was stored; send it again under a new id.
    IdReused,
    /// A bug or an unexpected failure on the gateway.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::BadFrame => "bad_frame",
            Self::UnknownOp => "unknown_op",
            Self::InvalidField => "invalid_field",
            Self::HelloRequired => "hello_required",
            Self::AlreadyAuthenticated => "already_authenticated",
            Self::AuthFailed => "auth_failed",
            Self::NotMember => "not_member",
            Self::BodyTooLarge => "body_too_large",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::IdReused => "id_reused",
            Self::Internal => "internal",
        }
    }
}

/// WebSocket close codes used by the gateway (documented in `docs/protocol.md`).
pub mod close_code {
    /// Normal closure (client asked).
    pub const NORMAL: u16 = 1000;
    /// The gateway is draining (deploy, scale-in); a `reconnect` frame preceded it.
    pub const GOING_AWAY: u16 = 1001;
    /// A WebSocket protocol violation (unmasked frame, reserved bits, bad fragments, bad
    /// control frame, invalid UTF-8 in an unfragmented text frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A frame, or a message assembled from fragments, exceeded the size limit.
    pub const TOO_LARGE: u16 = 1009;
    /// Unexpected gateway failure.
    pub const INTERNAL: u16 = 1011;
    /// No client frame (not even a pong) within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4000;
    /// The token in `hello` was rejected.
    pub const AUTH_FAILED: u16 = 4001;
    /// No `hello` within the hello deadline.
    pub const HELLO_TIMEOUT: u16 = 4002;
    /// The session ended: signed out, revoked (refresh reuse, password change or reset) or the
    /// user deactivated. The token and the session's refresh token no longer work: sign in
    /// again (after a password change, with the tokens that change returned).
    pub const SESSION_ENDED: u16 = 4004;
    /// The first frame was not a valid `hello`.
    pub const HELLO_REQUIRED: u16 = 4003;
    /// The client did not read fast enough and its outbound queue filled.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The client kept flooding after `rate_limited` errors.
    pub const RATE_LIMITED: u16 = 4029;
}

/// Why a client frame could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub code: ErrorCode,
    /// The request's `ref`, when the envelope was readable.
    pub reference: Option<String>,
    pub message: String,
}

#[derive(Deserialize)]
struct HelloFields {
    token: String,
    #[serde(default)]
    resume: Option<Resume>,
}

#[derive(Deserialize)]
struct ReadFields {
    #[serde(rename = "ref")]
    reference: String,
    channel: ChannelId,
    seq: Seq,
}

#[derive(Deserialize)]
struct PresenceFields {
    status: ClientStatus,
}

#[derive(Deserialize)]
struct TypingFields {
    channel: ChannelId,
}

#[derive(Deserialize)]
struct SendFields {
    #[serde(rename = "ref")]
    reference: String,
    channel: ChannelId,
    client_msg_id: String,
    body: String,
}

fn from_slice_with_path<T: serde::de::DeserializeOwned>(
    text: &[u8],
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut deserializer)
}

#[derive(Deserialize)]
struct Envelope {
    op: Option<serde_json::Value>,
    #[serde(rename = "ref")]
    reference: Option<serde_json::Value>,
}

/// Decodes one client text frame, with an error that names what was wrong.
pub fn decode_client_frame(text: &[u8]) -> Result<ClientFrame, DecodeError> {
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(DecodeError {
            code: ErrorCode::BadJson,
            reference: None,
            message: "frame is not a JSON object".into(),
        });
    }
    let envelope: Envelope = serde_json::from_slice(text).map_err(|error| DecodeError {
        code: ErrorCode::BadJson,
        reference: None,
        message: format!("frame is not a JSON object: {error}"),
    })?;
    let reference = match envelope.reference {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_LEN => Some(s),
        Some(_) => {
            return Err(DecodeError {
                code: ErrorCode::InvalidField,
                reference: None,
                message: format!("field `ref` must be a string of 1 to {MAX_ID_LEN} bytes"),
            })
        }
    };
    let fail = |code, message: String| DecodeError { code, reference: reference.clone(), message };
    let op = match envelope.op {
        Some(serde_json::Value::String(op)) => op,
        Some(_) => return Err(fail(ErrorCode::UnknownOp, "field `op` must be a string".into())),
        None => return Err(fail(ErrorCode::UnknownOp, "field `op` is missing".into())),
    };
    if !matches!(op.as_str(), "hello" | "send" | "ping" | "typing" | "read" | "presence") {
        return Err(fail(ErrorCode::UnknownOp, format!("unknown op `{op}`")));
    }
    let invalid = |error: serde_path_to_error::Error<serde_json::Error>| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = if path == "." {
            format!("invalid `{op}` frame: {inner}")
        } else {
            format!("invalid `{op}` frame: field `{path}`: {inner}")
        };
        fail(ErrorCode::InvalidField, message)
    };
    let frame = match op.as_str() {
        "hello" => {
            let f: HelloFields = from_slice_with_path(text).map_err(invalid)?;
            ClientFrame::Hello { token: f.token, resume: f.resume }
        }
        "send" => {
            let f: SendFields = from_slice_with_path(text).map_err(invalid)?;
            ClientFrame::Send {
                reference: f.reference,
                channel: f.channel,
                client_msg_id: f.client_msg_id,
                body: f.body,
            }
        }
        "read" => {
            let f: ReadFields = from_slice_with_path(text).map_err(invalid)?;
            if f.channel.0 <= 0 {
                return Err(fail(ErrorCode::InvalidField, "field `channel` must be positive".into()));
            }
            if f.seq == 0 || f.seq > i64::MAX as u64 {
                return Err(fail(
                    ErrorCode::InvalidField,
                    "field `seq` must be a positive message seq".into(),
                ));
            }
            ClientFrame::Read { reference: f.reference, channel: f.channel, seq: f.seq }
        }
        "typing" => {
            let f: TypingFields = from_slice_with_path(text).map_err(invalid)?;
            if f.channel.0 <= 0 {
                return Err(fail(ErrorCode::InvalidField, "field `channel` must be positive".into()));
            }
            ClientFrame::Typing { channel: f.channel }
        }
        "presence" => {
            let f: PresenceFields = from_slice_with_path(text).map_err(invalid)?;
            ClientFrame::Presence { status: f.status }
        }
        _ => ClientFrame::Ping { reference: reference.clone() },
    };
    if let ClientFrame::Send { client_msg_id, channel, body, .. } = &frame {
        if channel.0 <= 0 {
            return Err(fail(ErrorCode::InvalidField, "field `channel` must be positive".into()));
        }
        if let Err(why) = valid_body(body) {
            return Err(fail(ErrorCode::InvalidField, format!("field `body` {why}")));
        }
        if !valid_client_msg_id(client_msg_id) {
            return Err(fail(
                ErrorCode::InvalidField,
                format!("field `client_msg_id` must be 1 to {MAX_ID_LEN} characters of [A-Za-z0-9_-]"),
            ));
        }
    }
    Ok(frame)
}

/// What a first frame that did not decode was meant to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloShape {
    /// Another op, or not a JSON object at all: `hello_required`.
    NotHello,
    /// A `hello` whose `token` is missing or not a string: an authentication failure
    /// (`auth_failed`, close 4001) — the client has no credentials to offer.
    NoToken,
    /// A `hello` with a token and some other bad field.
    Hello,
}

/// Reads only `op` and `token` of a frame that failed to decode, to answer it as protocol.md says.
pub fn hello_shape(text: &[u8]) -> HelloShape {
    #[derive(Deserialize)]
    struct Probe {
        op: Option<serde_json::Value>,
        token: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(text) {
        Ok(probe) if probe.op.as_ref().and_then(serde_json::Value::as_str) == Some("hello") => {
            match probe.token {
                Some(serde_json::Value::String(_)) => HelloShape::Hello,
                _ => HelloShape::NoToken,
            }
        }
        _ => HelloShape::NotHello,
    }
}

/// The `ref` of a client frame, if its envelope is readable: lets a refusal name the request
/// without decoding the whole frame (used when a frame is dropped by the rate limiter).
pub fn reference_of(text: &[u8]) -> Option<String> {
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let envelope: Envelope = serde_json::from_slice(text).ok()?;
    match envelope.reference? {
        serde_json::Value::String(s) if !s.is_empty() && s.len() <= MAX_ID_LEN => Some(s),
        _ => None,
    }
}

/// A body the archive can store: Postgres text cannot hold U+0000, so such a message could be
/// acked but never archived. The reason completes "field `body` …".
pub fn valid_body(body: &str) -> Result<(), &'static str> {
    if body.contains('\0') {
        return Err("must not contain U+0000 (NUL)");
    }
    Ok(())
}

/// `client_msg_id` becomes part of the JetStream `Nats-Msg-Id` header: keep it to a safe alphabet.
pub fn valid_client_msg_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ServerFrame {
    /// Encodes the frame as the JSON text of one WebSocket frame.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("server frames contain only JSON-safe types")
    }

    /// Shorthand for an `error` frame.
    pub fn error(code: ErrorCode, reference: Option<String>, message: impl Into<String>) -> Self {
        Self::Error { code, reference, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_send() {
        let frame =
            decode_client_frame(br#"{"op":"send","ref":"r1","channel":7,"client_msg_id":"a-1","body":"hi"}"#)
                .expect("valid send");
        assert_eq!(
            frame,
            ClientFrame::Send {
                reference: "r1".into(),
                channel: ChannelId(7),
                client_msg_id: "a-1".into(),
                body: "hi".into()
            }
        );
    }

    #[test]
    fn decodes_hello_with_resume() {
        let frame = decode_client_frame(br#"{"op":"hello","token":"t","resume":{"last_seq":9}}"#)
            .expect("valid hello");
        assert_eq!(frame, ClientFrame::Hello { token: "t".into(), resume: Some(Resume { last_seq: 9 }) });
    }

    #[test]
    fn errors_name_what_was_wrong() {
        let cases: &[(&[u8], ErrorCode, Option<&str>, &str)] = &[
            (b"not json", ErrorCode::BadJson, None, "JSON"),
            (b"[1,2]", ErrorCode::BadJson, None, "JSON"),
            (br#"{"ref":"r"}"#, ErrorCode::UnknownOp, Some("r"), "`op` is missing"),
            (br#"{"op":"dance","ref":"r"}"#, ErrorCode::UnknownOp, Some("r"), "dance"),
            (br#"{"op":5}"#, ErrorCode::UnknownOp, None, "`op` must be a string"),
            (
                br#"{"op":"send","ref":"r","channel":"x","client_msg_id":"a","body":"b"}"#,
                ErrorCode::InvalidField,
                Some("r"),
                "channel",
            ),
            (
                br#"{"op":"send","ref":"r","channel":1,"body":"b"}"#,
                ErrorCode::InvalidField,
                Some("r"),
                "client_msg_id",
            ),
            (
                br#"{"op":"send","ref":"r","channel":1,"client_msg_id":"a b","body":"b"}"#,
                ErrorCode::InvalidField,
                Some("r"),
                "client_msg_id",
            ),
            (
                br#"{"op":"send","ref":"r","channel":-1,"client_msg_id":"a","body":"b"}"#,
                ErrorCode::InvalidField,
                Some("r"),
                "channel",
            ),
            (br#"{"op":"ping","ref":7}"#, ErrorCode::InvalidField, None, "`ref`"),
        ];
        for (input, code, reference, needle) in cases {
            let error = decode_client_frame(input).expect_err("must be rejected");
            assert_eq!(error.code, *code, "{}", String::from_utf8_lossy(input));
            assert_eq!(error.reference.as_deref(), *reference);
            assert!(error.message.contains(needle), "{} lacks {needle}", error.message);
        }
    }

    #[test]
    fn reference_of_reads_only_a_valid_ref() {
        assert_eq!(reference_of(br#"{"op":"send","ref":"r9","channel":"bad"}"#).as_deref(), Some("r9"));
        assert_eq!(reference_of(br#"{"op":"send","ref":7}"#), None);
        assert_eq!(reference_of(b"not json"), None);
        assert_eq!(reference_of(br#"{"op":"ping"}"#), None);
    }

    #[test]
    fn error_code_strings_match_serde() {
        for code in [
            ErrorCode::BadJson,
            ErrorCode::BadFrame,
            ErrorCode::UnknownOp,
            ErrorCode::InvalidField,
            ErrorCode::HelloRequired,
            ErrorCode::AlreadyAuthenticated,
            ErrorCode::AuthFailed,
            ErrorCode::NotMember,
            ErrorCode::BodyTooLarge,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).expect("serializes");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    proptest! {
        #[test]
        fn decoder_never_panics(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_client_frame(&input);
        }

        #[test]
        fn send_round_trips(
            reference in "[a-z0-9]{1,64}",
            channel in 1i64..i64::MAX,
            id in "[A-Za-z0-9_-]{1,64}",
            body in "[^\\x00]*",
        ) {
            let frame = ClientFrame::Send {
                reference, channel: ChannelId(channel), client_msg_id: id, body,
            };
            let bytes = serde_json::to_vec(&frame).expect("serializes");
            prop_assert_eq!(decode_client_frame(&bytes).expect("decodes"), frame);
        }

        #[test]
        fn server_frames_round_trip(seq in any::<u64>(), body in any::<String>(), ts in any::<i64>()) {
            let frame = ServerFrame::Msg(MessageFrame {
                seq, channel: ChannelId(3), sender: UserId(4), client_msg_id: "c".into(), body, ts,
            });
            let decoded: ServerFrame = serde_json::from_slice(&frame.encode()).expect("decodes");
            prop_assert_eq!(decoded, frame);
        }
    }

    #[test]
    fn a_body_with_nul_is_refused_naming_the_field() {
        let error = decode_client_frame(
            br#"{"op":"send","ref":"r","channel":1,"client_msg_id":"a","body":"x\u0000y"}"#,
        )
        .expect_err("NUL refused");
        assert_eq!(error.code, ErrorCode::InvalidField);
        assert_eq!(error.reference.as_deref(), Some("r"));
        assert!(error.message.contains("`body`"), "{}", error.message);
    }

    #[test]
    fn typing_decodes_and_names_a_bad_channel() {
        assert_eq!(
            decode_client_frame(br#"{"op":"typing","channel":7}"#).expect("decodes"),
            ClientFrame::Typing { channel: ChannelId(7) }
        );
        for bad in [
            &br#"{"op":"typing"}"#[..],
            br#"{"op":"typing","channel":"x"}"#,
            br#"{"op":"typing","channel":0}"#,
        ] {
            let error = decode_client_frame(bad).expect_err("invalid");
            assert_eq!(error.code, ErrorCode::InvalidField);
            assert!(error.message.contains("channel"), "{}", error.message);
        }
        let frame =
            ServerFrame::Typing { channel: ChannelId(7), user: UserId(2), expires_ms: TYPING_EXPIRES_MS };
        assert_eq!(
            String::from_utf8(frame.encode()).expect("utf-8"),
            r#"{"op":"typing","channel":7,"user":2,"expires_ms":6000}"#
        );
    }

    #[test]
    fn presence_decodes_and_names_a_bad_status() {
        assert_eq!(
            decode_client_frame(br#"{"op":"presence","status":"idle"}"#).expect("decodes"),
            ClientFrame::Presence { status: ClientStatus::Idle }
        );
        for bad in [
            &br#"{"op":"presence"}"#[..],
            br#"{"op":"presence","status":"offline"}"#,
            br#"{"op":"presence","status":1}"#,
        ] {
            let error = decode_client_frame(bad).expect_err("invalid");
            assert_eq!(error.code, ErrorCode::InvalidField);
            assert!(error.message.contains("status"), "{}", error.message);
        }
        let frame = ServerFrame::Presence {
            users: vec![PresenceEntry { user: UserId(2), status: PresenceStatus::Idle }],
        };
        assert_eq!(
            String::from_utf8(frame.encode()).expect("utf-8"),
            r#"{"op":"presence","users":[{"user":2,"status":"idle"}]}"#
        );
    }
}
