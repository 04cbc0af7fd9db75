//! Headless Chromium for the web client's end-to-end tests (docs/web.md): Debian's ChromeDriver
//! started on a free loopback port, one WebDriver session per simulated person (each with its
//! own profile, so its own tokens), driven through `fantoccini`.
//!
//! Pages are the real client served by the real api service of a devstack stack: nothing here
//! stubs the product. Helpers wait for conditions (a selector, a script's answer) rather than
//! sleeping, and every timeout names what it waited for.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Where Debian installs them (`scripts/bootstrap.sh --for-tests`).
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A running ChromeDriver; its process group (ChromeDriver and the browsers it started) is
/// killed on drop.
pub struct Driver {
    child: Child,
    url: String,
    profiles: tempfile::TempDir,
    next_profile: std::sync::atomic::AtomicUsize,
}

impl Driver {
    /// Starts ChromeDriver and waits until it accepts sessions.
    pub async fn start() -> anyhow::Result<Self> {
        anyhow::ensure!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "{CHROMEDRIVER} or {CHROMIUM} is missing: run scripts/bootstrap.sh --for-tests"
        );
        let port = threadspace_devstack::free_port()?;
        let profiles = tempfile::Builder::new().prefix("threadspace-chromium-").tempdir()?;
        let log = std::fs::File::create(profiles.path().join("chromedriver.log"))?;
        let mut command = Command::new("/usr/bin/setpriv");
        // Dies with the test process; its own group, so drop can kill the browsers too.
        command
            .args(["--pdeathsig", "KILL", CHROMEDRIVER, &format!("--port={port}"), "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().context("cannot start chromedriver")?;
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profiles,
            next_profile: Default::default(),
        };
        let status = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(&status).await.is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                bail!("chromedriver did not listen on {status} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(driver)
    }

    /// A new browser window of `width` × `height` CSS pixels with a fresh profile.
    pub async fn page(&self, width: u32, height: u32) -> anyhow::Result<Page> {
        let n = self.next_profile.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = self.profiles.path().join(format!("profile-{n}"));
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-features=Translate,MediaRouter,OptimizationHints".to_owned(),
            "--enable-precise-memory-info".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "unhandledPromptBehavior": "ignore",
        });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!("an object") };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .context("cannot open a Chromium session")?;
        // The window's outer size includes no chrome in headless mode; set the viewport exactly.
        client.set_window_size(width, height).await.ok();
        Ok(Page { client })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        let _ = &self.profiles;
    }
}

/// One browser window.
pub struct Page {
    pub client: Client,
}

/// How long a UI condition may take before the test fails.
pub const UI_TIMEOUT: Duration = Duration::from_secs(20);

impl Page {
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client.goto(url).await.with_context(|| format!("cannot open {url}"))
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.client.execute(script, args).await.with_context(|| format!("script failed: {script}"))
    }

    /// Waits until `script` returns something truthy; returns it.
    pub async fn until(&self, what: &str, script: &str, timeout: Duration) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            let value = self.js(script, Vec::new()).await?;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(value);
            }
            if started.elapsed() > timeout {
                bail!("timed out after {timeout:?} waiting for {what} (last: {value})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for an element matching `css` and returns it.
    pub async fn wait(&self, css: &str) -> anyhow::Result<Element> {
        let started = Instant::now();
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if element.is_displayed().await.unwrap_or(false) {
                    return Ok(element);
                }
            }
            if started.elapsed() > UI_TIMEOUT {
                bail!("timed out after {UI_TIMEOUT:?} waiting for a visible `{css}`");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clears the field `css` and types `text` into it.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let field = self.wait(css).await?;
        field.clear().await.with_context(|| format!("cannot clear `{css}`"))?;
        field.send_keys(text).await.with_context(|| format!("cannot type into `{css}`"))
    }

    /// Sets the value of the field `css` through the DOM (for long texts, which typing key by
    /// key would take minutes for), then fires `input` as typing would.
    pub async fn set_value(&self, css: &str, text: &str) -> anyhow::Result<()> {
        self.wait(css).await?;
        self.js(
            "const el = document.querySelector(arguments[0]); el.value = arguments[1];
             el.dispatchEvent(new Event('input', {bubbles: true}));",
            vec![json!(css), json!(text)],
        )
        .await
        .map(|_| ())
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = self.wait(css).await?;
        element.click().await.with_context(|| format!("cannot click `{css}`"))
    }

    /// The text of the first element matching `css` (empty if none).
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let value = self
            .js(
                "const el = document.querySelector(arguments[0]); return el ? el.textContent : '';",
                vec![json!(css)],
            )
            .await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// Saves a PNG of the viewport under `dir` and returns its path.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let png = self.client.screenshot().await.context("screenshot failed")?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Whether a JavaScript dialog (`alert`, `confirm`, `prompt`) is open: it must never be,
    /// since the client opens none and injected script must not run.
    pub async fn dialog_open(&self) -> bool {
        self.client.get_alert_text().await.is_ok()
    }

    pub async fn close(self) -> anyhow::Result<()> {
        self.client.close().await.context("cannot close the browser session")
    }
}

/// The pinned axe-core (tests/browser/package.json), installed by `scripts/bootstrap.sh
/// --for-tests`.
pub fn axe_source() -> anyhow::Result<String> {
    let path =
        threadspace_devstack::tools::repo_root().join("tests/browser/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}: run scripts/bootstrap.sh --for-tests", path.display()))
}

/// Runs axe-core on the page and returns its violations of impact `serious` or `critical`
/// (rule id, impact, help and the offending elements).
pub async fn serious_accessibility_violations(page: &Page, axe: &str) -> anyhow::Result<Vec<Value>> {
    page.js(&format!("{axe}\n;return true;"), Vec::new()).await.context("cannot load axe-core")?;
    let result = page
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {resultTypes: ['violations']})
                .then(r => done(JSON.stringify(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                    .map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)})))))
                .catch(e => done(JSON.stringify([{id: 'axe-error', help: String(e)}])));",
            Vec::new(),
        )
        .await
        .context("axe.run failed")?;
    let text = result.as_str().context("axe answered no text")?;
    Ok(serde_json::from_str(text)?)
}
