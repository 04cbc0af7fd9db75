//! Fuzz harnesses: one function per decoder that takes arbitrary bytes and panics on a bug,
//! either a panic in the code under test or a broken invariant checked here.
//!
//! This file is the one home of the harness code. The AFL++ targets in `fuzz/fuzz_targets/`
//! call it through the `threadspace-fuzz` crate, and the corpus replay test
//! `gateway/tests/fuzz_corpus.rs` includes it with `#[path]`, so `cargo test` runs every
//! committed corpus file through exactly what the fuzzer ran. It may only use crates that both
//! the fuzz crate and the gateway's tests have: the gateway, the protocol crate, base64,
//! ed25519-dalek, fastwebsockets, serde, serde_json and tokio.

// The entry points are `pub` for the fuzz binaries (fuzz/fuzz_targets, their own workspace);
// gateway/tests/fuzz_corpus.rs includes this file as a private module, where they look unused.
#![allow(unreachable_pub)]
// Not every helper is used by both includers.
#![allow(dead_code)]

use std::cell::Cell;
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use fastwebsockets::OpCode;
use threadspace_gateway::{FrameReader, ReadError};
use threadspace_protocol::frames::{
    decode_client_frame, reference_of, valid_client_msg_id, ClientFrame, ErrorCode, MAX_ID_LEN,
};
use threadspace_protocol::token::KeySet;

/// The fuzz targets, by corpus directory name.
pub const TARGETS: [&str; 4] = ["frame_reader", "client_frame", "token", "jwks"];

/// Runs `target`'s harness on `data`.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "frame_reader" => frame_reader(data),
        "client_frame" => client_frame(data),
        "token" => token(data),
        "jwks" => jwks(data),
        other => panic!("unknown fuzz target {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// frame_reader: the gateway's client-frame reader over an arbitrary client byte stream.

/// Frame size caps the reader is tried with (the gateway's `max_frame_bytes` is at least 1).
pub const FRAME_CAPS: [usize; 5] = [1, 125, 126, 4096, 65_536];

/// Input layout: byte 0 picks the cap (low 3 bits), the read chunk size (bits 4–5) and whether
/// every other read returns `Pending` first (bit 3); the rest is the client's byte stream.
pub fn frame_reader(data: &[u8]) {
    let Some((&selector, stream)) = data.split_first() else { return };
    let max = FRAME_CAPS[usize::from(selector & 0x07) % FRAME_CAPS.len()];
    let chunk = [usize::MAX, 1, 3, 7][usize::from((selector >> 4) & 0x03)];
    let position = Rc::new(Cell::new(0usize));
    let io = ChunkedReader {
        data: stream,
        position: position.clone(),
        chunk,
        pending_every_other: selector & 0x08 != 0,
        pend_next: true,
    };
    let mut reader = FrameReader::new(io, max);
    loop {
        let start = position.get();
        let result = block_on(reader.read_frame());
        let end = position.get();
        match result {
            Ok(frame) => {
                let raw = &stream[start..end];
                let len = frame.payload.len();
                assert!(len <= max, "payload of {len} bytes exceeds the {max}-byte cap");
                assert!(raw.len() >= len + 6, "frame shorter than header + mask + payload");
                let header_len = raw.len() - len - 4;
                let expected_header = match raw[1] & 0x7f {
                    126 => 4,
                    127 => 10,
                    _ => 2,
                };
                assert_eq!(header_len, expected_header, "frame consumed the wrong number of bytes");
                assert_eq!(frame.fin, raw[0] & 0x80 != 0, "fin bit");
                assert_eq!(frame.opcode as u8, raw[0] & 0x0f, "opcode");
                assert_eq!(raw[0] & 0x70, 0, "reserved bits accepted");
                assert_ne!(raw[1] & 0x80, 0, "unmasked frame accepted");
                let mask = &raw[header_len..header_len + 4];
                for (i, (&plain, &masked)) in frame.payload.iter().zip(&raw[header_len + 4..]).enumerate() {
                    assert_eq!(plain ^ mask[i & 3], masked, "payload byte {i} wrongly unmasked");
                }
                if matches!(frame.opcode, OpCode::Close | OpCode::Ping | OpCode::Pong) {
                    assert!(frame.fin && len <= 125, "bad control frame accepted");
                }
                if frame.opcode == OpCode::Text && frame.fin {
                    assert!(std::str::from_utf8(&frame.payload).is_ok(), "invalid UTF-8 text accepted");
                }
            }
            Err(ReadError::Eof) => {
                assert_eq!(end, stream.len(), "Eof before the end of the stream");
                return;
            }
            Err(ReadError::TooLarge { len, max: reported }) => {
                assert_eq!(reported, max);
                assert!(len > max as u64, "refused {len} bytes under the {max}-byte cap");
                return;
            }
            Err(ReadError::Protocol(_) | ReadError::InvalidUtf8) => return,
            Err(ReadError::Io(error)) => panic!("in-memory reader cannot fail: {error}"),
        }
    }
}

/// An in-memory client stream that hands out at most `chunk` bytes per read, optionally
/// returning `Pending` (and waking itself) before every other read, and publishes how far it
/// has been read.
struct ChunkedReader<'a> {
    data: &'a [u8],
    position: Rc<Cell<usize>>,
    chunk: usize,
    pending_every_other: bool,
    pend_next: bool,
}

