//! A whole control plane for end-to-end tests: the state store, the engine with the default
//! plugins (`target/plugins`, built by `./dev build`), and the HTTP API on a loopback port — driven
//! only through the API, as CI and webhooks drive it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_engine::{Engine, EngineConfig, Plugins};
use berth_runtime::{Runtime, RuntimeOptions};
use berth_state::Store;
use hmac::Mac;
use serde_json::{Value, json};

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
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap()).await
    }

    /// Stops serving and starts a new control plane on the same state, as after a restart.
    pub async fn restart(self) -> Self {
        let ControlPlane { engine, _data, .. } = self;
        drop(engine);
        Self::start_in(_data).await
    }

    async fn start_in(data: tempfile::TempDir) -> Self {
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

    /// A new organization and its token.
    pub fn organization(&self, name: &str) -> (i64, String) {
        let org = self.engine.store.create_organization(name).unwrap();
        let (_, token) = self.engine.store.create_token(org.id, "tests").unwrap();
        (org.id, token)
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
        let body = json!({ "ref": format!("refs/heads/{branch}"), "after": commit }).to_string();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let response = self
            .client
            .post(format!("{}/hooks/github/{env}", self.url))
            .header("X-GitHub-Event", "push")
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
