//! The control plane against an attacker who holds one organization's token, or none: each test
//! is named after an attack that once worked, and shows it refused.

use berth_e2e::control_plane::{commit, fixture, unique};
use serde_json::json;

/// The same signed GitHub delivery, sent again, once started another run each time.
#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_webhook_delivery_starts_nothing() {
    let f = fixture().await;
    let env = f.environment(&unique("replay"), f.server).await;
    let id = env["id"].as_i64().unwrap();
    let secret = env["webhook_secret"].as_str().unwrap();
    let head = commit(&f.project_repo, &[("addons/x.py", "# x\n")], "x");
    let body = json!({ "ref": "refs/heads/main", "after": head }).to_string();
    let (status, first) = f.cp.github_deliver(id, secret, &body, "delivery-1").await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["operation"], "auto-deploy", "{first}");
    for _ in 0..3 {
        let (status, again) = f.cp.github_deliver(id, secret, &body, "delivery-1").await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["duplicate"], "delivery-1", "{again}");
    }
    f.cp.finished(&f.token, first["id"].as_i64().unwrap()).await;
    assert_eq!(f.run_count(id).await, 1, "one delivery, one run");
}

/// An existing environment answered "missing X-Hub-Signature-256" where a missing one answered
/// "invalid signature": the difference told which environment ids exist.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_do_not_tell_which_environments_exist() {
    let f = fixture().await;
    let env = f.environment(&unique("probe"), f.server).await;
    let id = env["id"].as_i64().unwrap();
    let answer = async |env: i64, kind: &str| {
        let response =
            f.cp.client
                .post(format!("{}/hooks/{kind}/{env}", f.cp.url))
                .header("X-GitHub-Event", "push")
                .header("X-Gitlab-Event", "Push Hook")
                .body("{}")
                .send()
                .await
                .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    for kind in ["github", "gitlab"] {
        let existing = answer(id, kind).await;
        let missing = answer(id + 100_000, kind).await;
        assert_eq!(existing.0, 401, "{kind}: {existing:?}");
        assert_eq!(existing, missing, "{kind}");
    }
}

/// Bodies over 2 MiB were refused with 413; GitHub sends deliveries of up to 25 MB.
#[tokio::test(flavor = "multi_thread")]
async fn large_webhook_deliveries_are_read() {
    let f = fixture().await;
    let env = f.environment(&unique("large"), f.server).await;
    let id = env["id"].as_i64().unwrap();
    let secret = env["webhook_secret"].as_str().unwrap();
    // A push to a branch the environment does not track: read, verified, acknowledged, ignored.
    let padding = "x".repeat(8 << 20);
    let body = json!({ "ref": "refs/heads/other", "after": "a".repeat(40), "padding": padding });
    let (status, answer) = f.cp.github_send(id, secret, &body).await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        answer["ignored"]
            .as_str()
            .unwrap_or("")
            .contains("tracks main"),
        "{answer}"
    );
}

/// Repository URLs passed the loopback check as `127.1`, `2130706433`, `[::ffff:127.0.0.1]`,
/// `localhost.`, `0`, `[fe80::1]`, `100.64.0.1`, and `file://` paths read the control plane's disk.
#[tokio::test(flavor = "multi_thread")]
async fn repository_urls_that_point_at_the_control_plane_are_refused() {
    let cp = berth_e2e::control_plane::ControlPlane::start_public_only().await;
    let (_, token) = cp.organization(&unique("egress"));
    for url in [
        "https://127.1/acme/shop.git",
        "https://2130706433/acme/shop.git",
        "https://[::ffff:127.0.0.1]/acme/shop.git",
        "https://localhost./acme/shop.git",
        "https://0/acme/shop.git",
        "ssh://git@[fe80::1]/acme/shop.git",
        "https://100.64.0.1/acme/shop.git",
        "https://169.254.169.254/latest/meta-data",
        "git@0x7f.1:acme/shop.git",
        "file:///etc",
        "/srv/berth-data/mirrors",
    ] {
        let (status, answer) = cp
            .call(
                &token,
                reqwest::Method::POST,
                "/v1/repositories",
                Some(json!({ "level": "organization", "name": "shop", "url": url })),
            )
            .await;
        assert_eq!(status, 422, "{url}: {answer}");
    }
}

/// A server could be `127.0.0.1:<any port>` (and the run's error told open from closed ports); a
/// storage target's endpoint any address (a hook read an internal service's answer).
#[tokio::test(flavor = "multi_thread")]
async fn servers_and_storage_endpoints_on_the_control_planes_network_are_refused() {
    let cp = berth_e2e::control_plane::ControlPlane::start_public_only().await;
    let (_, token) = cp.organization(&unique("egress"));
    for host in [
        "127.0.0.1",
        "127.1",
        "localhost",
        "10.0.0.1",
        "[::1]",
        "169.254.169.254",
    ] {
        let (status, answer) = cp
            .call(
                &token,
                reqwest::Method::POST,
                "/v1/servers",
                Some(json!({ "name": "s", "host": host, "port": 22, "ssh_key": "testbed" })),
            )
            .await;
        assert_eq!(status, 422, "{host}: {answer}");
    }
    for (backend, key, value) in [
        ("s3", "endpoint", "http://127.0.0.1:9000"),
        ("s3", "endpoint", "http://[::ffff:169.254.169.254]/"),
        ("ftp", "host", "0"),
        ("sftp", "host", "192.168.0.10"),
    ] {
        let (status, answer) = cp
            .call(
                &token,
                reqwest::Method::POST,
                "/v1/storage-targets",
                Some(
                    json!({ "name": "t", "backend": backend, "settings": { key: value },
                             "user": "u", "secret": "s" }),
                ),
            )
            .await;
        assert_eq!(status, 422, "{backend} {value}: {answer}");
    }
}