impl tokio::io::AsyncRead for ChunkedReader<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pending_every_other {
            self.pend_next = !self.pend_next;
            if !self.pend_next {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        let at = self.position.get();
        let n = (self.data.len() - at).min(self.chunk).min(buf.remaining());
        buf.put_slice(&self.data[at..at + n]);
        self.position.set(at + n);
        Poll::Ready(Ok(()))
    }
}

/// Polls `future` to completion. Everything it awaits is in memory, so a long run of
/// `Pending` means it waits for something that never comes: a hang.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
    panic!("future still pending after 1,000,000 polls of an in-memory stream");
}

// ---------------------------------------------------------------------------------------------
// client_frame: the JSON decoder of client text frames.

/// Decodes `data` as a client frame. An accepted frame must satisfy the per-op rules,
/// re-serialise to the same op and decode back to itself; `reference_of` must agree with the
/// `ref` the decoder saw.
pub fn client_frame(data: &[u8]) {
    let envelope_ref = reference_of(data);
    if let Some(r) = &envelope_ref {
        assert!(!r.is_empty() && r.len() <= MAX_ID_LEN, "reference_of returned a bad ref");
    }
    let frame = match decode_client_frame(data) {
        Ok(frame) => frame,
        Err(error) => {
            assert!(!error.message.is_empty(), "error without a message");
            if error.code != ErrorCode::BadJson {
                // The envelope was readable: the error names the ref reference_of reads (none
                // when the ref itself was the problem).
                assert_eq!(error.reference, envelope_ref, "error ref differs from reference_of");
            } else {
                assert_eq!(error.reference, None, "bad_json error with a ref");
            }
            return;
        }
    };
    match &frame {
        ClientFrame::Send { reference, channel, client_msg_id, body } => {
            assert_eq!(Some(reference), envelope_ref.as_ref(), "send ref differs from reference_of");
            assert!(channel.0 > 0, "send to channel {}", channel.0);
            assert!(valid_client_msg_id(client_msg_id), "bad client_msg_id accepted");
            assert!(!body.contains('\0'), "NUL in body accepted");
        }
        ClientFrame::Read { reference, channel, seq } => {
            assert_eq!(Some(reference), envelope_ref.as_ref(), "read ref differs from reference_of");
            assert!(channel.0 > 0, "read of channel {}", channel.0);
            assert!(*seq > 0 && *seq <= i64::MAX as u64, "read seq {seq}");
        }
        ClientFrame::Typing { channel } => assert!(channel.0 > 0, "typing in channel {}", channel.0),
        ClientFrame::Ping { reference } => assert_eq!(reference, &envelope_ref, "ping ref"),
        ClientFrame::Hello { .. } | ClientFrame::Presence { .. } => {}
    }
    let encoded = serde_json::to_vec(&frame).expect("client frames serialise");
    let output: serde_json::Value = serde_json::from_slice(&encoded).expect("re-encoded frame is JSON");
    // The input's op, read on its own. (Not as a `serde_json::Value`: serde_json skips unknown
    // members without checking their UTF-8 or number ranges, so the decoder accepts frames that
    // a `Value` refuses, e.g. `"x":1e999`; harmless, as it never reads those members.)
    #[derive(serde::Deserialize)]
    struct Op {
        op: String,
    }
    let input: Op = serde_json::from_slice(data).expect("an accepted frame has a string op");
    assert_eq!(
        output["op"].as_str(),
        Some(input.op.as_str()),
        "accepted frame re-serialises to a different op"
    );
    let again = decode_client_frame(&encoded).expect("a re-encoded accepted frame decodes");
    assert_eq!(again, frame, "accepted frame does not survive a re-encode");
}

