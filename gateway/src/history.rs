//! The read path over Postgres: history pages (`GET /v1/channels/{channel}/messages`) and
//! search (`GET /v1/search`). Both authenticate with the same bearer token as the WebSocket,
//! read only channels the caller is a member of, and answer a bad parameter with 400 naming
//! it. They use their own small pool with a statement timeout, so a heavy search cannot starve
//! `hello`'s directory reads.

use std::collections::HashMap;

use hyper::{Response, StatusCode};
use threadspace_protocol::{ChannelId, Seq};
use threadspace_store::directory::Session;
use threadspace_store::messages::{self, PageRequest, SearchError};
use tracing::warn;

use crate::http::{error, json, Body};
use crate::metrics as m;
use crate::state::{anyhow_chain, State};

/// Default and largest history page.
pub const DEFAULT_PAGE: i64 = 50;
/// Default and largest search page.
pub const DEFAULT_HITS: i64 = 20;
pub const MAX_HITS: i64 = 100;
/// Deepest a search may page (ranked results further down are noise).
pub const MAX_SEARCH_OFFSET: i64 = 1_000;
/// Longest search query, in characters.
pub const MAX_QUERY_CHARS: usize = 256;

/// A 400 naming the bad parameter.
fn bad(message: impl AsRef<str>) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, "invalid_parameter", message.as_ref())
}

fn unavailable(what: &str, e: &(dyn std::error::Error + 'static)) -> Response<Body> {
    warn!(error = %anyhow_chain(e), "{what} failed");
    error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "history is unavailable; retry later")
}

/// Parses a query string into parameters, refusing unknown and repeated ones.
fn params(query: Option<&str>, allowed: &[&str]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !allowed.contains(&key.as_ref()) {
            return Err(format!("unknown query parameter `{key}` (allowed: {})", allowed.join(", ")));
        }
        if out.insert(key.to_string(), value.into_owned()).is_some() {
            return Err(format!("query parameter `{key}` is given twice"));
        }
    }
    Ok(out)
}

