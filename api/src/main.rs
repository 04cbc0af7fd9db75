//! `threadspace-api`: parse and check the flags, then serve the REST API until SIGTERM or
//! SIGINT and drain (start-up and exit codes: `threadspace_service`).
//! `threadspace-api openapi` prints the OpenAPI document without starting anything.

use std::process::ExitCode;

use threadspace_api::{openapi_document, run, Config};
use threadspace_service::{configure, serve, Server, LATENCY_BUCKETS};

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("openapi") {
        let document = openapi_document().to_pretty_json().expect("the OpenAPI document serializes");
        println!("{document}");
        return ExitCode::SUCCESS;
    }
    let config = match configure("threadspace-api", Config::validate) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let server = Server {
        name: "api service",
        listen: config.listen,
        worker_threads: config.worker_threads,
        serves: "REST under /v1 (OpenAPI at /v1/openapi.json), /healthz, /readyz, /metrics",
        buckets: LATENCY_BUCKETS,
    };
    serve(server, config, run)
}