// ---------------------------------------------------------------------------------------------
// token and jwks: token verification against a fixed key set, and the key-set parser.

pub const ISSUER: &str = "threadspace-fuzz";
pub const AUDIENCE: &str = "threadspace-gateway";
pub const FUZZ_KID: &str = "fuzz-1";
/// The fuzz signing key. A test key: it signs only the seed tokens below.
const FUZZ_SECRET: [u8; 32] = *b"threadspace fuzz key, test only!";
/// A second kid in the key set, whose key signs nothing.
pub const OTHER_KID: &str = "fuzz-2";
const OTHER_SECRET: [u8; 32] = *b"threadspace fuzz key number two!";

fn signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&FUZZ_SECRET)
}

/// The JWKS the token target verifies against: the fuzz key and one more.
pub fn fuzz_jwks() -> String {
    let x = URL_SAFE_NO_PAD.encode(signing_key().verifying_key().to_bytes());
    let other = URL_SAFE_NO_PAD
        .encode(ed25519_dalek::SigningKey::from_bytes(&OTHER_SECRET).verifying_key().to_bytes());
    format!(
        r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","use":"sig","alg":"EdDSA","kid":"{FUZZ_KID}","x":"{x}"}},{{"kty":"OKP","crv":"Ed25519","kid":"{OTHER_KID}","x":"{other}"}}]}}"#
    )
}

fn key_set() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        KeySet::parse(fuzz_jwks().as_bytes(), "fuzz key set", ISSUER, AUDIENCE).expect("fuzz JWKS loads")
    })
}

/// Signs `header` and `claims` (JSON text) with the fuzz key, without jsonwebtoken.
pub fn sign(header: &str, claims: &str) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let signature = signing_key().sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// A token the fuzz key set accepts until 2100: user 42 of org 7.
pub fn valid_token() -> String {
    sign(
        &format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{FUZZ_KID}"}}"#),
        &format!(r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"42","org":7,"iat":1,"exp":4102444800}}"#),
    )
}

/// Verifies `data` (as text) against the fixed key set. A token may be accepted only if the
/// fuzz key signed it (checked here with ed25519-dalek directly, not through jsonwebtoken) and
/// its identity is what its claims say.
pub fn token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(identity) = key_set().verify(&text) else { return };
    let (signed, signature) = text.rsplit_once('.').expect("an accepted token has a signature part");
    let signature = URL_SAFE_NO_PAD.decode(signature).expect("accepted signature is base64url");
    let signature = ed25519_dalek::Signature::from_slice(&signature).expect("accepted signature is 64 bytes");
    signing_key()
        .verifying_key()
        .verify_strict(signed.as_bytes(), &signature)
        .expect("accepted a token the fuzz key did not sign");
    let (_, claims) = signed.rsplit_once('.').expect("an accepted token has a claims part");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).expect("claims are base64url"))
            .expect("claims are JSON");
    assert_eq!(claims["sub"].as_str(), Some(identity.user.0.to_string().as_str()), "sub");
    assert_eq!(claims["org"].as_i64(), Some(identity.org.0), "org");
    assert!(identity.user.0 > 0, "non-positive user accepted");
}

