//! The parts of the api service that handlers extract (axum sub-states): each handler names
//! the parts it uses — `State<Auth>`, `State<Archive>`… — and never receives the whole.

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::caller::Auth;

/// The pool for history and search (its connections carry a statement timeout).
#[derive(Clone)]
pub(crate) struct Archive(pub threadspace_store::Pool);

/// The announcing side of membership changes (core NATS).
#[derive(Clone)]
pub(crate) struct Announcer(pub async_nats::Client);

/// The Prometheus handle, when a recorder is installed.
#[derive(Clone)]
pub(crate) struct Telemetry(pub Option<PrometheusHandle>);

/// Cancelled when the service starts draining.
#[derive(Clone)]
pub(crate) struct Draining(pub CancellationToken);

/// The service's parts. Handlers extract the ones they use (`State<Auth>`, `State<Archive>`…);
/// none takes the whole.
#[derive(Clone)]
pub(crate) struct Parts {
    pub auth: Auth,
    pub archive: Archive,
    pub announcer: Announcer,
    pub telemetry: Telemetry,
    pub draining: Draining,
}

macro_rules! part {
    ($field:ident: $ty:ty) => {
        impl FromRef<Parts> for $ty {
            fn from_ref(parts: &Parts) -> Self {
                parts.$field.clone()
            }
        }
    };
}
part!(auth: Auth);
part!(archive: Archive);
part!(announcer: Announcer);
part!(telemetry: Telemetry);
part!(draining: Draining);
