//! The REST routes and the OpenAPI document generated from them. Every route that clients use
//! is registered through `utoipa_axum::routes!`, so the document cannot miss one; the
//! operational endpoints (`/healthz`, `/readyz`, `/metrics`) are plain routes outside it.
//!
//! Handlers take only the parts of the service they use (axum `State` sub-states built by
//! [`crate::parts::Parts`]), never the whole.

pub(crate) mod accounts;
pub(crate) mod audit;
pub(crate) mod bots;
pub(crate) mod browse;
pub(crate) mod channels;
pub(crate) mod history;
pub(crate) mod lifecycle;
pub(crate) mod membership;
pub(crate) mod messages;
pub(crate) mod ops;
pub(crate) mod people;
pub(crate) mod query;
pub(crate) mod rights;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::limits::{ClientIp, RateLimiter};
use crate::metrics as m;
use crate::parts::Parts;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ThreadSpace API",
        description = "The REST API of ThreadSpace: accounts and sessions, people, channels, \
            history, search and membership. The service also serves the web client at `/`. \
            Authenticate with `Authorization: Bearer <access token>` (the same token as the \
            WebSocket's `hello`); bots use their API token on the message routes, and incoming \
            webhooks carry their secret in the URL. Every error is `{\"error\":{\"code\":…,\"message\":…}}`. \
            The real-time protocol is docs/protocol.md.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "accounts", description = "Orgs, sign-up, login, sessions and passwords"),
        (name = "people", description = "Invites, roles, deactivation, the org's sign-up setting"),
        (name = "history", description = "Channel history pages, sending messages, full-text search"),
        (name = "integrations", description = "Bots, their API tokens and incoming webhooks"),
        (name = "membership", description = "Joining, leaving, adding and removing channel members"),
        (name = "data rights", description = "Exports of a person's or the org's data, erasure of a person"),
    )
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the routes require.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::builder().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// Adds the `429` every route can answer (per-IP and per-user request rates). Applied to the
/// finished document (`split`): a modifier in `#[openapi]` runs before the routes exist.
struct RateLimited;

impl Modify for RateLimited {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let response = ResponseBuilder::new()
            .description("Too many requests (`rate_limited`); the `Retry-After` header says when to retry")
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch]
                .into_iter()
                .flatten()
            {
                operation.responses.responses.insert("429".into(), response.clone().into());
            }
        }
    }
}

/// The client-facing routes, each registered with its OpenAPI operation.
pub(crate) fn api_routes() -> OpenApiRouter<Parts> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::create_org))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::refresh))
        .routes(routes!(accounts::logout))
        .routes(routes!(accounts::sign_out_everywhere))
        .routes(routes!(accounts::change_password))
        .routes(routes!(accounts::request_reset))
        .routes(routes!(accounts::complete_reset))
        .routes(routes!(accounts::signup))
        .routes(routes!(accounts::complete_signup))
        .routes(routes!(accounts::me))
        .routes(routes!(accounts::update_profile))
        .routes(routes!(people::create_invite))
        .routes(routes!(people::accept_invite))
        .routes(routes!(people::set_role))
        .routes(routes!(people::deactivate))
        .routes(routes!(people::reactivate))
        .routes(routes!(people::set_signup_domain))
        .routes(routes!(browse::people))
        .routes(routes!(browse::person))
        .routes(routes!(browse::my_channels, channels::create_channel))
        .routes(routes!(channels::open_conversation))
        .routes(routes!(channels::browse))
        .routes(routes!(channels::members))
        .routes(routes!(lifecycle::channel, lifecycle::update))
        .routes(routes!(lifecycle::archive))
        .routes(routes!(lifecycle::unarchive))
        .routes(routes!(audit::audit_log))
        .routes(routes!(history::messages, messages::send))
        .routes(routes!(messages::webhook))
        .routes(routes!(bots::create_bot, bots::list_bots))
        .routes(routes!(bots::issue_token))
        .routes(routes!(bots::create_webhook))
        .routes(routes!(bots::revoke))
        .routes(routes!(history::search))
        .routes(routes!(membership::add_member, membership::remove_member))
        .routes(routes!(rights::export_me))
        .routes(routes!(rights::export_org))
        .routes(routes!(rights::erase_user))
        .routes(routes!(rights::job))
        .routes(routes!(rights::archive))
        .routes(routes!(rights::erasure_policy, rights::set_erasure_policy))
}