/// `POST /v1/grants` with an organization's token granted `git`, `targets`, `ssh.shell`,
/// `database`, `secret:*` to its own uploaded plugin; no one else was asked.
#[tokio::test(flavor = "multi_thread")]
async fn an_organization_cannot_grant_its_plugin_what_the_operator_did_not_allow() {
    let f = fixture().await;
    let grant = async |capability: &str| {
        f.cp.call(
            &f.token,
            reqwest::Method::POST,
            "/v1/grants",
            Some(json!({ "plugin": "gate", "capability": capability })),
        )
        .await
    };
    for capability in [
        "ssh.shell",
        "ssh.exec",
        "git",
        "targets",
        "database",
        "docker",
    ] {
        let (status, answer) = grant(capability).await;
        assert_eq!(status, 403, "{capability}: {answer}");
    }
    let (status, answer) = grant("files").await;
    assert_eq!(status, 201, "{answer}");
    // The operator raises the ceiling; an organization's token cannot.
    let org =
        f.cp.engine
            .store
            .token_organization(&f.token)
            .unwrap()
            .unwrap();
    let ceiling = format!("/v1/operator/organizations/{org}/grant-ceiling");
    let body = json!({ "capabilities": ["files", "docker"] });
    let (status, _) =
        f.cp.call(&f.token, reqwest::Method::PUT, &ceiling, Some(body.clone()))
            .await;
    assert_eq!(status, 403);
    let operator = f.cp.operator_token();
    let (status, answer) =
        f.cp.call(&operator, reqwest::Method::PUT, &ceiling, Some(body))
            .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = grant("docker").await;
    assert_eq!(status, 201, "{answer}");
}

/// `PUT …/protected {"protected": false}` with the organization's own token removed the
/// type-to-confirm protection of production.
#[tokio::test(flavor = "multi_thread")]
async fn an_organization_cannot_lift_protection() {
    let f = fixture().await;
    let env = f.environment(&unique("prot"), f.server).await;
    let id = env["id"].as_i64().unwrap();
    let protect = async |token: &str, path: String, protected: bool| {
        f.cp.call(
            token,
            reqwest::Method::PUT,
            &path,
            Some(json!({ "protected": protected })),
        )
        .await
    };
    let own = format!("/v1/environments/{id}/protected");
    let (status, answer) = protect(&f.token, own.clone(), true).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = protect(&f.token, own, false).await;
    assert_eq!(status, 403, "{answer}");
    let operators = format!("/v1/operator/environments/{id}/protected");
    let (status, _) = protect(&f.token, operators.clone(), false).await;
    assert_eq!(
        status, 403,
        "an organization's token never reaches an operator route"
    );
    let (status, answer) = protect(&f.cp.operator_token(), operators, false).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["protected"], false, "{answer}");
}

/// Tokens never expired and could not be revoked: a leaked token opened the organization for
/// ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_or_expired_token_opens_nothing() {
    let cp = berth_e2e::control_plane::ControlPlane::start().await;
    let (org, token) = cp.organization(&unique("tokens"));
    let made = cp
        .post(
            &token,
            "/v1/tokens",
            json!({ "label": "ci", "expires_in_days": 30 }),
        )
        .await;
    let ci = made["token"].as_str().unwrap().to_string();
    assert!(made["info"]["expires_at"].as_i64().is_some(), "{made}");
    let (status, _) = cp
        .call(&ci, reqwest::Method::GET, "/v1/projects", None)
        .await;
    assert_eq!(status, 200);
    let id = made["info"]["id"].as_i64().unwrap();
    let (status, _) = cp
        .call(
            &token,
            reqwest::Method::DELETE,
            &format!("/v1/tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = cp
        .call(&ci, reqwest::Method::GET, "/v1/projects", None)
        .await;
    assert_eq!(status, 401, "a revoked token opens nothing");
    // A token whose end has passed.
    let (_, expired) = cp
        .engine
        .store
        .create_token_until(org, "old", Some(berth_state::now_ms() - 1))
        .unwrap();
    let (status, _) = cp
        .call(&expired, reqwest::Method::GET, "/v1/projects", None)
        .await;
    assert_eq!(status, 401, "an expired token opens nothing");
    // Another organization's token is not this one's to revoke.
    let (_, other) = cp.organization(&unique("others"));
    let (status, _) = cp
        .call(
            &other,
            reqwest::Method::DELETE,
            &format!("/v1/tokens/{}", made["info"]["id"]),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

/// SSE connections were unbounded: one organization could hold the control plane's connections.
/// Each holds at most 32 live event streams (the API answers 429 beyond), and a closed stream
/// gives its slot back.
#[tokio::test(flavor = "multi_thread")]
async fn one_organization_cannot_hold_every_event_stream() {
    let cp = berth_e2e::control_plane::ControlPlane::start().await;
    let (org, _) = cp.organization(&unique("streams"));
    let (other, _) = cp.organization(&unique("streams"));
    let max = berth_engine::MAX_STREAMS_PER_ORGANIZATION;
    let mut held: Vec<_> = (0..max)
        .map(|_| cp.engine.open_stream(org).unwrap())
        .collect();
    assert!(cp.engine.open_stream(org).is_err());
    assert!(
        cp.engine.open_stream(other).is_ok(),
        "another organization is not affected"
    );
    held.pop();
    assert!(cp.engine.open_stream(org).is_ok());
}