/// An integer parameter within `range`, or the default when absent.
fn int_param(
    params: &HashMap<String, String>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, String> {
    let Some(raw) = params.get(name) else { return Ok(None) };
    match raw.parse::<i64>() {
        Ok(v) if range.contains(&v) => Ok(Some(v)),
        _ => Err(format!(
            "query parameter `{name}` must be an integer from {} to {}, got {raw:?}",
            range.start(),
            range.end()
        )),
    }
}

/// Why a request was not authenticated.
enum AuthError {
    Missing,
    Rejected,
    Unavailable(threadspace_store::directory::DirectoryError),
}

impl AuthError {
    fn response(self) -> Response<Body> {
        match self {
            Self::Missing => error(
                StatusCode::UNAUTHORIZED,
                "auth_failed",
                "missing `Authorization: Bearer <token>` header",
            ),
            Self::Rejected => error(StatusCode::UNAUTHORIZED, "auth_failed", "token rejected"),
            Self::Unavailable(e) => unavailable("directory read", &e),
        }
    }
}

/// Verifies the bearer token and loads the caller's session.
async fn authenticate(state: &State, token: Option<&str>) -> Result<Session, AuthError> {
    let token = token.ok_or(AuthError::Missing)?;
    let identity = state.keys().verify(token).map_err(|_| AuthError::Rejected)?;
    match state.directory.session(identity.user).await {
        Ok(Some(s)) if s.user.org == identity.org && !s.deactivated => Ok(s),
        Ok(_) => Err(AuthError::Rejected),
        Err(e) => Err(AuthError::Unavailable(e)),
    }
}

/// `GET /v1/channels/{channel}/messages?before=&after=&limit=`.
pub async fn messages(
    state: &State,
    token: Option<&str>,
    channel: ChannelId,
    query: Option<&str>,
) -> Response<Body> {
    let params = match params(query, &["before", "after", "limit"]) {
        Ok(p) => p,
        Err(message) => return bad(message),
    };
    let parsed = (|| {
        let before = int_param(&params, "before", 1..=i64::MAX)?;
        let after = int_param(&params, "after", 0..=i64::MAX - 1)?;
        let limit = int_param(&params, "limit", 1..=messages::MAX_PAGE)?.unwrap_or(DEFAULT_PAGE);
        if let (Some(b), Some(a)) = (before, after) {
            if b <= a + 1 {
                return Err(format!("`before` ({b}) must be greater than `after` + 1 ({a} + 1)"));
            }
        }
        Ok(PageRequest { before: before.map(|s| s as Seq), after: after.map(|s| s as Seq), limit })
    })();
    let request = match parsed {
        Ok(r) => r,
        Err(message) => return bad(message),
    };
    let session = match authenticate(state, token).await {
        Ok(s) => s,
        Err(e) => return e.response(),
    };
    if !session.channels.iter().any(|c| c.id == channel) {
        return error(
            StatusCode::FORBIDDEN,
            "not_member",
            &format!("you are not a member of channel {channel}"),
        );
    }
    let client = match state.history.get().await {
        Ok(c) => c,
        Err(e) => return unavailable("history pool", &e),
    };
    let started = std::time::Instant::now();
    match messages::history(&client, channel, request).await {
        Ok(page) => {
            metrics::histogram!(m::HISTORY_DURATION, "kind" => "page")
                .record(started.elapsed().as_secs_f64());
            json(
                StatusCode::OK,
                &serde_json::json!({ "channel": channel, "messages": page.messages, "has_more": page.has_more }),
            )
        }
        Err(e) => unavailable("history page", &e),
    }
}

/// `GET /v1/search?q=&limit=&cursor=&channel=`.
pub async fn search(state: &State, token: Option<&str>, query: Option<&str>) -> Response<Body> {
    let params = match params(query, &["q", "limit", "cursor", "channel"]) {
        Ok(p) => p,
        Err(message) => return bad(message),
    };
    let q = params.get("q").map(|q| q.trim()).unwrap_or("");
    if q.is_empty() {
        return bad("query parameter `q` is required and must not be blank");
    }
    if q.chars().count() > MAX_QUERY_CHARS || q.contains('\0') {
        return bad(format!("query parameter `q` must be at most {MAX_QUERY_CHARS} characters, without NUL"));
    }
    let parsed = (|| {
        let limit = int_param(&params, "limit", 1..=MAX_HITS)?.unwrap_or(DEFAULT_HITS);
        let offset = int_param(&params, "cursor", 0..=MAX_SEARCH_OFFSET)?.unwrap_or(0);
        let channel = int_param(&params, "channel", 1..=i64::MAX)?.map(ChannelId);
        Ok::<_, String>((limit, offset, channel))
    })();
    let (limit, offset, only) = match parsed {
        Ok(p) => p,
        Err(message) => return bad(message),
    };
    let session = match authenticate(state, token).await {
        Ok(s) => s,
        Err(e) => return e.response(),
    };
    let channels: Vec<ChannelId> = match only {
        Some(channel) if session.channels.iter().any(|c| c.id == channel) => vec![channel],
        Some(channel) => {
            return error(
                StatusCode::FORBIDDEN,
                "not_member",
                &format!("you are not a member of channel {channel}"),
            )
        }
        None => session.channels.iter().map(|c| c.id).collect(),
    };
    let client = match state.history.get().await {
        Ok(c) => c,
        Err(e) => return unavailable("history pool", &e),
    };
    let started = std::time::Instant::now();
    match messages::search(&client, session.user.org, &channels, q, limit, offset).await {
        Ok(hits) => {
            metrics::histogram!(m::HISTORY_DURATION, "kind" => "search")
                .record(started.elapsed().as_secs_f64());
            let next = offset + hits.len() as i64;
            let next_cursor =
                (hits.len() as i64 == limit && next <= MAX_SEARCH_OFFSET).then(|| next.to_string());
            let hits: Vec<serde_json::Value> = hits
                .into_iter()
                .map(|hit| {
                    let mut value = serde_json::to_value(&hit.message).expect("frames serialize");
                    value["rank"] = serde_json::json!(hit.rank);
                    value
                })
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "hits": hits, "next_cursor": next_cursor }))
        }
        Err(SearchError::NoWords) => {
            bad("query parameter `q` has no searchable words (only stop words or punctuation)")
        }
        Err(SearchError::Query(e)) => unavailable("search", &e),
    }
}
