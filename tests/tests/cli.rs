//! The local-stack command as a new user runs it: `up` prints endpoints and a working demo,
//! its token lets a plain client connect and exchange a message, `down` stops everything.

use std::process::Command;
use std::time::Duration;

use threadspace_client::{Client, ConnectOptions};
use threadspace_devstack::process::alive;
use threadspace_devstack::stack::read_state;
use threadspace_devstack::tools;
use threadspace_tests::{recv_messages, send_and_ack, WAIT};

/// Stops the stack even if the test fails half-way.
struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = dev(&self.0, &["down"]);
    }
}

fn dev(dir: &std::path::Path, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new(tools::threadspace_bindir().join("threadspace-dev"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_prints_a_working_stack_and_down_stops_it() -> anyhow::Result<()> {
    let temp = tempfile::Builder::new().prefix("threadspace-cli-").tempdir()?;
    let dir = temp.path().join("local");
    let _down = Down(dir.clone());
    let up = dev(
        &dir,
        &[
            "up",
            "--nats-port",
            "0",
            "--postgres-port",
            "0",
            "--gateway-port",
            "0",
            "--api-port",
            "0",
            "--gateways",
            "2",
        ],
    )?;
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(up.status.success(), "up failed:\n{stdout}\n{}", String::from_utf8_lossy(&up.stderr));
    // The demo signs a company up and logs its two people in over HTTP before they talk.
    assert!(stdout.contains("Demo: `acme` signed up"), "{stdout}");
    assert!(stdout.contains("logged in over HTTP"), "{stdout}");
    assert!(stdout.contains("Demo: ada on"), "{stdout}");
    assert!(stdout.contains("./threadspace chat --user alice"), "{stdout}");
    let gateway_urls: Vec<&str> = stdout.split_whitespace().filter(|w| w.starts_with("ws://")).collect();
    assert!(gateway_urls.len() >= 2, "{stdout}");

    // A second `up` notices the running stack instead of starting another.
    let again = dev(&dir, &["up"])?;
    assert!(String::from_utf8_lossy(&again.stdout).contains("already running"));

    // Follow the printed instructions with a plain client.
    let token = |user: &str| -> anyhow::Result<String> {
        let out = dev(&dir, &["token", "--user", user])?;
        anyhow::ensure!(out.status.success(), "token failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    let mut carol = Client::connect(&ConnectOptions::new(gateway_urls[0])).await?;
    let welcome = carol.hello(&token("carol")?, None, WAIT).await?;
    let general =
        welcome.channels.iter().find(|c| c.name.as_deref() == Some("general")).expect("general listed").id;
    let mut dave = Client::connect(&ConnectOptions::new(gateway_urls[1])).await?;
    dave.hello(&token("dave")?, None, WAIT).await?;
    let (seq, _, _) = send_and_ack(&mut carol, general, "cli-1", "hi dave").await?;
    assert_eq!(recv_messages(&mut dave, 1).await?[0].seq, seq);

    // Unknown users get a clear error, not a token.
    let bad = dev(&dir, &["token", "--user", "nobody"])?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no user `nobody`"));

    // The REST API the output points at answers, and serves its OpenAPI document.
    let state = read_state(&dir).expect("state recorded");
    let api = state.api.as_ref().expect("the stack runs the api service");
    assert!(stdout.contains(&format!("{}/v1/openapi.json", api.url)), "{stdout}");
    let (status, document) =
        threadspace_client::rest::http_get(api.port, "/v1/openapi.json").await.expect("the api answers");
    assert_eq!(status, 200);
    assert!(document.contains("/v1/search"), "{document}");

    let down = dev(&dir, &["down"])?;
    assert!(down.status.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    for pid in state.gateways.iter().map(|g| g.pid).chain([api.pid, state.nats.pid, state.postgres.pid]) {
        assert!(!alive(pid), "pid {pid} still running after down");
    }
    Ok(())
}

#[test]
fn up_refuses_an_api_port_among_the_gateways_ports() -> anyhow::Result<()> {
    let temp = tempfile::Builder::new().prefix("threadspace-cli-").tempdir()?;
    let dir = temp.path().join("local");
    let up = dev(&dir, &["up", "--gateways", "11", "--gateway-port", "18080", "--api-port", "18090"])?;
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(!up.status.success(), "up started a stack whose 11th gateway has the api's port");
    assert!(stderr.contains("--api-port 18090") && stderr.contains("18080–18090"), "{stderr}");
    assert!(read_state(&dir).is_none(), "nothing was started");
    Ok(())
}

/// Runs one of the workspace's binaries to its end (killed after 20 s): exit code and stderr.
fn run_binary(binary: &str, args: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
    let mut child = Command::new(tools::threadspace_bindir().join(binary))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            child.kill()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output()?;
    Ok((output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned()))
}

#[test]
fn configuration_errors_exit_64_and_name_the_flag() -> anyhow::Result<()> {
    let temp = tempfile::Builder::new().prefix("threadspace-config-").tempdir()?;
    let keys = threadspace_devstack::keys::Keys::load_or_create(temp.path())?;
    let jwks = keys.jwks.to_str().expect("temporary paths are UTF-8");
    let pg = "postgres://127.0.0.1:1/threadspace";
    let nats = "nats://127.0.0.1:1";
    let cases: &[(&str, Vec<&str>, &str)] = &[
        (
            "threadspace-gateway",
            vec!["--nats-url", nats, "--postgres-url", pg, "--jwks", "/nonexistent/jwks.json"],
            "--jwks",
        ),
        (
            "threadspace-gateway",
            vec!["--nats-url", nats, "--postgres-url", "postgres://127.0.0.1:notaport/x", "--jwks", jwks],
            "--postgres-url",
        ),
        (
            "threadspace-gateway",
            vec!["--nats-url", "nats://[::1", "--postgres-url", pg, "--jwks", jwks],
            "--nats-url",
        ),
        (
            "threadspace-bridge",
            vec!["--nats-url", nats, "--postgres-url", "postgres://127.0.0.1:notaport/x"],
            "--postgres-url",
        ),
        ("threadspace-bridge", vec!["--nats-url", "nats://[::1", "--postgres-url", pg], "--nats-url"),
        (
            "threadspace-api",
            vec!["--nats-url", nats, "--postgres-url", pg, "--jwks", "/nonexistent/jwks.json"],
            "--jwks",
        ),
        (
            "threadspace-api",
            vec!["--nats-url", nats, "--postgres-url", "postgres://127.0.0.1:notaport/x", "--jwks", jwks],
            "--postgres-url",
        ),
        (
            "threadspace-api",
            vec!["--nats-url", "nats://[::1", "--postgres-url", pg, "--jwks", jwks],
            "--nats-url",
        ),
        (
            "threadspace-api",
            vec!["--postgres-url", pg, "--jwks", jwks, "--history-pool", "0"],
            "--history-pool",
        ),
    ];
    for (binary, args, flag) in cases {
        let (code, stderr) = run_binary(binary, args)?;
        assert_eq!(code, Some(64), "{binary} {args:?}: a configuration error exits 64; stderr:\n{stderr}");
        assert!(stderr.contains(flag), "{binary} {args:?}: the error names {flag}; stderr:\n{stderr}");
    }
    Ok(())
}
