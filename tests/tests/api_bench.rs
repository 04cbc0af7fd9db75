//! The api service's figures (docs/api.md, "Measured"): the channel list of a person in 200
//! channels and the people search of an org of 500, each at 1,000 requests/s, and REST send →
//! WebSocket delivery at 50 posts/s through a bot token. A benchmark, not a check: run it with
//! release binaries,
//!
//! ```text
//! cargo build --release --bins
//! THREADSPACE_BIN_DIR=target/release cargo nextest run -p threadspace-tests --test api_bench \
//!     --run-ignored only --no-capture
//! ```
//!
//! It prints the figures and writes `target/reports/api-bench.json`. Latency is measured from
//! when each request was due (an open-loop schedule), so a stalled server shows in the tail
//! instead of slowing the load down (no coordinated omission).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_devstack::{Stack, StackOptions};
use threadspace_protocol::frames::ServerFrame;
use threadspace_store::seed::SeedSpec;
use threadspace_tests::WAIT;

/// Latencies in milliseconds, and the answers that were not the expected status.
#[derive(Default)]
struct Run {
    latencies: Vec<f64>,
    errors: usize,
}

impl Run {
    fn figures(&mut self, name: &str, rate: u32, duration: Duration) -> Value {
        self.latencies.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let n = self.latencies.len();
            if n == 0 {
                return f64::NAN;
            }
            self.latencies[((n as f64 * q).ceil() as usize).clamp(1, n) - 1]
        };
        let figures = json!({
            "rate_per_second": rate,
            "seconds": duration.as_secs(),
            "requests": self.latencies.len() + self.errors,
            "errors": self.errors,
            "p50_ms": round(at(0.50)),
            "p99_ms": round(at(0.99)),
            "max_ms": round(at(1.0)),
        });
        println!("{name}: {figures}");
        figures
    }
}

