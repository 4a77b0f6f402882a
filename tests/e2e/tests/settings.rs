//! An environment's settings changed through the HTTP API against the real test servers: what a
//! change answers, what it refuses, and that the redeploy it asks for runs the new settings.

use berth_e2e::backups::{deployed, docker, odoo_container};
use berth_e2e::control_plane::{Fixture, fixture};
use serde_json::{Value, json};

/// `PATCH /v1/environments/{id}` with the fixture's organization: the status and the answer.
async fn patch(f: &Fixture, env: i64, body: Value) -> (u16, Value) {
    f.cp.call(
        &f.token,
        reqwest::Method::PATCH,
        &format!("/v1/environments/{env}"),
        Some(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_settings_change_and_say_when_a_redeploy_is_needed() {
    let f = fixture().await;

    // Before the first deploy nothing runs the settings: no redeploy is needed.
    let fresh = f
        .environment(&berth_e2e::control_plane::unique("set"), f.server)
        .await;
    let fresh_id = fresh["id"].as_i64().unwrap();
    let (status, answer) = patch(
        &f,
        fresh_id,
        json!({"workers": 3, "domain": "erp.example.com"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"], json!(["domain", "workers"]));
    assert_eq!(
        (&answer["redeploy_needed"], &answer["because"]),
        (&json!(false), &json!([]))
    );

    let (name, id) = deployed(&f).await;
    let path = format!("/v1/environments/{id}");
    let before = f.cp.get(&f.token, &path).await;

    // Deployed: the settings the containers embody need a redeploy, auto-deploy does not.
    let (status, answer) = patch(
        &f,
        id,
        json!({"workers": 2, "auto_deploy": false, "domain": "shop.example.com", "dev_mode": true}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["changed"],
        json!(["auto_deploy", "domain", "workers"])
    );
    assert_eq!(answer["redeploy_needed"], true);
    assert_eq!(answer["because"], json!(["domain", "workers"]));
    let read = f.cp.get(&f.token, &path).await;
    assert_eq!(read, answer["environment"]);
    assert_eq!(
        (&read["workers"], &read["auto_deploy"], &read["domain"]),
        (&json!(2), &json!(false), &json!("shop.example.com"))
    );
    for kept in [
        "name",
        "odoo_version",
        "server_id",
        "memory_mb",
        "odoo_image",
        "protected",
    ] {
        assert_eq!(read[kept], before[kept], "{kept} is as it was");
    }
    let (status, answer) = patch(&f, id, json!({"auto_deploy": true, "branch": "main"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["redeploy_needed"], false, "{answer}");
    // Nothing started on its own.
    assert_eq!(f.run_count(id).await, 1);

    // The redeploy it asked for runs the new settings.
    let run = f.deploy(id).await;
    let run = f.cp.finished(&f.token, run["id"].as_i64().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let conf = docker(&["exec", &odoo_container(&name), "cat", "/etc/odoo/odoo.conf"]);
    assert!(conf.lines().any(|l| l.trim() == "workers = 2"), "{conf}");

    // What an environment keeps for life is refused by name, with the reason.
    for (field, value) in [
        ("odoo_version", json!("18.0")),
        ("name", json!("renamed")),
        ("server_id", json!(f.server)),
        ("protected", json!(false)),
    ] {
        let (status, answer) = patch(&f, id, json!({ field: value, "workers": 1 })).await;
        assert_eq!(status, 422, "{field}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("{field} cannot be changed: ")),
            "{error}"
        );
    }
    let (_, answer) = patch(&f, id, json!({"odoo_version": "18.0"})).await;
    assert!(
        answer["error"].as_str().unwrap().contains("migration"),
        "{answer}"
    );

    // Values are checked as at creation; an unknown field or an empty change is a bad request.
    for bad in [
        json!({"cpus": 0}),
        json!({"memory_mb": 0}),
        json!({"domain": "not a domain"}),
    ] {
        let (status, answer) = patch(&f, id, bad.clone()).await;
        assert_eq!(status, 422, "{bad}: {answer}");
    }
    let (status, answer) = patch(&f, id, json!({"workers": 1, "colour": "red"})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("colour"),
        "{answer}"
    );
    for empty in [json!({}), json!([1]), json!("workers")] {
        let (status, answer) = patch(&f, id, empty.clone()).await;
        assert_eq!(status, 400, "{empty}: {answer}");
    }
    assert_eq!(
        f.cp.get(&f.token, &path).await["workers"],
        2,
        "nothing refused was written"
    );

    // Another organization's environment is not found, whatever the change.
    let (_, other) = f.cp.organization("other");
    for body in [json!({"workers": 1}), json!({"odoo_version": "18.0"})] {
        let (status, answer) =
            f.cp.call(&other, reqwest::Method::PATCH, &path, Some(body))
                .await;
        assert_eq!(status, 404, "{answer}");
    }
    assert_eq!(f.cp.get(&f.token, &path).await["workers"], 2);

    let doc = f.cp.get(&f.token, "/v1/openapi.json").await;
    assert!(
        doc["paths"]["/v1/environments/{id}"]["patch"].is_object(),
        "PATCH documented"
    );
}
