//! `threadspace-gateway`: parse and check the flags, then serve WebSockets until SIGTERM or
//! SIGINT and drain (start-up and exit codes: `threadspace_service`).

use std::process::ExitCode;

use threadspace_gateway::{run, Config};
use threadspace_service::{configure, serve, Server, LATENCY_BUCKETS};

fn main() -> ExitCode {
    let config = match configure("threadspace-gateway", Config::validate) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let server = Server {
        name: "gateway",
        listen: config.listen,
        worker_threads: config.worker_threads,
        serves: "WebSocket (/v1/ws), /healthz, /readyz, /metrics",
        buckets: LATENCY_BUCKETS,
    };
    serve(server, config, run)
}
