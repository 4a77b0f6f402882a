//! The control plane against an attacker who holds one organization's token, or none: each test
//! is named after an attack that once worked, and shows it refused.

use std::time::{Duration, Instant};

use berth_backends::ssh::host_key_fingerprint;
use berth_e2e::control_plane::{ControlPlane, commit, fixture, step, unique};
use berth_e2e::testbed;
use reqwest::Method;
use serde_json::{Value, json};

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
/// `database`, `secret:*` to its own uploaded plugin; no one else was asked. Beyond its ceiling a
/// grant is now a request: pending until the operator approves (which makes the grant) or denies
/// it, and never decided with an organization's token.
#[tokio::test(flavor = "multi_thread")]
async fn an_organization_cannot_grant_its_plugin_what_the_operator_did_not_allow() {
    let f = fixture().await;
    let grant = async |body: Value| {
        f.cp.call(&f.token, Method::POST, "/v1/grants", Some(body))
            .await
    };
    let operator = f.cp.operator_token();
    let mut requested = Vec::new();
    for (capability, server) in [
        ("ssh.shell", Some(f.server)),
        ("ssh.exec", Some(f.server)),
        ("git", None),
        ("targets", None),
        ("database", None),
        ("docker", None),
    ] {
        let body = json!({ "plugin": "gate", "capability": capability, "server_id": server });
        let (status, request) = grant(body.clone()).await;
        assert_eq!(status, 202, "{capability}: {request}");
        assert_eq!(request["status"], "pending", "{request}");
        assert_eq!(request["capability"], capability, "{request}");
        // Asking again is the same request, still pending.
        let (status, again) = grant(body).await;
        assert_eq!((status, &again["id"]), (202, &request["id"]), "{again}");
        requested.push(request["id"].as_i64().unwrap());
    }
    let (status, answer) = grant(json!({ "plugin": "gate", "capability": "files" })).await;
    assert_eq!(status, 201, "within the ceiling: {answer}");
    let docker = requested[5];
    let git = requested[2];

    // The organization sees its requests; nothing was granted by asking.
    let own = f.cp.get(&f.token, "/v1/grant-requests").await;
    assert_eq!(own.as_array().unwrap().len(), requested.len(), "{own}");
    let org = f.org;
    let granted = |capability: &str| {
        f.cp.engine
            .store
            .grant_requests(Some(org), None)
            .unwrap()
            .iter()
            .filter_map(|r| r.grant_id)
            .any(|id| f.cp.engine.store.grant(id).unwrap().capability == capability)
    };
    assert!(!granted("docker"));

    // An organization's token never decides, nor reads the operator's list.
    for path in [
        format!("/v1/operator/grant-requests/{docker}/approve"),
        format!("/v1/operator/grant-requests/{docker}/deny"),
    ] {
        let (status, answer) = f.cp.call(&f.token, Method::POST, &path, None).await;
        assert_eq!(status, 403, "{path}: {answer}");
    }
    let (status, _) =
        f.cp.call(&f.token, Method::GET, "/v1/operator/grant-requests", None)
            .await;
    assert_eq!(status, 403);

    // The operator lists what waits, approves one (the grant is made) and denies another.
    let pending =
        f.cp.get(&operator, "/v1/operator/grant-requests?status=pending")
            .await;
    let waiting: Vec<i64> = pending
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    assert!(requested.iter().all(|id| waiting.contains(id)), "{pending}");
    let approved =
        f.cp.post(
            &operator,
            &format!("/v1/operator/grant-requests/{docker}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(approved["request"]["status"], "approved", "{approved}");
    assert_eq!(approved["grant"]["capability"], "docker", "{approved}");
    assert_eq!(approved["grant"]["organization_id"], org, "{approved}");
    assert!(granted("docker"));
    let denied =
        f.cp.post(
            &operator,
            &format!("/v1/operator/grant-requests/{git}/deny"),
            json!({ "reason": "git is the lifecycle's" }),
        )
        .await;
    assert_eq!(denied["status"], "denied", "{denied}");
    assert_eq!(denied["reason"], "git is the lifecycle's", "{denied}");
    assert!(!granted("git"));
    // A decision is final.
    for (id, verb) in [(docker, "deny"), (git, "approve")] {
        let path = format!("/v1/operator/grant-requests/{id}/{verb}");
        let (status, answer) = f.cp.call(&operator, Method::POST, &path, None).await;
        assert_eq!(status, 409, "{path}: {answer}");
    }
    let own = f.cp.get(&f.token, "/v1/grant-requests").await;
    let status_of = |id: i64| {
        own.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["status"].clone())
    };
    assert_eq!(status_of(docker), Some(json!("approved")), "{own}");
    assert_eq!(status_of(git), Some(json!("denied")), "{own}");

    // The operator raises the ceiling; an organization's token cannot.
    let ceiling = format!("/v1/operator/organizations/{org}/grant-ceiling");
    let body = json!({ "capabilities": ["files", "database"] });
    let (status, _) =
        f.cp.call(&f.token, Method::PUT, &ceiling, Some(body.clone()))
            .await;
    assert_eq!(status, 403);
    let (status, answer) =
        f.cp.call(&operator, Method::PUT, &ceiling, Some(body))
            .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = grant(json!({ "plugin": "gate", "capability": "database" })).await;
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

/// Deploys environment `env` until its `connect-server` step has ended, then cancels the run and
/// returns it once it ended: what a server's host key decides is settled by then.
async fn deploy_until_connected(cp: &ControlPlane, token: &str, env: i64) -> Value {
    let deploy = format!("/v1/environments/{env}/deploy");
    let (status, run) = cp.call(token, Method::POST, &deploy, None).await;
    assert_eq!(status, 202, "{run}");
    let id = run["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = cp.get(token, &format!("/v1/runs/{id}")).await;
        let connect = run["steps"]
            .as_array()
            .and_then(|steps| steps.iter().find(|s| s["name"] == "connect-server"))
            .map(|s| s["status"].as_str().unwrap_or("").to_string());
        let ended = !matches!(run["status"].as_str(), Some("queued" | "running"));
        if ended || connect.is_some_and(|s| s != "pending" && s != "running") {
            break;
        }
        assert!(Instant::now() < deadline, "run {id} never connected: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cp.call(token, Method::POST, &format!("/v1/runs/{id}/cancel"), None)
        .await;
    cp.finished(token, id).await
}

/// A server's `host_key` pin was stored but never used: one trust-on-first-use file pinned every
/// tenant's servers by address. Each server record now pins its own key (the first connection's,
/// unless given), every connection is checked against that record's pin, and a changed key fails
/// the run at connect with both fingerprints.
#[tokio::test(flavor = "multi_thread")]
async fn a_servers_host_key_is_pinned_on_its_own_record_and_checked_at_every_run() {
    let f = fixture().await;
    let bed = testbed();
    let (first, second) = (&bed.servers[0], &bed.servers[1]);
    let server = format!("/v1/servers/{}", f.server);
    let env = f.environment(&unique("pin"), f.server).await;
    let env = env["id"].as_i64().unwrap();

    // The first connection pins the key the server offered on its record.
    let run = deploy_until_connected(&f.cp, &f.token, env).await;
    assert_eq!(step(&run, "connect-server")["status"], "done", "{run}");
    let pinned = f.cp.get(&f.token, &server).await["host_key"]
        .as_str()
        .expect("the first connection pinned a key")
        .to_string();
    let offered = host_key_fingerprint(&pinned).unwrap();

    // Another organization's record at the same address inherits nothing.
    let (_, theirs) = f.cp.organization(&unique("globex"));
    let their_server =
        f.cp.post(
            &theirs,
            "/v1/servers",
            json!({ "name": "server-1", "host": first.host, "port": first.port,
                    "ssh_key": "testbed" }),
        )
        .await;
    assert_eq!(their_server["host_key"], Value::Null, "{their_server}");

    // The pin on the record changes (as for a server swapped under its address): the next run
    // fails at connect, naming both keys; the connection the first run opened is not reused.
    let wrong = second.host_key();
    let pin = |key: Value| json!({ "host_key": key });
    let host_key = format!("{server}/host-key");
    let (status, answer) =
        f.cp.call(&f.token, Method::PUT, &host_key, Some(pin(json!(wrong))))
            .await;
    assert_eq!(status, 200, "{answer}");
    let run = deploy_until_connected(&f.cp, &f.token, env).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(step(&run, "connect-server")["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    let said_pinned = host_key_fingerprint(&wrong).unwrap();
    assert!(
        error.contains("host key") && error.contains(&said_pinned) && error.contains(&offered),
        "the error names the pinned ({said_pinned}) and offered ({offered}) keys: {error}"
    );

    // The other organization's record, at the same address, is not affected by that pin.
    let their_project =
        f.cp.post(&theirs, "/v1/projects", json!({ "name": "shop" }))
            .await;
    let their_env =
        f.cp.post(
            &theirs,
            &format!("/v1/projects/{}/environments", their_project["id"]),
            json!({ "name": "staging", "server_id": their_server["id"], "odoo_version": "17.0",
                    "stage": "staging", "odoo_image": bed.odoo_image,
                    "postgres_image": bed.postgres_image }),
        )
        .await;
    let run = deploy_until_connected(&f.cp, &theirs, their_env["id"].as_i64().unwrap()).await;
    assert_eq!(step(&run, "connect-server")["status"], "done", "{run}");
    let theirs_pinned =
        f.cp.get(&theirs, &format!("/v1/servers/{}", their_server["id"]))
            .await;
    assert_eq!(theirs_pinned["host_key"], json!(pinned));

    // A pin that is not a key is refused; another organization cannot replace this one.
    let (status, _) =
        f.cp.call(
            &f.token,
            Method::PUT,
            &host_key,
            Some(pin(json!("AAAA nonsense"))),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) =
        f.cp.call(&theirs, Method::PUT, &host_key, Some(pin(Value::Null)))
            .await;
    assert_eq!(status, 404);
}

/// A hook granted `ssh.exec` for one environment read a sibling environment's `odoo.conf` (its
/// database password) on the same server: `ssh.exec` runs as the server's SSH user, so an
/// environment's grant of it was a server's power in disguise. The server-wide capabilities are
/// granted for one server of the organization only, still under the ceiling, and such a grant
/// covers only the runs on that server.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_wide_capability_cannot_be_granted_for_an_environment() {
    let f = fixture().await;
    let bed = testbed();
    let env = f.environment(&unique("sshgrant"), f.server).await;
    let env = env["id"].as_i64().unwrap();
    let grant = async |body: Value| {
        f.cp.call(&f.token, Method::POST, "/v1/grants", Some(body))
            .await
    };
    let org = f.org;
    let ceiling = format!("/v1/operator/organizations/{org}/grant-ceiling");
    let raised = json!({ "capabilities": ["files", "docker", "ssh.exec", "ssh.files"] });
    let operator = f.cp.operator_token();
    let (status, answer) =
        f.cp.call(&operator, Method::PUT, &ceiling, Some(raised))
            .await;
    assert_eq!(status, 200, "{answer}");

    for capability in ["ssh.exec", "ssh.files"] {
        for scope in [json!({ "environment_id": env }), json!({})] {
            let mut body = json!({ "plugin": "gate", "capability": capability });
            body.as_object_mut()
                .unwrap()
                .extend(scope.as_object().unwrap().clone());
            let (status, answer) = grant(body).await;
            assert_eq!(status, 422, "{capability} {scope}: {answer}");
            assert!(
                answer["error"].as_str().unwrap().contains("server-wide"),
                "{answer}"
            );
        }
    }
    let (status, answer) = grant(
        json!({ "plugin": "gate", "capability": "ssh.exec", "server_id": f.server,
                "environment_id": env }),
    )
    .await;
    assert_eq!(
        status, 422,
        "a server's grant names no environment: {answer}"
    );
    let (status, answer) =
        grant(json!({ "plugin": "gate", "capability": "docker", "server_id": f.server })).await;
    assert_eq!(status, 422, "docker is an environment's: {answer}");
    // The ceiling still applies to a server's grant: beyond it, a request for the operator.
    let (status, answer) =
        grant(json!({ "plugin": "gate", "capability": "ssh.shell", "server_id": f.server })).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "pending", "{answer}");

    let (status, granted) =
        grant(json!({ "plugin": "gate", "capability": "ssh.exec", "server_id": f.server })).await;
    assert_eq!(status, 201, "{granted}");
    assert_eq!(granted["server_id"], f.server);

    // Only the runs on that server are covered; another organization's server cannot be named.
    let second = &bed.servers[1];
    let other_server =
        f.cp.post(
            &f.token,
            "/v1/servers",
            json!({ "name": "server-2", "host": second.host, "port": second.port,
                    "ssh_key": "testbed" }),
        )
        .await;
    let elsewhere = f
        .environment(&unique("sshgrant"), other_server["id"].as_i64().unwrap())
        .await;
    let covers = |env: i64| {
        f.cp.engine
            .store
            .grants_for(env)
            .unwrap()
            .iter()
            .any(|g| g.capability == "ssh.exec")
    };
    assert!(covers(env));
    assert!(!covers(elsewhere["id"].as_i64().unwrap()));
    let (_, theirs) = f.cp.organization(&unique("globex"));
    let their_server =
        f.cp.post(
            &theirs,
            "/v1/servers",
            json!({ "name": "server-1", "host": second.host, "port": second.port,
                    "ssh_key": "testbed" }),
        )
        .await;
    let (status, answer) = grant(
        json!({ "plugin": "gate", "capability": "ssh.exec", "server_id": their_server["id"] }),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
}

/// 66 environments on a server that never answered SSH, all deployed at once, held all 64
/// instance slots: another organization's deploy then failed with "maximum concurrent limit of
/// 64 reached". Now an organization's runs beyond its share wait in the queue, and the other
/// organization's deploy starts at once and succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn one_organization_cannot_take_every_run_slot() {
    let f = fixture().await;
    let cp = &f.cp;
    let port = berth_e2e::silent_server().await;
    let (greedy_id, greedy) = cp.organization(&unique("greedy"));
    let operator = cp.operator_token();
    let (status, limit) = cp
        .call(
            &operator,
            reqwest::Method::PUT,
            &format!("/v1/operator/organizations/{greedy_id}/run-limit"),
            Some(json!({ "concurrent_runs": 3 })),
        )
        .await;
    assert_eq!(status, 200, "{limit}");
    assert_eq!(limit["concurrent_runs"], 3);
    let (status, _) = cp
        .call(
            &greedy,
            reqwest::Method::PUT,
            &format!("/v1/operator/organizations/{greedy_id}/run-limit"),
            Some(json!({ "concurrent_runs": 100 })),
        )
        .await;
    assert_eq!(status, 403, "an organization cannot raise its own share");

    let server = cp
        .post(
            &greedy,
            "/v1/servers",
            json!({ "name": "silent", "host": "127.0.0.1", "port": port, "ssh_key": "testbed" }),
        )
        .await;
    let project = cp
        .post(&greedy, "/v1/projects", json!({ "name": "burst" }))
        .await;
    let mut burst = Vec::new();
    for i in 0..8 {
        let env = cp
            .post(
                &greedy,
                &format!("/v1/projects/{}/environments", project["id"]),
                json!({ "name": format!("e{i}"), "server_id": server["id"], "odoo_version": "17.0" }),
            )
            .await;
        let run = cp
            .post(
                &greedy,
                &format!("/v1/environments/{}/deploy", env["id"]),
                json!({}),
            )
            .await;
        burst.push(run["id"].as_i64().unwrap());
    }
    let statuses = async || {
        let mut statuses = Vec::new();
        for id in &burst {
            let run = cp.get(&greedy, &format!("/v1/runs/{id}")).await;
            statuses.push(run["status"].as_str().unwrap().to_string());
        }
        statuses
    };
    let before = statuses().await;
    assert_eq!(
        before.iter().filter(|s| *s == "running").count(),
        3,
        "{before:?}"
    );
    assert_eq!(
        before.iter().filter(|s| *s == "queued").count(),
        5,
        "{before:?}"
    );

    // The other organization's deploy does not wait for the burst.
    let env = f.environment(&unique("fair"), f.server).await;
    let run = f.deploy(env["id"].as_i64().unwrap()).await;
    assert_eq!(run["status"], "running", "{run}");
    let done = cp.finished(&f.token, run["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // Meanwhile the burst stayed within its share (its runs time out one by one, 15 s each, and
    // the queue moves on).
    let during = statuses().await;
    assert!(
        during.iter().filter(|s| *s == "running").count() <= 3,
        "{during:?}"
    );

    // Cancelling a waiting run ends it at once.
    let waiting = burst[during.iter().position(|s| s == "queued").unwrap()];
    let (status, _) = cp
        .call(
            &greedy,
            reqwest::Method::POST,
            &format!("/v1/runs/{waiting}/cancel"),
            None,
        )
        .await;
    assert!((200..300).contains(&status));
    let cancelled = cp.get(&greedy, &format!("/v1/runs/{waiting}")).await;
    assert_eq!(
        cancelled["error"], "cancelled before it started",
        "{cancelled}"
    );
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    for id in &burst {
        cp.call(
            &greedy,
            reqwest::Method::POST,
            &format!("/v1/runs/{id}/cancel"),
            None,
        )
        .await;
    }
    for id in &burst {
        let run = cp.finished(&greedy, *id).await;
        assert_ne!(run["status"], "succeeded", "{run}");
    }
}

/// A push that arrived while its environment was busy was refused ("busy"). Now it waits as one
/// follow-up run, and a later push updates that run instead of adding another.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_during_a_run_becomes_one_follow_up_run() {
    let f = fixture().await;
    let env = f.environment(&unique("coalesce"), f.server).await;
    let id = env["id"].as_i64().unwrap();
    let secret = env["webhook_secret"].as_str().unwrap();
    let deploy = f.deploy(id).await;
    let first = commit(&f.project_repo, &[("addons/a.py", "# a\n")], "a");
    let second = commit(&f.project_repo, &[("addons/b.py", "# b\n")], "b");
    let push = |after: &str| json!({ "ref": "refs/heads/main", "after": after }).to_string();
    let (status, follow_up) =
        f.cp.github_deliver(id, secret, &push(&first), "push-a")
            .await;
    assert_eq!(status, 202, "{follow_up}");
    assert_eq!(follow_up["status"], "queued", "{follow_up}");
    assert_eq!(follow_up["coalesced"], false, "{follow_up}");
    let (status, again) =
        f.cp.github_deliver(id, secret, &push(&second), "push-b")
            .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["id"], follow_up["id"], "{again}");
    assert_eq!(again["coalesced"], true, "{again}");

    let deployed =
        f.cp.finished(&f.token, deploy["id"].as_i64().unwrap())
            .await;
    assert_eq!(deployed["status"], "succeeded", "{deployed}");
    let run =
        f.cp.finished(&f.token, follow_up["id"].as_i64().unwrap())
            .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(f.run_count(id).await, 2, "one deploy, one follow-up");
    assert!(
        run.to_string().contains(&format!("shop@{}", &second[..7])),
        "the follow-up deployed the newest push: {run:#}"
    );
}

/// The `targets` grant reached every storage target of the organization (read and delete): it
/// can be given for one target (`targets:<name>`), which must be one of the organization's own;
/// the door then checks the target of every call (unit tests of the runtime's `targets`).
#[tokio::test(flavor = "multi_thread")]
async fn a_targets_grant_can_name_one_target() {
    let f = fixture().await;
    let grant = async |capability: &str| {
        f.cp.call(
            &f.token,
            Method::POST,
            "/v1/grants",
            Some(json!({ "plugin": "gate", "capability": capability })),
        )
        .await
    };
    let (status, answer) = grant("targets:offsite").await;
    assert_eq!(status, 404, "no such target yet: {answer}");
    f.cp.post(
        &f.token,
        "/v1/storage-targets",
        json!({ "name": "offsite", "backend": "s3",
                "settings": { "endpoint": "https://s3.example.com", "bucket": "b" },
                "user": "u", "secret": "s" }),
    )
    .await;
    let (status, answer) = grant("targets:offsite").await;
    assert_eq!(status, 202, "beyond the default ceiling: {answer}");
    let org = f.org;
    let (status, answer) =
        f.cp.call(
            &f.cp.operator_token(),
            Method::PUT,
            &format!("/v1/operator/organizations/{org}/grant-ceiling"),
            Some(json!({ "capabilities": ["files", "targets"] })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, granted) = grant("targets:offsite").await;
    assert_eq!(
        status, 201,
        "`targets` in the ceiling covers one target: {granted}"
    );
    assert_eq!(granted["capability"], "targets:offsite", "{granted}");
    let (status, answer) = grant("targets:../offsite").await;
    assert_eq!(status, 400, "{answer}");
}

/// A delivery signed with the environment's secret named, as `after`, a commit of another branch
/// (or of a fork): the run deployed whatever commit the sender named. The pushed commit must be
/// reached by the tracked branch, checked in the control plane's mirror before the run does
/// anything.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_naming_a_commit_of_another_branch_deploys_nothing() {
    let f = fixture().await;
    let env = f.environment(&unique("branch"), f.server).await;
    let id = env["id"].as_i64().unwrap();
    let secret = env["webhook_secret"].as_str().unwrap();
    let repo = &f.project_repo;
    berth_e2e::control_plane::git(repo, &["checkout", "-q", "-b", "elsewhere"]);
    let foreign = commit(repo, &[("addons/shop_sale/models.py", "# not main\n")], "x");
    berth_e2e::control_plane::git(repo, &["checkout", "-q", "main"]);
    let fork = "0123456789abcdef0123456789abcdef01234567";
    for after in [foreign.as_str(), fork] {
        let body = json!({ "ref": "refs/heads/main", "after": after });
        let (status, run) = f.cp.github_send(id, secret, &body).await;
        assert_eq!(status, 202, "{run}");
        let run = f.cp.finished(&f.token, run["id"].as_i64().unwrap()).await;
        assert_eq!(run["status"], "failed", "{run}");
        let error = run["error"].as_str().unwrap_or("");
        assert!(
            error.contains(&format!("pushed commit {after} is not on branch main")),
            "{after}: {run}"
        );
        assert!(
            run["steps"].as_array().unwrap().is_empty(),
            "no step ran: {run}"
        );
    }
    let env = f.cp.get(&f.token, &format!("/v1/environments/{id}")).await;
    assert_eq!(env["deployed"], false, "{env}");
}

/// Uploads were unbounded: an organization could upload (and have compiled) as many plugins, as
/// often, as it liked. Uploads per hour, MiB per hour and plugins kept are quotas the operator
/// sets per organization; beyond them `POST /v1/plugins` answers 429.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_beyond_the_organizations_quotas_are_refused() {
    let cp = ControlPlane::start().await;
    let (org, token) = cp.organization(&unique("quota"));
    let operator = cp.operator_token();
    let gate = std::fs::read(berth_e2e::component("gate")).unwrap();
    let probe = std::fs::read(berth_e2e::component("probe")).unwrap();
    let upload = async |bytes: &[u8]| {
        let response = cp
            .client
            .post(format!("{}/v1/plugins", cp.url))
            .bearer_auth(&token)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let quota = format!("/v1/operator/organizations/{org}/upload-quota");
    let set = async |body: Value| {
        let (status, answer) = cp.call(&operator, Method::PUT, &quota, Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        answer
    };
    let defaults = cp.get(&operator, &quota).await;
    assert_eq!(
        defaults["limits"],
        json!({ "max_plugins": 20, "uploads_per_hour": 10, "upload_mib_per_hour": 100 }),
        "{defaults}"
    );
    let (status, _) = cp
        .call(
            &token,
            Method::PUT,
            &quota,
            Some(json!({ "uploads_per_hour": 1000 })),
        )
        .await;
    assert_eq!(status, 403, "an organization does not set its own quotas");

    // Uploads an hour: every upload compiled counts, refused or not.
    set(json!({ "uploads_per_hour": 2 })).await;
    let (status, answer) = upload(&gate).await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = upload(&gate).await;
    assert_eq!(status, 409, "the same version again: {answer}");
    let (status, answer) = upload(&gate).await;
    assert_eq!(status, 429, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("upload quota"),
        "{answer}"
    );

    // Plugins kept: a new name is refused at the maximum; one it keeps is not (this one reaches
    // the store, which has its version already).
    set(json!({ "uploads_per_hour": 10, "max_plugins": 1 })).await;
    let (status, answer) = upload(&probe).await;
    assert_eq!(status, 429, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("plugin quota"),
        "{answer}"
    );
    let (status, answer) = upload(&gate).await;
    assert_eq!(status, 409, "{answer}");

    // MiB an hour.
    set(json!({ "upload_mib_per_hour": 0 })).await;
    let (status, answer) = upload(&gate).await;
    assert_eq!(status, 429, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("in an hour (0 MiB)"),
        "{answer}"
    );
    let plugins = cp.get(&token, "/v1/plugins").await;
    let own = plugins
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["organization_id"] == org)
        .count();
    assert!(own >= 1, "{plugins}");
    assert!(
        !plugins
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "probe"),
        "{plugins}"
    );
}

/// A dump was restored as the superuser behind a `SET ROLE` the dump could undo: `RESET ROLE`,
/// then `COPY … TO PROGRAM` ran a program in the database's container; `ALTER ROLE … SUPERUSER`
/// made Odoo's role a superuser; `psql` ran the dump's own `\!` and `\connect`. Now the dump is SQL
/// only, run by a role that owns the restored database and nothing else: each is refused, nothing
/// is switched, and Odoo runs on the current data again.
#[tokio::test(flavor = "multi_thread")]
async fn a_restored_dump_cannot_leave_its_database() {
    use berth_e2e::backups::{
        add_targets, db_container, deployed, docker, odoo_running, partners, planted, restore, sql,
        zip,
    };
    let f = fixture().await;
    add_targets(&f).await;
    let (env, id) = deployed(&f).await;
    sql(&env, "INSERT INTO res_partner (name) VALUES ('Kept safe')");
    let rows = partners(&env);
    let cases = [
        (
            "reset-role",
            "RESET ROLE;\nCOPY (SELECT 1) TO PROGRAM 'touch /tmp/pwned-reset';\n".to_string(),
        ),
        ("superuser", format!("ALTER ROLE \"{env}\" SUPERUSER;\n")),
        (
            "password",
            format!("ALTER ROLE \"{env}\" PASSWORD 'taken';\n"),
        ),
        (
            // Alone in its batch (a COPY follows), so it is the role that refuses it.
            "drop-current",
            format!("DROP DATABASE \"{env}\";\nCOPY res_partner (name) FROM stdin;\nx\n\\.\n"),
        ),
        ("shell", "\\! touch /tmp/pwned-shell\n".to_string()),
        (
            "connect",
            "\\connect - postgres\nCOPY (SELECT 1) TO PROGRAM 'touch /tmp/pwned-connect';\n"
                .to_string(),
        ),
    ];
    for (label, dump) in cases {
        let key = format!("shop/{env}/hostile-{label}.zip");
        let bytes = zip(&[
            ("dump.sql", dump.as_bytes()),
            ("manifest.json", b"{\"version\": \"17.0\"}"),
        ]);
        let backup = planted(&f, id, &key, &bytes, None, json!({ "version": "17.0" })).await;
        let (status, run) = restore(&f, id, backup, None).await;
        assert_eq!(status, 202, "{label}: {run}");
        assert_eq!(run["status"], "failed", "{label}: {run:#}");
        let error = step(&run, "restore-data")["error"].as_str().unwrap();
        assert!(
            error.contains("nothing was switched") && error.contains("started on it again"),
            "{label}: {error}"
        );
        assert!(odoo_running(&env), "{label}: Odoo runs again");
        assert_eq!(
            partners(&env),
            rows,
            "{label}: the current data is as it was"
        );
        let tmp = docker(&["exec", &db_container(&env), "ls", "-A", "/tmp"]);
        assert!(!tmp.contains("pwned"), "{label}: a program ran: {tmp}");
        let role = sql(
            &env,
            &format!("SELECT rolsuper FROM pg_roles WHERE rolname = '{env}'"),
        );
        assert_eq!(role.trim(), "f", "{label}: Odoo's role is no superuser");
    }
}

/// A hook granted `database` got the lifecycle's connection, as `postgres` (superuser): it ran
/// `COPY … TO PROGRAM`, `pg_read_file`, `ALTER ROLE … SUPERUSER` and could become anyone. Now it
/// has a role of its own, which refuses each of them and still updates the environment's tables.
#[tokio::test(flavor = "multi_thread")]
async fn a_hook_granted_database_is_no_superuser() {
    use berth_backends::database::{Principal, Value as DbValue};
    use berth_e2e::server::{Env, start_postgres};
    use berth_e2e::{Harness, component};
    use berth_runtime::{Runtime, RuntimeOptions, ServerAccess, WitError};

    let env = Env::new(&format!("hk{}", std::process::id()));
    let access = start_postgres(&env).await;
    let name = env.name.clone();
    let lifecycle = env.database(&name, &access).acting_as(Principal::Lifecycle);
    lifecycle
        .execute(
            &name,
            "CREATE TABLE res_partner (id serial PRIMARY KEY, name text)",
            &[],
        )
        .await
        .unwrap();
    lifecycle
        .execute(
            &name,
            "INSERT INTO res_partner (name) VALUES ('Azure')",
            &[],
        )
        .await
        .unwrap();

    let rt = Runtime::new(RuntimeOptions::default()).unwrap();
    let plugin = rt.load_file(&component("misbehave")).await.unwrap();
    let hook = async |sql: &str| {
        let mut h = Harness::new(&name, "misbehave", &["database"]);
        h.lend(std::sync::Arc::new(ServerAccess {
            pool: env.pool.clone(),
            target: env.target.clone(),
            database: Some(access.clone()),
        }));
        let event = h.event("before:db-sql", &format!("{name}\n{sql}"));
        let outcome = plugin.handle(&rt, &h.invocation, &event).await;
        (outcome, h.log.messages())
    };
    let superuser = &access.user;
    for attack in [
        "COPY (SELECT 1) TO PROGRAM 'touch /tmp/pwned'".to_string(),
        "SELECT pg_read_file('/etc/passwd')".into(),
        format!("ALTER ROLE \"{name}_hooks\" SUPERUSER"),
        format!("ALTER ROLE \"{name}\" SUPERUSER"),
        format!("ALTER ROLE \"{superuser}\" PASSWORD 'taken'"),
        format!("SET ROLE \"{superuser}\""),
        format!("SET ROLE \"{name}\""),
        "CREATE TABLE planted (x int)".into(),
    ] {
        let (outcome, _) = hook(&attack).await;
        match outcome.unwrap_err().plugin_error() {
            Some(WitError::Failed(message)) => {
                assert!(message.contains("(42501)"), "{attack}: {message}")
            }
            other => panic!("{attack}: expected a refusal, got {other:?}"),
        }
    }
    let tmp = berth_e2e::backups::docker(&[
        "exec",
        &format!("berth.acme.shop.{name}.db"),
        "ls",
        "-A",
        "/tmp",
    ]);
    assert!(!tmp.contains("pwned"), "a program ran: {tmp}");

    // What a neutralizing hook does still works.
    let (outcome, messages) = hook("UPDATE res_partner SET name = 'neutralized'").await;
    outcome.expect("the hook updates the environment's table");
    assert_eq!(messages, ["sql affected 1 row(s)"]);
    let (_, rows) = lifecycle
        .query(&name, "SELECT name FROM res_partner", &[])
        .await
        .unwrap();
    assert_eq!(rows, [[DbValue::Text("neutralized".into())]]);
    env.docker(&name).remove("db").await.unwrap();
}

/// A restore staged the backup on the server as `restore/backup.zip`, 0644: any user of the server
/// could read the environment's data while it was there. It is now Odoo's user's alone (folder
/// 0700, archive 0600, owned by the image's uid, which the extraction runs as) for as long as it is
/// staged, and gone as soon as the extraction ends — here, refusing it.
#[tokio::test(flavor = "multi_thread")]
async fn a_staged_backup_is_readable_by_odoo_alone() {
    use berth_e2e::backups::{add_targets, deployed, odoo_uid, planted, server_dir, zip};
    use std::os::unix::fs::MetadataExt;

    let f = fixture().await;
    add_targets(&f).await;
    let (env, id) = deployed(&f).await;
    let uid = odoo_uid(&env);
    // Big enough to be staged for a while; without a dump.sql, so the extraction refuses it.
    let filler: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let bytes = zip(&[("filestore/ab/abcdef", &filler)]);
    let key = format!("shop/{env}/staged.zip");
    let backup = planted(&f, id, &key, &bytes, None, json!({ "version": "17.0" })).await;
    let (status, run) =
        f.cp.call(
            &f.token,
            Method::POST,
            &format!("/v1/environments/{id}/restore"),
            Some(json!({ "backup_id": backup, "replace_all_data": true })),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    let staging = server_dir(&env).join("restore");
    let archive = staging.join("backup.zip");
    let observe = |path: &std::path::Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.mode() & 0o7777, m.uid()))
    };
    let (mut folders, mut archives) = (Vec::new(), Vec::new());
    let finished = f.cp.finished(&f.token, run["id"].as_i64().unwrap());
    let mut finished = std::pin::pin!(finished);
    let run = loop {
        tokio::select! {
            run = &mut finished => break run,
            _ = tokio::time::sleep(Duration::from_millis(2)) => {
                folders.extend(observe(&staging));
                archives.extend(observe(&archive));
            }
        }
    };
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(
        step(&run, "extract-backup")["error"]
            .as_str()
            .unwrap()
            .contains("no dump.sql"),
        "{run:#}"
    );
    assert!(!archives.is_empty(), "the archive was never seen staged");
    archives.dedup();
    folders.dedup();
    assert_eq!(archives, [(0o600, uid)], "the staged archive");
    assert_eq!(folders, [(0o700, uid)], "the staging folder");
    assert!(!staging.exists(), "the staging folder is removed");
}

/// `odoo.conf`, which holds the database password, was written 0644 on the server: readable by
/// every user of it. It is now 0640 and Odoo's user's (the image's uid), and Odoo still reads it.
#[tokio::test(flavor = "multi_thread")]
async fn odoo_conf_is_readable_by_odoo_alone() {
    use berth_e2e::backups::{
        deployed, docker, odoo_container, odoo_running, odoo_uid, server_dir,
    };
    use std::os::unix::fs::MetadataExt;

    let f = fixture().await;
    let (env, _) = deployed(&f).await;
    let conf = std::fs::metadata(server_dir(&env).join("odoo.conf")).unwrap();
    assert_eq!(conf.mode() & 0o7777, 0o640);
    assert_eq!(conf.uid(), odoo_uid(&env));
    assert!(odoo_running(&env));
    let read = docker(&["exec", &odoo_container(&env), "cat", "/etc/odoo/odoo.conf"]);
    assert!(
        read.contains("db_password = "),
        "Odoo reads its configuration"
    );
}

/// Platform repositories are deployed to every organization's environments: only the operator
/// adds them, over the API with the operator's token as well as from the data directory.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_operator_adds_platform_repositories() {
    let f = fixture().await;
    let operator = f.cp.operator_token();
    let body = json!({ "name": "themes", "url": "https://git.example.com/themes.git" });
    let (status, answer) =
        f.cp.call(
            &f.token,
            reqwest::Method::POST,
            "/v1/operator/repositories",
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 403, "{answer}");
    let platform = json!({ "level": "platform", "name": "themes", "url": body["url"] });
    let (status, answer) =
        f.cp.call(
            &f.token,
            reqwest::Method::POST,
            "/v1/repositories",
            Some(platform),
        )
        .await;
    assert_eq!(status, 403, "{answer}");

    let added =
        f.cp.post(&operator, "/v1/operator/repositories", body.clone())
            .await;
    assert_eq!(added["level"], "platform", "{added}");
    let (status, again) =
        f.cp.call(
            &operator,
            reqwest::Method::POST,
            "/v1/operator/repositories",
            Some(body),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    // A name an organization already uses is refused too: the folders would collide.
    let taken = json!({ "name": "shop", "url": "https://git.example.com/shop.git" });
    let (status, answer) =
        f.cp.call(
            &operator,
            reqwest::Method::POST,
            "/v1/operator/repositories",
            Some(taken),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    let listed = f.cp.get(&operator, "/v1/operator/repositories").await;
    assert!(listed.to_string().contains("themes"), "{listed}");
    let theirs = f.cp.get(&f.token, "/v1/repositories").await;
    assert!(
        theirs.to_string().contains("themes"),
        "the organization sees it: {theirs}"
    );
}

/// Each grant above the ceiling became a pending request with no bound: an organization could
/// flood the operator's list and the state file. At most 50 wait at once; asking again for one
/// that waits is still answered with it.
#[tokio::test(flavor = "multi_thread")]
async fn grant_requests_cannot_flood_the_operator() {
    let f = fixture().await;
    let ask = async |env: i64| {
        f.cp.call(
            &f.token,
            reqwest::Method::POST,
            "/v1/grants",
            Some(json!({ "plugin": "gate", "capability": "docker", "environment_id": env })),
        )
        .await
    };
    let mut first = None;
    for i in 0..50 {
        let env = f.environment(&format!("flood{i}"), f.server).await;
        let id = env["id"].as_i64().unwrap();
        let (status, answer) = ask(id).await;
        assert_eq!(status, 202, "{answer}");
        first.get_or_insert(id);
    }
    let env = f.environment("flood50", f.server).await;
    let (status, answer) = ask(env["id"].as_i64().unwrap()).await;
    assert_eq!(status, 429, "{answer}");
    let (status, answer) = ask(first.unwrap()).await;
    assert_eq!(status, 202, "the same request again: {answer}");
}