/// Parses `data` as a JWKS. A set that loads must verify tokens without panicking, and may
/// accept the fuzz key's token only if it holds the fuzz key under the token's kid.
pub fn jwks(data: &[u8]) {
    let Ok(set) = KeySet::parse(data, "fuzz input", ISSUER, AUDIENCE) else { return };
    let valid = valid_token();
    if set.verify(&valid).is_ok() {
        let x = URL_SAFE_NO_PAD.encode(signing_key().verifying_key().to_bytes());
        assert!(
            String::from_utf8_lossy(data).contains(&x[..42]),
            "a key set without the fuzz key accepted its token"
        );
    }
    // Other kids reach the other keys of the set: a token for each of them must not panic.
    let (_, rest) = valid.split_once('.').expect("token has three parts");
    for kid in [OTHER_KID, "", "0", "k1", "a"] {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#));
        let _ = set.verify(&format!("{header}.{rest}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds: a few valid and nearly valid inputs per target, written to `fuzz/corpus/<target>/` by
// `cargo test -p threadspace-gateway --test fuzz_corpus -- --ignored write_seeds`.

/// Encodes a client frame the way a browser does (masked), with the minimal length encoding.
pub fn client_frame_bytes(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65_535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

/// Seed inputs for `target`.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "frame_reader" => {
            let hello = br#"{"op":"hello","token":"t"}"#;
            let with = |selector: u8, frames: &[Vec<u8>]| {
                let mut out = vec![selector];
                out.extend(frames.concat());
                out
            };
            vec![
                with(3, &[client_frame_bytes(true, 0x1, hello, [1, 2, 3, 4])]),
                with(
                    0x1b,
                    &[
                        client_frame_bytes(false, 0x1, b"{\"op\":", [9, 8, 7, 6]),
                        client_frame_bytes(true, 0x9, b"ping", [0; 4]),
                        client_frame_bytes(true, 0x0, b"\"ping\"}", [5, 5, 5, 5]),
                    ],
                ),
                with(0x23, &[client_frame_bytes(true, 0x2, &[0xab; 300], [1, 0, 1, 0])]),
                with(4, &[client_frame_bytes(true, 0x2, &[7; 70_000], [3, 1, 4, 1])[..14].to_vec()]),
                with(2, &[client_frame_bytes(true, 0x8, &[0x03, 0xe8], [0, 1, 2, 3])]),
                with(
                    3,
                    &[
                        client_frame_bytes(true, 0xa, b"", [0; 4]),
                        client_frame_bytes(true, 0x1, b"\xff", [0; 4]),
                    ],
                ),
            ]
        }
        "client_frame" => [
            &br#"{"op":"hello","token":"t","resume":{"last_seq":9}}"#[..],
            br#"{"op":"send","ref":"r1","channel":7,"client_msg_id":"a-1","body":"hi"}"#,
            br#"{"op":"read","ref":"r2","channel":7,"seq":12}"#,
            br#"{"op":"typing","channel":7}"#,
            br#"{"op":"presence","status":"idle"}"#,
            br#"{"op":"ping","ref":"p"}"#,
            br#"{"op":"ping"}"#,
            br#"{"op":"send","ref":"r","channel":1,"client_msg_id":"a","body":"x\u0000y"}"#,
            br#" {"op":"dance","ref":"r"}"#,
            br#"{"ref":7}"#,
            b"[1,2]",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect(),
        "token" => {
            let header = format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{FUZZ_KID}"}}"#);
            vec![
                valid_token().into_bytes(),
                sign(
                    &header,
                    &format!(r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"42","org":7,"iat":1,"exp":2}}"#),
                )
                .into_bytes(),
                sign(
                    &header,
                    &format!(
                        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"-1","org":7,"exp":4102444800}}"#
                    ),
                )
                .into_bytes(),
                sign(&format!(r#"{{"alg":"HS256","kid":"{FUZZ_KID}"}}"#), r#"{"sub":"1"}"#).into_bytes(),
                sign(&format!(r#"{{"alg":"EdDSA","kid":"{OTHER_KID}"}}"#), r#"{"sub":"1"}"#).into_bytes(),
                b"not.a.token".to_vec(),
            ]
        }
        "jwks" => vec![
            fuzz_jwks().into_bytes(),
            br#"{"keys":[]}"#.to_vec(),
            br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]}"#.to_vec(),
            br#"{"keys":[{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"}]}"#.to_vec(),
            br#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#.to_vec(),
        ],
        other => panic!("unknown fuzz target {other:?}"),
    }
}