/// The REST routes and their finished OpenAPI document.
pub(crate) fn split() -> (Router<Parts>, utoipa::openapi::OpenApi) {
    let (router, mut document) = api_routes().split_for_parts();
    RateLimited.modify(&mut document);
    (router, document)
}

/// The service's router: the REST routes, their OpenAPI document, the operational endpoints
/// and the web client (`crate::web`, outside the per-IP limit: static files). Every REST route is rate-limited per client IP.
pub(crate) fn router(parts: Parts, limits: IpLimits, web: crate::web::WebClient) -> Router {
    let (api_router, document) = split();
    let api_router = api_router.layer(axum::middleware::from_fn_with_state(limits, limit_ip));
    api_router
        .route("/v1/openapi.json", get(move || async move { Json(document) }))
        .route("/healthz", get(ops::health))
        .route("/readyz", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .merge(crate::web::routes(web))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(count))
        .with_state(parts)
}

/// Per-IP limits: the limiter, and the header a trusted proxy puts the client's address in.
#[derive(Clone)]
pub(crate) struct IpLimits {
    pub per_ip: Arc<RateLimiter<IpAddr>>,
    pub client_ip_header: Option<HeaderName>,
}

/// The client's address: the peer, or behind a trusted proxy (`--client-ip-header`) the last
/// address of that header — the one the proxy itself appended, which a client cannot forge.
fn client_ip(limits: &IpLimits, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let forwarded = limits.client_ip_header.as_ref().and_then(|name| {
        let value = headers.get_all(name).iter().next_back()?.to_str().ok()?;
        value.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
    });
    forwarded.unwrap_or_else(|| peer.ip())
}

/// Refuses a request over its client IP's rate with 429 and `Retry-After`, and hands the
/// client IP to the handlers (`Extension<ClientIp>`: login throttling).
async fn limit_ip(
    State(limits): State<IpLimits>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let ip = client_ip(&limits, peer, request.headers());
    request.extensions_mut().insert(ClientIp(ip));
    match limits.per_ip.check(ip, std::time::Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            metrics::counter!(m::RATE_LIMITED, "scope" => "ip").increment(1);
            ApiError::rate_limited("too many requests from this address", wait).into_response()
        }
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Counts and times every request by route template and status class.
async fn count(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await.into_response();
    let class = match response.status().as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!(m::REQUESTS, "route" => route.clone(), "method" => method, "status" => class)
        .increment(1);
    metrics::histogram!(m::REQUEST_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_ip_is_the_peer_unless_a_trusted_proxy_names_it() {
        let peer: SocketAddr = "10.9.9.9:5000".parse().expect("an address");
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().expect("a value"));
        let direct = IpLimits { per_ip: Arc::new(RateLimiter::new(1)), client_ip_header: None };
        assert_eq!(
            client_ip(&direct, peer, &headers),
            peer.ip(),
            "without a trusted proxy the header is ignored"
        );
        let proxied =
            IpLimits { client_ip_header: Some(HeaderName::from_static("x-forwarded-for")), ..direct };
        // The last entry is the proxy's own; a client-forged first entry is ignored.
        assert_eq!(client_ip(&proxied, peer, &headers).to_string(), "203.0.113.7");
        assert_eq!(client_ip(&proxied, peer, &HeaderMap::new()), peer.ip(), "no header: the peer");
        headers.insert("x-forwarded-for", "garbage".parse().expect("a value"));
        assert_eq!(client_ip(&proxied, peer, &headers), peer.ip(), "unparsable: the peer");
    }
}
