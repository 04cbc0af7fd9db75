//! `threadspace-bridge`: parse and check the flags, then run the partition writers until
//! SIGTERM or SIGINT and let in-flight batches commit (start-up and exit codes:
//! `threadspace_service`).

use std::process::ExitCode;

use threadspace_broker_bridge::{run, Config};
use threadspace_service::{configure, serve, Server};

/// Batch commits can take longer than a request: the bridge's buckets reach a minute.
const BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

fn main() -> ExitCode {
    let config = match configure("threadspace-bridge", Config::validate) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let server = Server {
        name: "bridge",
        listen: config.listen,
        worker_threads: None,
        serves: "/metrics, /healthz, /readyz",
        buckets: BUCKETS,
    };
    serve(server, config, run)
}
