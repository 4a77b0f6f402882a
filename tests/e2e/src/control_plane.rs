//! A whole control plane for end-to-end tests: the state store, the engine with the default
//! plugins (`target/plugins`, built by `./dev build`), and the HTTP API on a loopback port — driven
//! only through the API, as CI and webhooks drive it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_backends::egress::EgressPolicy;
use berth_engine::{Engine, EngineConfig, Plugins};
use berth_runtime::{Runtime, RuntimeOptions};
use berth_state::Store;
use hmac::Mac;
use serde_json::{Value, json};

use crate::{component, testbed};

pub struct ControlPlane {
    pub url: String,
    pub engine: Arc<Engine>,
    pub client: reqwest::Client,
    _data: tempfile::TempDir,
}

/// Where `./dev build` gathers the default plugins.
pub fn default_plugins() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins");
    assert!(
        dir.join("deploy.wasm").exists(),
        "the default plugins are missing from {}: build them with `./dev build` (or run all tests with `./dev test`)",
        dir.display()
    );
    dir
}

impl ControlPlane {
    /// A control plane whose tenants may reach this machine: the test bed's servers, repositories
    /// and storage live on it.
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), EgressPolicy::open()).await
    }

    /// A control plane as in production: tenants reach public addresses only.
    pub async fn start_public_only() -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), EgressPolicy::public_only()).await
    }

    /// Stops serving and starts a new control plane on the same state, as after a restart.
    pub async fn restart(self) -> Self {
        let ControlPlane { engine, _data, .. } = self;
        let egress = engine.egress().clone();
        drop(engine);
        Self::start_in(_data, egress).await
    }

    async fn start_in(data: tempfile::TempDir, egress: EgressPolicy) -> Self {
        let store = Arc::new(Store::open(data.path().join("state.db")).unwrap());
        let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/berth-test-cache");
        let runtime = Arc::new(
            Runtime::new(RuntimeOptions {
                cache_dir: Some(cache),
                ..RuntimeOptions::default()
            })
            .unwrap(),
        );
        let (plugins, failures) =
            Plugins::load(&runtime, &default_plugins(), data.path().join("plugins"))
                .await
                .unwrap();
        assert!(
            failures.is_empty(),
            "default plugins failed to load: {failures:?}"
        );
        let config = EngineConfig {
            data_dir: data.path().to_path_buf(),
            egress,
            runs: berth_engine::queue::DEFAULT_RUN_LIMITS,
        };
        let engine = Engine::new(store, runtime, plugins, config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = berth_api::app(engine.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        ControlPlane {
            url,
            engine,
            client: reqwest::Client::new(),
            _data: data,
        }
    }

    /// A new organization and its token, with the test bed's SSH key installed as its key
    /// `testbed` (as an operator places a key the servers already trust).
    pub fn organization(&self, name: &str) -> (i64, String) {
        let org = self.engine.store.create_organization(name).unwrap();
        let (_, token) = self.engine.store.create_token(org.id, "tests").unwrap();
        let path = self.engine.ssh_key_path(org.id, "testbed").unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::copy(testbed().key, &path).unwrap();
        (org.id, token)
    }

    /// A token of the operator (the platform team), never an organization's.
    pub fn operator_token(&self) -> String {
        self.engine.store.create_operator_token("tests").unwrap()
    }

    /// Sends a request; returns the status and the JSON answer.
    pub async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> Value {
        let (status, answer) = self
            .call(token, reqwest::Method::POST, path, Some(body))
            .await;
        assert!(
            (200..300).contains(&status),
            "POST {path}: {status} {answer}"
        );
        answer
    }

    pub async fn get(&self, token: &str, path: &str) -> Value {
        let (status, answer) = self.call(token, reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {answer}");
        answer
    }

    /// Waits for run `id` to end (bounded) and returns it with its steps.
    pub async fn finished(&self, token: &str, id: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let run = self.get(token, &format!("/v1/runs/{id}")).await;
            let status = run["status"].as_str().unwrap_or("");
            if !matches!(status, "queued" | "running") {
                return run;
            }
            assert!(Instant::now() < deadline, "run {id} did not end: {run}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The run's events as the SSE endpoint streams them, until the stream ends.
    pub async fn sse_events(&self, token: &str, id: i64) -> Vec<Value> {
        use futures_util::StreamExt;
        let response = self
            .client
            .get(format!("{}/v1/runs/{id}/events", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "SSE content type"
        );
        let mut stream = response.bytes_stream();
        let mut text = String::new();
        let read = async {
            while let Some(chunk) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            }
        };
        tokio::time::timeout(Duration::from_secs(600), read)
            .await
            .expect("the event stream ends with the run");
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d.trim()).unwrap())
            .collect()
    }

    /// Sends a GitHub push of `commit` on `branch` to environment `env`, signed with `secret`.
    pub async fn github_push(
        &self,
        env: i64,
        secret: &str,
        branch: &str,
        commit: &str,
    ) -> (u16, Value) {
        let body = json!({ "ref": format!("refs/heads/{branch}"), "after": commit });
        self.github_send(env, secret, &body).await
    }

    /// Sends `body` as a GitHub push event to environment `env`, signed with `secret`, as a new
    /// delivery (GitHub gives each its own `X-GitHub-Delivery`).
    pub async fn github_send(&self, env: i64, secret: &str, body: &Value) -> (u16, Value) {
        static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let delivery = format!("{}-{n}", unique("delivery"));
        self.github_deliver(env, secret, &body.to_string(), &delivery)
            .await
    }

    /// Sends `body` as GitHub delivery `delivery` of a push event to environment `env`.
    pub async fn github_deliver(
        &self,
        env: i64,
        secret: &str,
        body: &str,
        delivery: &str,
    ) -> (u16, Value) {
        let body = body.to_string();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let response = self
            .client
            .post(format!("{}/hooks/github/{env}", self.url))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// Runs git in `repo` with a fixed identity; panics with git's message on failure.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-C",
            repo.to_str().unwrap(),
            "-c",
            "user.name=Berth",
            "-c",
            "user.email=berth@example.invalid",
        ])
        .args(args)
        .output()
        .expect("git runs (install git)");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Creates a repository at `dir` on branch `main` with `files` (path, content) committed;
/// returns its `file://` URL.
pub fn repository(dir: &Path, files: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    commit(dir, files, "initial");
    format!("file://{}", dir.display())
}

/// Writes `files` and commits them; returns the new commit id.
pub fn commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// An organization `acme` with a server (test server 1), a project `shop`, repositories at the
/// three levels, and the customer hook plugin `gate` uploaded.
pub struct Fixture {
    pub cp: ControlPlane,
    /// The organization `acme`, and its token.
    pub org: i64,
    pub token: String,
    pub project: i64,
    pub server: i64,
    pub project_repo: std::path::PathBuf,
    _repos: tempfile::TempDir,
}

pub async fn fixture() -> Fixture {
    let bed = testbed();
    let cp = ControlPlane::start().await;
    let (org, token) = cp.organization("acme");
    let server = &bed.servers[0];
    let server = cp
        .post(
            &token,
            "/v1/servers",
            json!({ "name": "server-1", "host": server.host, "port": server.port,
                    "ssh_key": "testbed" }),
        )
        .await;
    let project = cp
        .post(&token, "/v1/projects", json!({ "name": "shop" }))
        .await;
    let repos = tempfile::tempdir().unwrap();
    let manifest = "{'name': 'M', 'version': '1.0', 'depends': ['base']}\n";
    let platform = repository(
        &repos.path().join("platform"),
        &[("web_theme/__manifest__.py", manifest)],
    );
    let organization = repository(
        &repos.path().join("org"),
        &[("addons/acme_base/__manifest__.py", manifest)],
    );
    let project_repo = repos.path().join("shop");
    let primary = repository(
        &project_repo,
        &[
            ("addons/shop_sale/__manifest__.py", manifest),
            ("addons/shop_sale/models.py", "# v1\n"),
            ("apt.txt", "# system packages\nberth-standin-tool\n"),
            ("requirements.txt", "berth-standin-dep\n"),
        ],
    );
    cp.engine
        .store
        .add_repository(berth_state::NewRepository {
            level: berth_state::RepositoryLevel::Platform,
            organization_id: None,
            project_id: None,
            name: "platform-addons".into(),
            url: platform,
            branch: None,
        })
        .unwrap();
    cp.post(
        &token,
        "/v1/repositories",
        json!({ "level": "organization", "name": "acme-addons", "url": organization }),
    )
    .await;
    cp.post(
        &token,
        "/v1/repositories",
        json!({ "level": "project", "project_id": project["id"], "name": "shop", "url": primary }),
    )
    .await;
    let gate = std::fs::read(component("gate")).unwrap();
    let uploaded = cp
        .client
        .post(format!("{}/v1/plugins", cp.url))
        .bearer_auth(&token)
        .body(gate)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201, "{:?}", uploaded.text().await);
    Fixture {
        org,
        project: project["id"].as_i64().unwrap(),
        server: server["id"].as_i64().unwrap(),
        cp,
        token,
        project_repo,
        _repos: repos,
    }
}

impl Fixture {
    pub async fn environment(&self, name: &str, server: i64) -> Value {
        let bed = testbed();
        self.cp
            .post(
                &self.token,
                &format!("/v1/projects/{}/environments", self.project),
                json!({
                    "name": name, "server_id": server, "odoo_version": "17.0", "branch": "main",
                    "stage": "staging", "dev_mode": true, "workers": 1, "memory_mb": 1024,
                    "odoo_image": bed.odoo_image, "postgres_image": bed.postgres_image,
                }),
            )
            .await
    }

    pub async fn deploy(&self, env: i64) -> Value {
        let (status, run) = self
            .cp
            .call(
                &self.token,
                reqwest::Method::POST,
                &format!("/v1/environments/{env}/deploy"),
                None,
            )
            .await;
        assert_eq!(status, 202, "{run}");
        run
    }

    pub async fn run_count(&self, env: i64) -> usize {
        let runs = self
            .cp
            .get(&self.token, &format!("/v1/environments/{env}/runs"))
            .await;
        runs.as_array().unwrap().len()
    }
}

pub fn steps(run: &Value) -> Vec<(String, String)> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {run}"))
}

pub fn report_timing(label: &str, run: &Value) {
    let total: i64 = run["finished_at"].as_i64().unwrap() - run["started_at"].as_i64().unwrap();
    let host: i64 = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["host_ms"].as_i64())
        .sum();
    eprintln!(
        "{label}: {total} ms wall, {host} ms inside host primitives (SSH, Docker, PostgreSQL, git)"
    );
    for s in run["steps"].as_array().unwrap() {
        if let (Some(a), Some(b)) = (s["started_at"].as_i64(), s["finished_at"].as_i64()) {
            eprintln!(
                "  {:<22} {:>6} ms (host {:>6} ms) {}",
                s["name"].as_str().unwrap(),
                b - a,
                s["host_ms"].as_i64().unwrap_or(0),
                s["status"].as_str().unwrap()
            );
        }
    }
}

/// A name no earlier test run used.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{:x}", nanos % 0xffffff)
}