fn round(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

/// `GET`s `path(i)` at `rate` per second for `duration`, each request timed from when it was
/// due; anything but 200 counts as an error.
async fn open_loop(
    port: u16,
    token: &str,
    rate: u32,
    duration: Duration,
    path: impl Fn(usize) -> String,
) -> Run {
    let run = Arc::new(Mutex::new(Run::default()));
    let total = (rate as u64 * duration.as_secs()) as usize;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due).await;
        let (run, token, path) = (run.clone(), token.to_owned(), path(i));
        tasks.push(tokio::spawn(async move {
            let answer = threadspace_client::rest::http_send(port, "GET", &path, Some(&token), None).await;
            let elapsed = due.elapsed().as_secs_f64() * 1000.0;
            let mut run = run.lock().expect("never poisoned");
            match answer {
                Some(response) if response.status == 200 => run.latencies.push(elapsed),
                _ => run.errors += 1,
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Arc::try_unwrap(run).map(|m| m.into_inner().expect("never poisoned")).unwrap_or_default()
}

/// `GET`s `path(i)` from `workers` loops for `duration`, each sending its next request when
/// the last was answered: the throughput the service sustains, and its latency there.
async fn closed_loop(
    port: u16,
    token: &str,
    workers: usize,
    duration: Duration,
    path: impl Fn(usize) -> String + Send + Sync + 'static,
) -> (f64, Run) {
    let path = Arc::new(path);
    let run = Arc::new(Mutex::new(Run::default()));
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (run, token, path) = (run.clone(), token.to_owned(), path.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < end {
                let started = Instant::now();
                let answer =
                    threadspace_client::rest::http_send(port, "GET", &path(i), Some(&token), None).await;
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                let mut run = run.lock().expect("never poisoned");
                match answer {
                    Some(response) if response.status == 200 => run.latencies.push(elapsed),
                    _ => run.errors += 1,
                }
                i += workers;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let run = Arc::try_unwrap(run).map(|m| m.into_inner().expect("never poisoned")).unwrap_or_default();
    (run.latencies.len() as f64 / duration.as_secs_f64(), run)
}

async fn post(stack: &Stack, path: &str, token: &str, body: &Value) -> anyhow::Result<Value> {
    let bytes = serde_json::to_vec(body)?;
    let response = threadspace_client::rest::http_send(
        stack.api.port,
        "POST",
        path,
        Some(token),
        Some(("application/json", &bytes)),
    )
    .await
    .ok_or_else(|| anyhow::anyhow!("POST {path}: no answer"))?;
    anyhow::ensure!(response.status == 201, "POST {path}: {} {}", response.status, response.body);
    Ok(serde_json::from_str(&response.body)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints figures (docs/api.md, \"Measured\")"]
async fn api_figures() -> anyhow::Result<()> {
    let seconds = Duration::from_secs(10);
    let mut options = StackOptions::for_tests(1);
    options.api_args =
        ["--rate-per-ip", "100000", "--rate-per-user", "100000", "--rate-per-bot-credential", "1000"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let stack = Stack::start(options).await?;
    stack.seed(&SeedSpec { orgs: 1, users_per_org: 500, slug_prefix: "bench".into(), seed: 7 }).await?;
    let (alice, org) = stack
        .directory()
        .user_by_handle("bench-1", "alice")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no seeded alice"))?;
    let pg = stack.pool.get().await?;
    // Alice in 200 channels of her own (on top of the seeded ones), each with 10 others.
    pg.execute(
        "WITH c AS (INSERT INTO channels (org_id, kind, name)
                    SELECT $1, 'public', 'bench-' || g FROM generate_series(1, 200) g RETURNING id)
         INSERT INTO channel_members (channel_id, user_id)
         SELECT c.id, u.id FROM c, (SELECT id FROM users WHERE org_id = $1 AND id <> $2 ORDER BY id LIMIT 10) u
         UNION ALL SELECT c.id, $2 FROM c",
        &[&org.0, &alice.0],
    )
    .await?;
    let channels: i64 =
        pg.query_one("SELECT count(*) FROM channel_members WHERE user_id = $1", &[&alice.0]).await?.get(0);
    let terms: Vec<String> = pg
        .query("SELECT DISTINCT substr(display_name, 1, 3) FROM users WHERE org_id = $1", &[&org.0])
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0).to_lowercase())
        .collect();
    let token = stack.token(alice, org);
    let port = stack.api.port;

    // Warm up the pools and caches, then measure.
    open_loop(port, &token, 200, Duration::from_secs(2), |_| "/v1/channels".into()).await;
    let rate: u32 =
        std::env::var("THREADSPACE_BENCH_RATE").ok().and_then(|r| r.parse().ok()).unwrap_or(1_000);
    let search_path = {
        let terms = terms.clone();
        move |i: usize| format!("/v1/users?q={}&limit=20", terms[i % terms.len()].replace(' ', "%20"))
    };
    let (list_capacity, mut list_closed) =
        closed_loop(port, &token, 16, seconds, |_| "/v1/channels".into()).await;
    let list_closed =
        list_closed.figures(&format!("channel list, 16 in flight: {list_capacity:.0}/s"), 0, seconds);
    let mut list = open_loop(port, &token, rate, seconds, |_| "/v1/channels".into()).await;
    let list = list.figures(&format!("channel list ({channels} channels)"), rate, seconds);
    let (search_capacity, mut search_closed) =
        closed_loop(port, &token, 16, seconds, search_path.clone()).await;
    let search_closed =
        search_closed.figures(&format!("people search, 16 in flight: {search_capacity:.0}/s"), 0, seconds);
    let mut search = open_loop(port, &token, rate, seconds, search_path).await;
    let search = search.figures("people search (org of 500)", rate, seconds);

    // REST send → WebSocket delivery: a bot posts at 50/s, Alice receives on a gateway.
    let general = stack
        .directory()
        .channel_by_name(org, "general")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no #general"))?;
    let owner = pg
        .query_one("SELECT id FROM users WHERE org_id = $1 AND role = 'owner' ORDER BY id LIMIT 1", &[&org.0])
        .await?
        .get::<_, i64>(0);
    let owner_token = stack.token(threadspace_protocol::UserId(owner), org);
    let bot = post(
        &stack,
        "/v1/bots",
        &owner_token,
        &json!({"handle": "bench-bot", "display_name": "Bench bot", "channels": [general.0]}),
    )
    .await?;
    let issued = post(
        &stack,
        &format!("/v1/bots/{}/tokens", bot["id"]),
        &owner_token,
        &json!({"name": "bench", "channels": [general.0], "scopes": ["post"]}),
    )
    .await?;
    let bot_token = issued["secret"].as_str().unwrap_or_default().to_owned();
    pg.execute(
        "INSERT INTO channel_members (channel_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&general.0, &alice.0],
    )
    .await?;
    let mut client = Client::connect(&ConnectOptions::new(stack.ws_url(0))).await?;
    client.hello(&token, None, WAIT).await?;
    let due: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let acks = Arc::new(Mutex::new(Run::default()));
    let posts = 50 * 20;
    let receiver = {
        let due = due.clone();
        tokio::spawn(async move {
            let mut run = Run::default();
            while run.latencies.len() < posts {
                match client.recv(Duration::from_secs(10)).await {
                    Ok(Incoming::Frame(ServerFrame::Msg(m))) => {
                        if let Some(at) = due.lock().expect("never poisoned").get(&m.client_msg_id) {
                            run.latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    Ok(Incoming::Frame(_)) => {}
                    _ => break,
                }
            }
            run.errors = posts - run.latencies.len();
            run
        })
    };
    let path = format!("/v1/channels/{general}/messages");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..posts {
        let at = start + Duration::from_millis(20 * i as u64);
        tokio::time::sleep_until(at.into()).await;
        let id = format!("bench-{i}");
        due.lock().expect("never poisoned").insert(id.clone(), at);
        let (acks, token, path) = (acks.clone(), bot_token.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let body = serde_json::to_vec(
                &json!({"client_msg_id": id, "body": format!("alert {i}: disk at 9{i}%")}),
            )
            .expect("serializes");
            let answer = threadspace_client::rest::http_send(
                port,
                "POST",
                &path,
                Some(&token),
                Some(("application/json", &body)),
            )
            .await;
            let mut acks = acks.lock().expect("never poisoned");
            match answer {
                Some(response) if response.status == 201 => {
                    acks.latencies.push(at.elapsed().as_secs_f64() * 1000.0)
                }
                _ => acks.errors += 1,
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut delivered = receiver.await?;
    let sends = Duration::from_secs(20);
    let acked = acks.lock().expect("never poisoned").figures("REST send → 201", 50, sends);
    let delivered = delivered.figures("REST send → WebSocket msg", 50, sends);

    let report = json!({
        "machine": "2 cores, 24 GiB; server and load generator on the same machine",
        "binaries": std::env::var("THREADSPACE_BIN_DIR").unwrap_or_else(|_| "target/debug".into()),
        "channel_list": {"channels": channels, "open_loop": list,
                         "closed_loop_16": {"per_second": list_capacity.round(), "figures": list_closed}},
        "people_search": {"org_people": 500, "open_loop": search,
                          "closed_loop_16": {"per_second": search_capacity.round(), "figures": search_closed}},
        "rest_send_to_ack": acked,
        "rest_send_to_delivery": delivered,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/reports");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("api-bench.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
