//! Request bodies: JSON only, at most [`MAX_BODY_BYTES`], decoded strictly (unknown fields
//! refused) with the failing field named — `400 invalid_body` — and text fields checked by
//! the validators below (docs/api.md, "Request bodies").

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest accepted request body.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024;

/// Largest accepted request body that carries a message (REST sends, webhooks): room for the
/// largest body the archive stores, with its JSON escaping.
pub(crate) const MAX_MESSAGE_REQUEST_BYTES: usize = 128 * 1024;

/// A JSON body decoded into `T` (which denies unknown fields), at most `LIMIT` bytes.
pub(crate) struct Body<T, const LIMIT: usize = MAX_BODY_BYTES>(pub T);

impl<S: Send + Sync, T: DeserializeOwned, const LIMIT: usize> FromRequest<S> for Body<T, LIMIT> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let json = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|_| too_large(LIMIT))?;
        if bytes.len() > LIMIT {
            return Err(too_large(LIMIT));
        }
        decode(&bytes).map(Body)
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body is larger than {limit} bytes"),
    )
}

/// Decodes `bytes` as `T`, naming the field that failed.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path == "." || path.is_empty() {
            format!("body: {inner}")
        } else {
            format!("body field `{path}`: {inner}")
        };
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message)
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("body: {e}")))?;
    Ok(value)
}

/// 400 `invalid_field` naming `field`.
pub(crate) fn invalid(field: &str, why: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", format!("`{field}` {why}"))
}

/// A display name or org name: 1–200 characters after trimming, no control characters.
pub(crate) fn name<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(invalid(field, "must not be empty or only whitespace"));
    }
    if trimmed.chars().count() > 200 {
        return Err(invalid(field, "must be at most 200 characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(trimmed)
}

/// What an erased account's handle becomes (`erased-<id>`); no one else's handle starts so.
const ERASED_HANDLE_PREFIX: &str = "erased-";

/// A handle or org slug: 1–63 of `a-z 0-9 . _ -` (slugs: `a-z 0-9 -`), starting with a letter
/// or digit; a handle not with [`ERASED_HANDLE_PREFIX`].
pub(crate) fn handle<'a>(field: &str, value: &'a str, slug: bool) -> Result<&'a str, ApiError> {
    let allowed = |b: u8| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (!slug && (b == b'.' || b == b'_'))
    };
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(allowed)
        && value.as_bytes()[0].is_ascii_alphanumeric();
    if ok && !slug && value.starts_with(ERASED_HANDLE_PREFIX) {
        Err(invalid(field, "may not start with \"erased-\": erased accounts are named so"))
    } else if ok {
        Ok(value)
    } else if slug {
        Err(invalid(field, "must be 1 to 63 of a-z, 0-9 and -, starting with a letter or digit"))
    } else {
        Err(invalid(field, "must be 1 to 63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"))
    }
}

/// A channel name: 1–80 of `a-z 0-9 _ -`, starting with a letter or digit (names are what
/// people type after `#`, so no spaces, capitals or punctuation).
pub(crate) fn channel_name<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
    let ok = !value.is_empty()
        && value.len() <= 80
        && value.bytes().all(allowed)
        && value.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(value)
    } else {
        Err(invalid(field, "must be 1 to 80 of a-z, 0-9, '_' and '-', starting with a letter or digit"))
    }
}

/// An email address, returned lower-cased: one `@`, a non-empty local part, a domain with a
/// dot, no spaces or control characters, at most 254 bytes.
pub(crate) fn email(field: &str, value: &str) -> Result<String, ApiError> {
    let value = value.trim().to_lowercase();
    let bad = || invalid(field, "is not an email address");
    if value.len() > 254 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = value.split_once('@').ok_or_else(bad)?;
    if local.is_empty() || domain.contains('@') || !valid_domain(domain) {
        return Err(bad());
    }
    Ok(value)
}

/// A DNS domain with at least two labels.
pub(crate) fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A new password: 8 to 256 characters.
pub(crate) fn password(field: &str, value: &str) -> Result<(), ApiError> {
    let n = value.chars().count();
    if !crate::secrets::PASSWORD_CHARS.contains(&n) {
        return Err(invalid(field, "must be 8 to 256 characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Login {
        email: String,
        remember: bool,
    }

    fn message(e: ApiError) -> String {
        format!("{e:?}")
    }

    #[test]
    fn decoding_names_the_field() {
        assert!(message(decode::<Login>(br#"{"email":"a","remember":1}"#).expect_err("type"))
            .contains("`remember`"));
        assert!(message(decode::<Login>(br#"{"email":"a"}"#).expect_err("missing")).contains("remember"));
        assert!(message(decode::<Login>(br#"{"email":"a","remember":true,"x":1}"#).expect_err("unknown"))
            .contains("unknown field `x`"));
        assert!(decode::<Login>(br#"{"email":"a","remember":true} x"#).is_err());
        assert!(decode::<Login>(b"not json").is_err());
    }

    #[test]
    fn text_fields_are_checked() {
        assert!(name("display_name", " \t ").is_err());
        assert!(name("display_name", "a\u{7}b").is_err());
        assert_eq!(name("display_name", "  Ada  ").expect("ok"), "Ada");
        assert!(handle("handle", "Ada", false).is_err());
        assert!(handle("slug", "a.b", true).is_err());
        assert!(handle("handle", "ada.l", false).is_ok());
        assert_eq!(email("email", " Ada@Example.COM ").expect("ok"), "ada@example.com");
        for bad in ["ada", "@x.io", "a@b", "a b@x.io", "a@x..io", "a@-x.io", "a@@x.io"] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
        assert!(password("password", "short").is_err());
        assert!(password("password", "long enough").is_ok());
    }
}
