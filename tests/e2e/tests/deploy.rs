//! Deploys through the HTTP API against the real test servers: first deploy, redeploy that keeps the
//! data, pushes deployed fast or full, signatures, busy answers, a failing step, and customer hooks.
//!
//! Odoo is the test bed's stand-in image (it honours the official image's contract, and refuses to
//! serve a database that was never initialised), PostgreSQL the test bed's image.

use std::sync::Arc;

use berth_backends::database::{DbAccess, EnvDatabase, Value as DbValue};
use berth_backends::docker::{EnvDocker, Scope};
use berth_backends::ssh::SshPool;
use berth_e2e::control_plane::{
    ControlPlane, Fixture, commit, fixture, report_timing, step, steps, unique,
};
use berth_e2e::testbed;
use serde_json::{Value, json};

/// The environment's database as the primitives reach it (the test's own window on the data).
fn env_database(cp: &ControlPlane, env_id: i64, env: &str) -> EnvDatabase {
    let bed = testbed();
    let pool = Arc::new(SshPool::new(&bed.key).unwrap());
    let target = bed.servers[0].target("server-1");
    let docker = EnvDocker::new(
        pool.clone(),
        target.clone(),
        Scope::environment("acme", "shop", env),
    )
    .unwrap();
    let password = cp
        .engine
        .store
        .secret(env_id, "postgres-password")
        .unwrap()
        .expect("the deploy generated the PostgreSQL password");
    let access = DbAccess {
        host: String::new(),
        port: 5432,
        user: "postgres".into(),
        password,
        container: "db".into(),
    };
    EnvDatabase::new(pool, target, access, docker)
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_redeploy_and_pushes_through_the_api() {
    let f = fixture().await;
    let name = unique("e2e");
    let env = f.environment(&name, f.server).await;
    let env_id = env["id"].as_i64().unwrap();

    // First deploy: every step in the seed's order; the live stream tells the same story.
    let run = f.deploy(env_id).await;
    assert_eq!(run["operation"], "first-deploy");
    let run_id = run["id"].as_i64().unwrap();
    let events = f.cp.sse_events(&f.token, run_id).await;
    let run = f.cp.finished(&f.token, run_id).await;
    report_timing("first deploy", &run);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let expected = [
        ("connect-server", "done"),
        ("setup-database", "done"),
        ("configure-dns", "skipped"),
        ("clone-repositories", "done"),
        ("start-odoo", "done"),
        ("install-dependencies", "done"),
        ("initialize-database", "done"),
        ("configure-ssl", "skipped"),
        ("health-check", "done"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(steps(&run), expected);
    assert_eq!(
        step(&run, "configure-dns")["summary"],
        "no DNS provider configured"
    );
    let clone = step(&run, "clone-repositories")["summary"]
        .as_str()
        .unwrap();
    for repo in ["shop@", "acme-addons@", "platform-addons@"] {
        assert!(clone.contains(repo), "{clone}");
    }
    let deps = step(&run, "install-dependencies")["summary"]
        .as_str()
        .unwrap();
    assert!(deps.contains("berth-standin-tool"), "{deps}");
    assert!(deps.contains("berth-standin-dep"), "{deps}");
    assert!(deps.contains("Odoo restarted"), "{deps}");
    let order: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "step" && e["data"]["state"] == "running")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        expected.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>()
    );
    assert!(
        events
            .iter()
            .any(|e| e["message"].as_str().unwrap_or("").contains("gate: ")
                && e["step"] == "health-check"),
        "the customer hook subscribed to after:health-check ran"
    );
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .unwrap_or("")
            .contains("gate: note refused: operation.note: only the run's lifecycle plugin")),
        "a hook cannot write on the run's record"
    );
    assert_eq!(events.last().unwrap()["data"]["status"], "succeeded");

    // Data written to the database survives a redeploy.
    let db = env_database(&f.cp, env_id, &name);
    db.execute(
        &name,
        "INSERT INTO res_partner (name, email) VALUES ($1, $2)",
        &[
            DbValue::Text("Kept Customer".into()),
            DbValue::Text("kept@example.com".into()),
        ],
    )
    .await
    .unwrap();
    let run = f.deploy(env_id).await;
    assert_eq!(run["operation"], "redeploy");
    let run = f.cp.finished(&f.token, run["id"].as_i64().unwrap()).await;
    report_timing("redeploy", &run);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(step(&run, "initialize-database")["status"], "skipped");
    let kept = db
        .query(
            &name,
            "SELECT count(*) FROM res_partner WHERE name = $1",
            &[DbValue::Text("Kept Customer".into())],
        )
        .await
        .unwrap();
    assert_eq!(
        kept.1[0][0],
        DbValue::Int(1),
        "the row survived the redeploy"
    );

    // A code-only push with dev mode on: Fast.
    let secret = env["webhook_secret"].as_str().unwrap();
    let code = commit(
        &f.project_repo,
        &[("addons/shop_sale/models.py", "# v2\n")],
        "code",
    );
    let (status, run) = f.cp.github_push(env_id, secret, "main", &code).await;
    assert_eq!(status, 202, "{run}");
    assert_eq!(run["operation"], "auto-deploy");
    let fast_id = run["id"].as_i64().unwrap();
    // While it runs, a deploy is refused with the run in progress.
    let (status, busy) =
        f.cp.call(
            &f.token,
            reqwest::Method::POST,
            &format!("/v1/environments/{env_id}/deploy"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{busy}");
    assert_eq!(busy["run_id"], fast_id);
    assert_eq!(busy["error"], format!("busy: run {fast_id} in progress"));
    let events = f.cp.sse_events(&f.token, fast_id).await;
    let run = f.cp.finished(&f.token, fast_id).await;
    report_timing("fast deploy", &run);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["facts"]["path"], "fast", "{run:#}");
    assert_eq!(
        steps(&run)
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>(),
        ["pull-latest-code", "restart-odoo", "health-check"]
    );
    assert!(
        step(&run, "pull-latest-code")["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("shop@{}", &code[..7]))
    );
    assert!(!events.iter().any(|e| e["step"] == "install-dependencies"));

    // A push that changes requirements.txt: Full, and the reason says why.
    let deps = commit(
        &f.project_repo,
        &[("requirements.txt", "berth-standin-dep\n# pinned\n")],
        "deps",
    );
    let (status, run) = f.cp.github_push(env_id, secret, "main", &deps).await;
    assert_eq!(status, 202, "{run}");
    let run = f.cp.finished(&f.token, run["id"].as_i64().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["facts"]["path"], "full");
    assert!(
        run["facts"]["reason"]
            .as_str()
            .unwrap()
            .contains("requirements.txt"),
        "{run:#}"
    );
    assert_eq!(step(&run, "install-dependencies")["status"], "done");

    // A wrong signature, or none: 401 and nothing runs.
    let before = f.run_count(env_id).await;
    let (status, _) =
        f.cp.github_push(env_id, "not-the-secret", "main", &deps)
            .await;
    assert_eq!(status, 401);
    let unsigned =
        f.cp.client
            .post(format!("{}/hooks/github/{env_id}", f.cp.url))
            .header("X-GitHub-Event", "push")
            .body(json!({ "ref": "refs/heads/main", "after": deps }).to_string())
            .send()
            .await
            .unwrap();
    assert_eq!(unsigned.status(), 401);
    let gitlab =
        f.cp.client
            .post(format!("{}/hooks/gitlab/{env_id}", f.cp.url))
            .header("X-Gitlab-Event", "Push Hook")
            .header("X-Gitlab-Token", "wrong")
            .body(json!({ "ref": "refs/heads/main", "after": deps }).to_string())
            .send()
            .await
            .unwrap();
    assert_eq!(gitlab.status(), 401);
    // Signed, but about another repository, or deleting the branch: acknowledged, ignored.
    for (body, why) in [
        (
            json!({ "ref": "refs/heads/main", "after": deps,
                    "repository": { "clone_url": "https://github.com/other/repo.git" } }),
            "no repository of this environment",
        ),
        (
            json!({ "ref": "refs/heads/main", "after": "0".repeat(40), "deleted": true }),
            "deleted the branch",
        ),
    ] {
        let (status, answer) = f.cp.github_send(env_id, secret, &body).await;
        assert_eq!(status, 202, "{answer}");
        assert!(
            answer["ignored"].as_str().unwrap().contains(why),
            "{answer}"
        );
    }
    assert_eq!(f.run_count(env_id).await, before, "no run was started");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_step_stops_the_run_with_its_error() {
    let f = fixture().await;
    // A server nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let server =
        f.cp.post(
            &f.token,
            "/v1/servers",
            json!({ "name": "gone", "host": "127.0.0.1", "port": port,
                    "ssh_key": "testbed" }),
        )
        .await;
    let env = f
        .environment(&unique("gone"), server["id"].as_i64().unwrap())
        .await;
    let run = f.deploy(env["id"].as_i64().unwrap()).await;
    let run = f.cp.finished(&f.token, run["id"].as_i64().unwrap()).await;
    assert_eq!(run["status"], "failed");
    let error = run["error"].as_str().unwrap();
    assert!(error.starts_with("step connect-server failed:"), "{error}");
    let connect = step(&run, "connect-server");
    assert_eq!(connect["status"], "failed");
    assert!(
        connect["error"]
            .as_str()
            .unwrap()
            .contains(&port.to_string()),
        "{connect}"
    );
    for (name, status) in steps(&run).into_iter().skip(1) {
        assert_eq!(status, "cancelled", "{name} never ran");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hook_that_aborts_before_start_odoo_stops_the_run() {
    let f = fixture().await;
    let env = f.environment(&unique("frozen"), f.server).await;
    let run = f.deploy(env["id"].as_i64().unwrap()).await;
    let run = f.cp.finished(&f.token, run["id"].as_i64().unwrap()).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("stopped before start-odoo") && error.contains("is frozen"),
        "{error}"
    );
    assert_eq!(step(&run, "clone-repositories")["status"], "done");
    assert_eq!(step(&run, "start-odoo")["status"], "cancelled");
    assert_eq!(step(&run, "health-check")["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_see_only_their_organization() {
    let f = fixture().await;
    let env = f.environment(&unique("mine"), f.server).await;
    let (_, other) = f.cp.organization("other");
    for path in [
        format!("/v1/environments/{}", env["id"]),
        format!("/v1/projects/{}", f.project),
        format!("/v1/servers/{}", f.server),
    ] {
        let (status, _) = f.cp.call(&other, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) =
        f.cp.call(
            &other,
            reqwest::Method::POST,
            &format!("/v1/environments/{}/deploy", env["id"]),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) =
        f.cp.call("berth_nonsense", reqwest::Method::GET, "/v1/projects", None)
            .await;
    assert_eq!(status, 401);
    // Uploads are validated before anything is kept.
    for (bytes, says, status) in [
        (b"not a component".to_vec(), "the plugin was refused", 422),
        (
            std::fs::read(berth_e2e::component("steps")).unwrap(),
            "organizations upload hook plugins",
            422,
        ),
        (
            std::fs::read(berth_e2e::component("gate")).unwrap(),
            "already exists",
            409,
        ),
    ] {
        let answer =
            f.cp.client
                .post(format!("{}/v1/plugins", f.cp.url))
                .bearer_auth(&f.token)
                .body(bytes)
                .send()
                .await
                .unwrap();
        assert_eq!(answer.status().as_u16(), status);
        let body: Value = answer.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(says), "{body}");
    }
    let openapi =
        f.cp.client
            .get(format!("{}/v1/openapi.json", f.cp.url))
            .send()
            .await
            .unwrap();
    let doc: Value = openapi.json().await.unwrap();
    for path in [
        "/v1/environments/{id}/deploy",
        "/v1/runs/{id}/events",
        "/hooks/github/{environment}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_run_stops_and_runs_no_later_step() {
    let f = fixture().await;
    let env = f.environment(&unique("cancel"), f.server).await;
    let run = f.deploy(env["id"].as_i64().unwrap()).await;
    let id = run["id"].as_i64().unwrap();
    let (status, answer) =
        f.cp.call(
            &f.token,
            reqwest::Method::POST,
            &format!("/v1/runs/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let run = f.cp.finished(&f.token, id).await;
    assert_eq!(run["status"], "cancelled", "{run:#}");
    assert_eq!(step(&run, "health-check")["status"], "cancelled");
    assert!(
        !steps(&run)
            .iter()
            .any(|(_, s)| s == "running" || s == "pending"),
        "{run:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_left_running_by_a_stopped_control_plane_is_marked_interrupted() {
    let f = fixture().await;
    let env = f.environment(&unique("crash"), f.server).await;
    // What a control plane that died during setup-database leaves in its state.
    let store = &f.cp.engine.store;
    let run = store
        .create_run(
            env["id"].as_i64().unwrap(),
            "first-deploy",
            "api",
            json!({}),
        )
        .unwrap();
    store.start_run(run.id).unwrap();
    store
        .plan_steps(
            run.id,
            &[
                "connect-server".into(),
                "setup-database".into(),
                "health-check".into(),
            ],
        )
        .unwrap();
    store.step_started(run.id, 0).unwrap();
    store
        .step_finished(run.id, 0, berth_state::StepStatus::Done, None, None, None)
        .unwrap();
    store.step_started(run.id, 1).unwrap();
    store
        .set_current_step(run.id, Some("setup-database"))
        .unwrap();

    let Fixture { cp, token, .. } = f;
    let cp = cp.restart().await;
    let run = cp.get(&token, &format!("/v1/runs/{}", run.id)).await;
    assert_eq!(run["status"], "interrupted", "{run:#}");
    assert!(
        run["error"].as_str().unwrap().contains("setup-database"),
        "{run:#}"
    );
    assert_eq!(step(&run, "setup-database")["status"], "interrupted");
    assert_eq!(step(&run, "health-check")["status"], "cancelled");
    // The environment is free again.
    let (status, answer) = cp
        .call(
            &token,
            reqwest::Method::POST,
            &format!("/v1/environments/{}/deploy", env["id"]),
            None,
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    cp.finished(&token, answer["id"].as_i64().unwrap()).await;
}

/// Every Odoo container creation left an unlabelled anonymous volume (the image's
/// `/mnt/extra-addons`) that nothing ever removed, and every run its workspace on the control
/// plane: every volume of a deploy is the environment's, and the workspace ends with the run.
#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_leaves_no_anonymous_volume_nor_workspace() {
    let f = fixture().await;
    let name = unique("vols");
    let env = f.environment(&name, f.server).await;
    let run = f.deploy(env["id"].as_i64().unwrap()).await;
    let run = f.cp.finished(&f.token, run["id"].as_i64().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let workspace =
        f.cp.engine
            .data_dir()
            .join("runs")
            .join(run["id"].to_string());
    assert!(!workspace.exists(), "{} is left", workspace.display());
    for container in [
        berth_e2e::backups::odoo_container(&name),
        berth_e2e::backups::db_container(&name),
    ] {
        let mounts = berth_e2e::backups::docker(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Type}}:{{.Name}} {{end}}",
            &container,
        ]);
        for mount in mounts.split_whitespace() {
            let (kind, volume) = mount.split_once(':').unwrap();
            if kind == "volume" {
                assert!(
                    volume.starts_with(&format!("berth.acme.shop.{name}.")),
                    "{container}: anonymous or foreign volume {volume}"
                );
            }
        }
    }
}
