//! The state store through its public API, on in-memory and on-disk databases.

use std::os::unix::fs::PermissionsExt;

use berth_state::{
    Environment, EnvironmentPatch, EventKind, NewEnvironment, NewEvent, NewGrant, NewPlugin,
    NewRepository, NewRun, NewServer, Organization, Queued, RepositoryLevel, RunLimits, RunStatus,
    StateError, StepStatus, Store,
};
use serde_json::json;

/// An organization with one project, one server and one environment.
struct Tenant {
    org: Organization,
    project_id: i64,
    server_id: i64,
    env: Environment,
}

fn tenant(store: &Store, name: &str) -> Tenant {
    let org = store.create_organization(name).unwrap();
    let project_id = store.create_project(org.id, "shop").unwrap().id;
    let server_id = store.create_server(org.id, server("web1")).unwrap().id;
    let env = store
        .create_environment(
            org.id,
            project_id,
            NewEnvironment::new("prod", "18.0", server_id),
        )
        .unwrap();
    Tenant {
        org,
        project_id,
        server_id,
        env,
    }
}

fn server(name: &str) -> NewServer {
    serde_json::from_value(json!({"name": name, "host": "10.0.0.5", "ssh_key": "keys/web1"}))
        .unwrap()
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[test]
fn migrations_apply_on_a_fresh_file_and_reopening_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let org_id = {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), berth_state::SCHEMA_VERSION);
        store.create_organization("acme").unwrap().id
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), berth_state::SCHEMA_VERSION);
    assert_eq!(store.organization(org_id).unwrap().name, "acme");
    drop(store);
    Store::open(&path).unwrap();
}

#[test]
fn a_state_file_from_a_newer_berth_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    assert!(matches!(Store::open(&path), Err(StateError::Invalid(_))));
}

#[test]
fn the_state_file_is_created_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    tenant(&store, "acme");
    // The database, while it is open SQLite's -wal and -shm files beside it, and the key that
    // seals its secrets.
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(files.len(), 4);
    for file in files {
        let mode = file.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.path().display());
    }
}

#[test]
fn token_secrets_are_looked_up_by_hash_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    let org = store.create_organization("acme").unwrap();
    let (info, secret) = store.create_token(org.id, "ci").unwrap();
    assert_eq!(info.organization_id, org.id);
    assert!(secret.starts_with("berth_") && secret.len() == "berth_".len() + 64);
    assert_eq!(store.token_organization(&secret).unwrap(), Some(org.id));
    assert_eq!(store.token_organization("berth_nope").unwrap(), None);

    // The database file and its write-ahead log: the secret is in neither, its hash is.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|window| window == needle);
    assert!(!contains(secret.as_bytes()));
    assert!(!contains(&secret.as_bytes()["berth_".len()..]));
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(secret.as_bytes()))
    };
    assert!(contains(hash.as_bytes()), "the hash should be stored");
}

/// Target credentials, environment secrets and database passwords were in clear in `state.db`:
/// they are sealed with a key kept in its own file, and a database without that key opens none.
#[test]
fn secrets_are_sealed_at_rest_with_a_key_outside_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    let t = tenant(&store, "acme");
    store
        .set_secret(t.env.id, "postgres-password", "pg-hunter22-secret")
        .unwrap();
    let target = store
        .create_storage_target(
            t.org.id,
            berth_state::NewStorageTarget {
                name: "offsite".into(),
                backend: "s3".into(),
                settings: Default::default(),
                user: "AKIA".into(),
                secret: "s3-hunter22-secret".into(),
            },
        )
        .unwrap();
    drop(store);
    let key = dir.path().join("state.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap().path();
        if entry != key {
            bytes.extend(std::fs::read(entry).unwrap());
        }
    }
    let webhook = t.env.webhook_secret.clone();
    for secret in ["pg-hunter22-secret", "s3-hunter22-secret", webhook.as_str()] {
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{secret} is in the database files in clear");
    }
    let opens_its_secrets = |store: &Store| {
        assert_eq!(
            store.environment_by_id(t.env.id).unwrap().webhook_secret,
            webhook
        );
        assert_eq!(
            store
                .secret(t.env.id, "postgres-password")
                .unwrap()
                .as_deref(),
            Some("pg-hunter22-secret")
        );
        assert_eq!(
            store.storage_target_secret(target.id).unwrap(),
            "s3-hunter22-secret"
        );
    };
    let store = Store::open(&path).unwrap();
    opens_its_secrets(&store);
    // A rotation reseals every secret with a new key, which replaces the old one.
    let old_key = std::fs::read(&key).unwrap();
    store.rotate_key().unwrap();
    assert_ne!(std::fs::read(&key).unwrap(), old_key);
    assert!(!dir.path().join("state.key.next").exists());
    opens_its_secrets(&store);
    drop(store);
    opens_its_secrets(&Store::open(&path).unwrap());
    // Without its key, the database gives no secret (and says why), never garbage.
    std::fs::remove_file(&key).unwrap();
    let store = Store::open(&path).unwrap();
    let err = store.secret(t.env.id, "postgres-password").unwrap_err();
    assert!(
        err.to_string().contains("does not open with this key"),
        "{err}"
    );
}

#[test]
fn an_organization_cannot_reach_another_organizations_rows() {
    let store = Store::memory().unwrap();
    let a = tenant(&store, "a");
    let b = tenant(&store, "b");
    let run = store
        .create_run(a.env.id, "redeploy", "api", json!({}))
        .unwrap();

    assert_eq!(store.environment(a.org.id, a.env.id).unwrap(), a.env);
    let not_found = |result: Result<_, StateError>| matches!(result, Err(StateError::NotFound(_)));
    assert!(not_found(store.environment(b.org.id, a.env.id).map(drop)));
    assert!(not_found(store.run(b.org.id, run.id).map(drop)));
    assert!(not_found(store.runs(b.org.id, a.env.id, 10).map(drop)));
    assert!(not_found(store.project(b.org.id, a.project_id).map(drop)));
    assert!(not_found(store.server(b.org.id, a.server_id).map(drop)));
    assert!(not_found(
        store.environments(b.org.id, a.project_id).map(drop)
    ));
    assert_eq!(store.run(a.org.id, run.id).unwrap().id, run.id);
    assert_eq!(store.environment_by_id(a.env.id).unwrap().id, a.env.id);

    // B cannot place an environment in A's project or on A's server.
    let on_a_server = NewEnvironment::new("x", "18.0", a.server_id);
    assert!(not_found(
        store
            .create_environment(b.org.id, b.project_id, on_a_server)
            .map(drop)
    ));
    let in_a_project = NewEnvironment::new("x", "18.0", b.server_id);
    assert!(not_found(
        store
            .create_environment(b.org.id, a.project_id, in_a_project)
            .map(drop)
    ));
}

#[test]
fn duplicate_names_conflict() {
    let store = Store::memory().unwrap();
    let t = tenant(&store, "acme");
    let conflict = |result: Result<_, StateError>| matches!(result, Err(StateError::Conflict(_)));
    assert!(conflict(store.create_organization("acme").map(drop)));
    assert!(conflict(store.create_project(t.org.id, "shop").map(drop)));
    assert!(conflict(
        store.create_server(t.org.id, server("web1")).map(drop)
    ));
    let again = NewEnvironment::new("prod", "17.0", t.server_id);
    assert!(conflict(
        store
            .create_environment(t.org.id, t.project_id, again)
            .map(drop)
    ));
    // The same names are free in another organization.
    tenant(&store, "other");
}

#[test]
fn environments_validate_their_input_and_default_the_rest() {
    let store = Store::memory().unwrap();
    let t = tenant(&store, "acme");
    assert_eq!(
        (
            t.env.stage.as_str(),
            t.env.cpus,
            t.env.memory_mb,
            t.env.workers,
            t.env.http_port
        ),
        ("development", 1.0, 2048, 2, 8069)
    );
    assert!(!t.env.dev_mode && t.env.auto_deploy && !t.env.deployed);
    assert_eq!(t.env.webhook_secret.len(), 64);

    for bad in ["", "Prod", "1prod", "prod_1", "prod.1", &"a".repeat(41)] {
        let new = NewEnvironment::new(bad, "18.0", t.server_id);
        let result = store.create_environment(t.org.id, t.project_id, new);
        assert!(matches!(result, Err(StateError::Invalid(_))), "{bad:?}");
    }
    let mut new = NewEnvironment::new("qa", "18.0", t.server_id);
    new.stage = "qa".into();
    let result = store.create_environment(t.org.id, t.project_id, new);
    assert!(matches!(result, Err(StateError::Invalid(_))));

    let json: NewEnvironment = serde_json::from_value(
        json!({"name": "stage-2", "odoo_version": "17.0", "server_id": t.server_id, "stage": "staging"}),
    )
    .unwrap();
    let env = store
        .create_environment(t.org.id, t.project_id, json)
        .unwrap();
    assert_eq!((env.stage.as_str(), env.workers), ("staging", 2));

    store.set_deployed(env.id).unwrap();
    assert!(store.environment_by_id(env.id).unwrap().deployed);
}

#[test]
fn environment_settings_change_with_the_creation_checks_and_say_when_a_redeploy_is_due() {
    let store = Store::memory().unwrap();
    let t = tenant(&store, "acme");
    let other = tenant(&store, "other");
    let patch = |value| serde_json::from_value::<EnvironmentPatch>(value).unwrap();

    // Never deployed: every setting is taken at the first deploy, no redeploy is due.
    let change = store
        .update_environment(
            t.org.id,
            t.env.id,
            &patch(json!({"domain": "erp.example.com", "workers": 4, "auto_deploy": false})),
        )
        .unwrap();
    assert_eq!(change.changed, ["auto_deploy", "domain", "workers"]);
    assert!(!change.redeploy_needed && change.because.is_empty());
    let read = store.environment(t.org.id, t.env.id).unwrap();
    assert_eq!(read, change.environment);
    assert_eq!(
        (read.domain.as_deref(), read.workers, read.auto_deploy),
        (Some("erp.example.com"), 4, false)
    );
    // What was not named is as it was, the webhook secret included.
    assert_eq!(
        (read.memory_mb, read.branch, &read.webhook_secret),
        (t.env.memory_mb, None, &t.env.webhook_secret)
    );

    // Deployed: what the containers embody needs a redeploy, the branch and auto-deploy do not.
    store.set_deployed(t.env.id).unwrap();
    let change = store
        .update_environment(
            t.org.id,
            t.env.id,
            &patch(
                json!({"odoo_image": "odoo:18.0-custom", "workers": 4, "branch": "prod",
                          "auto_deploy": true}),
            ),
        )
        .unwrap();
    assert_eq!(change.changed, ["branch", "auto_deploy", "odoo_image"]);
    assert!(change.redeploy_needed);
    assert_eq!(change.because, ["odoo_image"]);
    let change = store
        .update_environment(t.org.id, t.env.id, &patch(json!({"branch": null})))
        .unwrap();
    assert_eq!(
        (change.changed, change.redeploy_needed),
        (vec!["branch"], false)
    );
    assert_eq!(change.environment.branch, None);
    // `null` goes back to the default; an unchanged value is no change.
    let change = store
        .update_environment(
            t.org.id,
            t.env.id,
            &patch(json!({"odoo_image": null, "workers": 4})),
        )
        .unwrap();
    assert_eq!(change.because, ["odoo_image"]);
    assert_eq!(change.environment.odoo_image, None);

    // The checks of creation, and nothing written when one fails.
    for bad in [
        json!({"cpus": 0.0}),
        json!({"memory_mb": 0}),
        json!({"http_port": 0}),
        json!({"domain": "not a domain"}),
        json!({"domain": "-x.example.com"}),
        json!({"odoo_image": ""}),
        json!({"branch": "two words"}),
        json!({"workers": 8, "cpus": -1.0}),
    ] {
        let result = store.update_environment(t.org.id, t.env.id, &patch(bad.clone()));
        assert!(matches!(result, Err(StateError::Invalid(_))), "{bad}");
    }
    assert_eq!(store.environment(t.org.id, t.env.id).unwrap().workers, 4);
    let mut new = NewEnvironment::new("bad-domain", "18.0", t.server_id);
    new.domain = Some("not a domain".into());
    let created = store.create_environment(t.org.id, t.project_id, new);
    assert!(matches!(created, Err(StateError::Invalid(_))));

    // An empty change, unknown and fixed fields, another organization's environment.
    let empty = store.update_environment(t.org.id, t.env.id, &EnvironmentPatch::default());
    assert!(matches!(empty, Err(StateError::Invalid(_))));
    for refused in [json!({"colour": "red"}), json!({"odoo_version": "18.0"})] {
        assert!(serde_json::from_value::<EnvironmentPatch>(refused).is_err());
    }
    let theirs = store.update_environment(other.org.id, t.env.id, &patch(json!({"workers": 1})));
    assert!(matches!(theirs, Err(StateError::NotFound(_))));
    assert_eq!(store.environment(t.org.id, t.env.id).unwrap().workers, 4);
}

#[test]
fn a_second_run_is_refused_while_one_is_active() {
    let store = Store::memory().unwrap();
    let t = tenant(&store, "acme");
    let first = store
        .create_run(t.env.id, "first-deploy", "api", json!({"a": 1}))
        .unwrap();
    assert_eq!(first.status, RunStatus::Queued);
    let busy = store.create_run(t.env.id, "redeploy", "webhook", json!({}));
    assert!(matches!(busy, Err(StateError::Busy { run_id }) if run_id == first.id));

    store.start_run(first.id).unwrap();
    let err = store
        .create_run(t.env.id, "redeploy", "webhook", json!({}))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("busy: run {} in progress", first.id)
    );

    store
        .finish_run(first.id, RunStatus::Succeeded, None)
        .unwrap();
    let second = store
        .create_run(t.env.id, "redeploy", "webhook", json!({}))
        .unwrap();
    let runs = store.runs(t.org.id, t.env.id, 10).unwrap();
    assert_eq!(
        runs.iter().map(|run| run.id).collect::<Vec<_>>(),
        [second.id, first.id]
    );
    let first = store.run_by_id(first.id).unwrap();
    assert_eq!(first.status, RunStatus::Succeeded);
    assert!(first.started_at.is_some() && first.finished_at.is_some());

    // Status changes are guarded.
    assert!(matches!(
        store.start_run(first.id),
        Err(StateError::Invalid(_))
    ));
    assert!(matches!(
        store.finish_run(second.id, RunStatus::Running, None),
        Err(StateError::Invalid(_))
    ));
    assert!(matches!(
        store.create_run(t.env.id + 100, "redeploy", "api", json!({})),
        Err(StateError::NotFound(_))
    ));
}

#[test]
fn a_restarted_control_plane_interrupts_unfinished_runs() {
    let store = Store::memory().unwrap();
    let a = tenant(&store, "a");
    let b = tenant(&store, "b");
    let c = tenant(&store, "c");

    let running = store
        .create_run(a.env.id, "restore", "api", json!({}))
        .unwrap();
    store.start_run(running.id).unwrap();
    store
        .plan_steps(
            running.id,
            &names(&["stop-odoo", "restore-data", "start-odoo"]),
        )
        .unwrap();
    store.step_started(running.id, 0).unwrap();
    store
        .step_finished(
            running.id,
            0,
            StepStatus::Done,
            Some("stopped"),
            None,
            Some(12),
        )
        .unwrap();
    store.step_started(running.id, 1).unwrap();
    store
        .set_current_step(running.id, Some("restore-data"))
        .unwrap();

    let queued = store
        .create_run(b.env.id, "backup", "cron", json!({}))
        .unwrap();
    let done = store
        .create_run(c.env.id, "backup", "cron", json!({}))
        .unwrap();
    store
        .finish_run(done.id, RunStatus::Failed, Some("boom"))
        .unwrap();

    let interrupted = store.interrupt_unfinished().unwrap();
    assert_eq!(
        interrupted.iter().map(|run| run.id).collect::<Vec<_>>(),
        [running.id]
    );
    assert_eq!(interrupted[0].status, RunStatus::Interrupted);
    assert_eq!(
        interrupted[0].error.as_deref(),
        Some("interrupted: the control plane stopped during step restore-data")
    );
    // A run that was waiting still waits: the queue is in the store, not in the control plane.
    assert_eq!(
        store.run_by_id(queued.id).unwrap().status,
        RunStatus::Queued
    );
    let statuses: Vec<_> = store
        .steps(running.id)
        .unwrap()
        .iter()
        .map(|s| s.status)
        .collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Done,
            StepStatus::Interrupted,
            StepStatus::Cancelled
        ]
    );
    assert_eq!(store.run_by_id(done.id).unwrap().status, RunStatus::Failed);
    assert!(store.interrupt_unfinished().unwrap().is_empty());

    // The environment is free again.
    store
        .create_run(a.env.id, "restore", "api", json!({}))
        .unwrap();
}

fn limits(total: u32, per_organization: u32) -> RunLimits {
    RunLimits {
        total,
        per_organization,
    }
}

/// Another environment of the tenant's project, on its server.
fn environment(store: &Store, t: &Tenant, name: &str) -> Environment {
    store
        .create_environment(
            t.org.id,
            t.project_id,
            NewEnvironment::new(name, "18.0", t.server_id),
        )
        .unwrap()
}

#[test]
fn one_organizations_burst_waits_behind_its_own_limit() {
    let store = Store::memory().unwrap();
    let greedy = tenant(&store, "greedy");
    let other = tenant(&store, "other");
    let mut burst = vec![greedy.env.clone()];
    burst.extend((0..5).map(|i| environment(&store, &greedy, &format!("e{i}"))));
    let burst: Vec<_> = burst
        .iter()
        .map(|env| {
            store
                .create_run(env.id, "first-deploy", "api", json!({}))
                .unwrap()
        })
        .collect();
    let late = store
        .create_run(other.env.id, "first-deploy", "api", json!({}))
        .unwrap();

    let two_each = limits(10, 2);
    let first = store.claim_next_run(two_each).unwrap().unwrap();
    assert_eq!(first.id, burst[0].id);
    assert_eq!(first.status, RunStatus::Running);
    // The organization running the fewest goes first: the other's run, although it came last.
    let second = store.claim_next_run(two_each).unwrap().unwrap();
    assert_eq!(second.id, late.id);
    let third = store.claim_next_run(two_each).unwrap().unwrap();
    assert_eq!(third.id, burst[1].id);
    // The greedy organization is at its limit.
    assert_eq!(store.claim_next_run(two_each).unwrap(), None);

    store
        .finish_run(first.id, RunStatus::Succeeded, None)
        .unwrap();
    assert_eq!(
        store.claim_next_run(two_each).unwrap().unwrap().id,
        burst[2].id
    );

    // The operator raises the organization's limit; the control plane's own limit still holds.
    store.set_concurrent_runs(greedy.org.id, Some(10)).unwrap();
    assert_eq!(store.concurrent_runs(greedy.org.id).unwrap(), Some(10));
    let total = limits(4, 2);
    assert_eq!(
        store.claim_next_run(total).unwrap().unwrap().id,
        burst[3].id
    );
    assert_eq!(
        store.claim_next_run(total).unwrap(),
        None,
        "4 running in all"
    );
    assert!(matches!(
        store.set_concurrent_runs(greedy.org.id, Some(0)),
        Err(StateError::Invalid(_))
    ));
}

#[test]
fn a_push_during_a_run_is_coalesced_into_one_follow_up() {
    let store = Store::memory().unwrap();
    let t = tenant(&store, "acme");
    let push = |commit: &str| {
        let new = NewRun {
            env_id: t.env.id,
            operation: "auto-deploy",
            trigger: "github",
            coalesce: true,
        };
        store.queue_run(new, |_| json!({ "commit": commit }))
    };
    let running = push("a").unwrap();
    assert!(matches!(running, Queued::New(_)));
    let running = running.run().clone();
    assert_eq!(
        store.claim_next_run(limits(10, 10)).unwrap().unwrap().id,
        running.id
    );

    // Pushes while it runs: one follow-up, carrying the newest push.
    let follow_up = push("b").unwrap();
    assert!(matches!(follow_up, Queued::New(_)));
    let again = push("c").unwrap();
    assert_eq!(
        again,
        Queued::Coalesced(store.run_by_id(follow_up.run().id).unwrap())
    );
    assert_eq!(
        store.run_inputs(follow_up.run().id).unwrap(),
        json!({ "commit": "c" })
    );
    assert_eq!(
        store.run_inputs(running.id).unwrap(),
        json!({ "commit": "a" })
    );

    // A manual run is still refused while the environment is busy, naming the running run.
    let busy = store.create_run(t.env.id, "redeploy", "api", json!({}));
    assert!(matches!(busy, Err(StateError::Busy { run_id }) if run_id == running.id));

    // The follow-up waits for the running run, then starts.
    assert_eq!(store.claim_next_run(limits(10, 10)).unwrap(), None);
    store
        .finish_run(running.id, RunStatus::Succeeded, None)
        .unwrap();
    let next = store.claim_next_run(limits(10, 10)).unwrap().unwrap();
    assert_eq!(next.id, follow_up.run().id);

    // A waiting run can be cancelled before it starts; a running one is not cancelled that way.
    let waiting = push("d").unwrap().run().clone();
    assert!(store.cancel_queued(waiting.id).unwrap());
    assert_eq!(
        store.run_by_id(waiting.id).unwrap().status,
        RunStatus::Cancelled
    );
    assert!(!store.cancel_queued(next.id).unwrap());
    assert!(store.queued_runs().unwrap().is_empty());
}

#[test]
fn steps_facts_events_audit_and_cancellation() {
    let store = Store::memory().unwrap();
    let t = tenant(&store, "acme");
    let run = store
        .create_run(t.env.id, "redeploy", "api", json!({"a": 1, "b": {"x": 1}}))
        .unwrap();

    store
        .plan_steps(run.id, &names(&["pull", "migrate", "restart"]))
        .unwrap();
    assert!(matches!(
        store.plan_steps(run.id, &names(&["again"])),
        Err(StateError::Conflict(_))
    ));
    store.step_started(run.id, 0).unwrap();
    store
        .step_finished(
            run.id,
            0,
            StepStatus::Skipped,
            Some("up to date"),
            None,
            Some(5),
        )
        .unwrap();
    assert!(matches!(
        store.step_finished(run.id, 1, StepStatus::Running, None, None, None),
        Err(StateError::Invalid(_))
    ));
    assert!(matches!(
        store.step_started(run.id, 9),
        Err(StateError::NotFound(_))
    ));
    assert!(!store.cancel_requested(run.id).unwrap());
    store.request_cancel(run.id).unwrap();
    assert!(store.cancel_requested(run.id).unwrap());
    assert_eq!(store.cancel_pending_steps(run.id).unwrap(), 2);
    let steps = store.steps(run.id).unwrap();
    assert_eq!((steps[0].position, steps[0].host_ms), (0, Some(5)));
    assert_eq!(steps[0].summary.as_deref(), Some("up to date"));
    assert!(
        steps[1..]
            .iter()
            .all(|step| step.status == StepStatus::Cancelled)
    );

    store
        .merge_facts(run.id, json!({"b": 2, "c": [3]}))
        .unwrap();
    assert_eq!(
        store.run_by_id(run.id).unwrap().facts,
        json!({"a": 1, "b": 2, "c": [3]})
    );
    assert!(matches!(
        store.merge_facts(run.id, json!([1])),
        Err(StateError::Invalid(_))
    ));

    let event = |message: &str| NewEvent {
        run_id: run.id,
        kind: EventKind::Log,
        level: Some("info".into()),
        step: Some("pull".into()),
        message: message.into(),
        data: json!({"n": message}),
    };
    let first = store.append_event(event("one")).unwrap();
    let second = store.append_event(event("two")).unwrap();
    assert!(second.id > first.id);
    assert_eq!(
        store.events(run.id, 0, 10).unwrap(),
        [first.clone(), second.clone()]
    );
    assert_eq!(store.events(run.id, first.id, 10).unwrap(), [second]);
    assert_eq!(store.events(run.id, 0, 1).unwrap(), [first]);
    let orphan = NewEvent {
        run_id: run.id + 100,
        ..event("lost")
    };
    assert!(matches!(
        store.append_event(orphan),
        Err(StateError::NotFound(_))
    ));

    let entry = berth_state::AuditEntry {
        run_id: Some(run.id),
        at: 42,
        plugin: "odoo".into(),
        capability: "docker".into(),
        call: "docker.run".into(),
        allowed: false,
        detail: "not granted".into(),
    };
    store.append_audit(entry.clone()).unwrap();
    assert_eq!(store.audit(run.id).unwrap(), [entry]);
}

#[test]
fn repositories_come_platform_then_organization_then_project() {
    let store = Store::memory().unwrap();
    let t = tenant(&store, "acme");
    let other = tenant(&store, "other");
    let repo = |level, organization_id, project_id, name: &str| NewRepository {
        level,
        organization_id,
        project_id,
        name: name.into(),
        url: format!("https://git.example/{name}.git"),
        branch: None,
    };
    use RepositoryLevel::{Organization, Platform, Project};
    let org = Some(t.org.id);
    let project = Some(t.project_id);
    store
        .add_repository(repo(Project, None, project, "shop"))
        .unwrap();
    store
        .add_repository(repo(Organization, org, None, "zeta-addons"))
        .unwrap();
    store
        .add_repository(repo(Platform, None, None, "oca-web"))
        .unwrap();
    store
        .add_repository(repo(Organization, org, None, "alpha-addons"))
        .unwrap();
    store
        .add_repository(repo(Platform, None, None, "berth-base"))
        .unwrap();
    store
        .add_repository(repo(Organization, Some(other.org.id), None, "theirs"))
        .unwrap();
    store
        .add_repository(repo(Project, None, Some(other.project_id), "their-shop"))
        .unwrap();

    let for_env = store.repositories_for(t.env.id).unwrap();
    let listed: Vec<_> = for_env.iter().map(|r| (r.level, r.name.as_str())).collect();
    assert_eq!(
        listed,
        [
            (Platform, "berth-base"),
            (Platform, "oca-web"),
            (Organization, "alpha-addons"),
            (Organization, "zeta-addons"),
            (Project, "shop"),
        ]
    );
    assert_eq!(for_env[0].branch.as_deref(), Some("main"));
    assert_eq!(for_env[4].branch, None);
    assert_eq!(for_env[4].organization_id, org);
    assert_eq!(store.repositories(t.org.id).unwrap(), for_env);

    let invalid = |new| matches!(store.add_repository(new), Err(StateError::Invalid(_)));
    assert!(invalid(repo(Platform, org, None, "x")));
    assert!(invalid(repo(Organization, None, None, "x")));
    assert!(invalid(repo(Organization, org, project, "x")));
    assert!(invalid(repo(Project, org, None, "x")));
    let foreign = store.add_repository(repo(Project, org, Some(other.project_id), "x"));
    assert!(matches!(foreign, Err(StateError::NotFound(_))));
    let duplicate = store.add_repository(repo(Platform, None, None, "oca-web"));
    assert!(matches!(duplicate, Err(StateError::Conflict(_))));

    let revisions = vec![
        (for_env[0].id, "abc".to_string()),
        (for_env[4].id, "def".into()),
    ];
    store.set_deployed_revisions(t.env.id, &revisions).unwrap();
    store
        .set_deployed_revisions(t.env.id, &revisions[1..])
        .unwrap();
    assert_eq!(store.deployed_revisions(t.env.id).unwrap(), &revisions[1..]);
}

#[test]
fn grants_cover_the_environments_inside_their_scope() {
    let store = Store::memory().unwrap();
    let t = tenant(&store, "acme");
    let other = tenant(&store, "other");
    let grant = |capability: &str, organization_id, project_id, environment_id| NewGrant {
        plugin: "backup".into(),
        capability: capability.into(),
        organization_id,
        project_id,
        environment_id,
        server_id: None,
    };
    store
        .add_grant(grant("platform", None, None, None))
        .unwrap();
    store
        .add_grant(grant("org", Some(t.org.id), None, None))
        .unwrap();
    let project = store
        .add_grant(grant("project", None, Some(t.project_id), None))
        .unwrap();
    assert_eq!(project.organization_id, Some(t.org.id));
    store
        .add_grant(grant("env", None, None, Some(t.env.id)))
        .unwrap();
    store
        .add_grant(grant("elsewhere", None, None, Some(other.env.id)))
        .unwrap();

    let covering = |env_id| -> Vec<String> {
        let mut caps: Vec<_> = store
            .grants_for(env_id)
            .unwrap()
            .into_iter()
            .map(|g| g.capability)
            .collect();
        caps.sort();
        caps
    };
    assert_eq!(covering(t.env.id), ["env", "org", "platform", "project"]);
    assert_eq!(covering(other.env.id), ["elsewhere", "platform"]);

    let mismatched = store.add_grant(grant("x", Some(other.org.id), None, Some(t.env.id)));
    assert!(matches!(mismatched, Err(StateError::Invalid(_))));
    let duplicate = store.add_grant(grant("org", Some(t.org.id), None, None));
    assert!(matches!(duplicate, Err(StateError::Conflict(_))));

    // A server's grant covers the environments on that server only, and names nothing narrower.
    let on_server = |org: i64, server: i64| NewGrant {
        server_id: Some(server),
        ..grant("ssh.exec", Some(org), None, None)
    };
    let second = store.create_server(t.org.id, server("web2")).unwrap().id;
    store.add_grant(on_server(t.org.id, second)).unwrap();
    assert_eq!(covering(t.env.id), ["env", "org", "platform", "project"]);
    let served = store.add_grant(on_server(t.org.id, t.server_id)).unwrap();
    assert_eq!(
        (served.organization_id, served.server_id),
        (Some(t.org.id), Some(t.server_id))
    );
    assert_eq!(
        covering(t.env.id),
        ["env", "org", "platform", "project", "ssh.exec"]
    );
    let foreign = store.add_grant(on_server(t.org.id, other.server_id));
    assert!(
        matches!(foreign, Err(StateError::NotFound(_))),
        "{foreign:?}"
    );
    let narrower = store.add_grant(NewGrant {
        environment_id: Some(t.env.id),
        ..on_server(t.org.id, t.server_id)
    });
    assert!(
        matches!(narrower, Err(StateError::Invalid(_))),
        "{narrower:?}"
    );
    store.remove_grant(served.id).unwrap();

    store.remove_grant(project.id).unwrap();
    assert_eq!(covering(t.env.id), ["env", "org", "platform"]);
    assert!(matches!(
        store.remove_grant(project.id),
        Err(StateError::NotFound(_))
    ));
}

#[test]
fn plugins_secrets_and_host_keys() {
    let store = Store::memory().unwrap();
    let t = tenant(&store, "acme");
    let other = tenant(&store, "other");
    let plugin = |name: &str, organization_id| NewPlugin {
        name: name.into(),
        organization_id,
        role: "lifecycle".into(),
        version: "1.0.0".into(),
        sha256: "00".repeat(32),
        path: format!("plugins/{name}.wasm"),
        enabled: true,
    };
    store.register_plugin(plugin("odoo", None)).unwrap();
    store
        .register_plugin(plugin("mine", Some(t.org.id)))
        .unwrap();
    store
        .register_plugin(plugin("theirs", Some(other.org.id)))
        .unwrap();
    let visible: Vec<_> = store
        .plugins(t.org.id)
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(visible, ["mine", "odoo"]);
    let duplicate = store.register_plugin(plugin("odoo", None));
    assert!(matches!(duplicate, Err(StateError::Conflict(_))));

    store.set_secret(t.env.id, "db_password", "one").unwrap();
    store.set_secret(t.env.id, "admin_password", "two").unwrap();
    store.set_secret(t.env.id, "db_password", "three").unwrap();
    assert_eq!(
        store.secret(t.env.id, "db_password").unwrap().as_deref(),
        Some("three")
    );
    assert_eq!(store.secret(t.env.id, "missing").unwrap(), None);
    assert_eq!(
        store.secrets(t.env.id).unwrap(),
        [
            ("admin_password".into(), "two".into()),
            ("db_password".into(), "three".into())
        ]
    );
    assert!(store.secrets(other.env.id).unwrap().is_empty());

    // The first contact pins; a later one is answered the pin, never replaces it.
    assert_eq!(store.server(t.org.id, t.server_id).unwrap().host_key, None);
    let first = "ssh-ed25519 AAAAC3Nza first";
    assert_eq!(store.pin_host_key(t.server_id, first).unwrap(), first);
    assert_eq!(
        store
            .pin_host_key(t.server_id, "ssh-ed25519 AAAAC3Nza second")
            .unwrap(),
        first
    );
    let pinned = store.server(t.org.id, t.server_id).unwrap();
    assert_eq!(pinned.host_key.as_deref(), Some(first));
    assert_eq!((pinned.port, pinned.user.as_str()), (22, "root"));
    assert_eq!(
        store
            .server(other.org.id, other.server_id)
            .unwrap()
            .host_key,
        None
    );
    assert!(matches!(
        store.pin_host_key(999, "k"),
        Err(StateError::NotFound(_))
    ));
    // Its organization replaces or forgets the pin; another organization cannot name it.
    let replaced = store
        .set_host_key(t.org.id, t.server_id, Some("ssh-ed25519 AAAAC3Nza rebuilt"))
        .unwrap();
    assert_eq!(
        replaced.host_key.as_deref(),
        Some("ssh-ed25519 AAAAC3Nza rebuilt")
    );
    assert!(matches!(
        store.set_host_key(other.org.id, t.server_id, None),
        Err(StateError::NotFound(_))
    ));
    let forgotten = store.set_host_key(t.org.id, t.server_id, None).unwrap();
    assert_eq!(forgotten.host_key, None);
}

#[test]
fn types_serialise_as_the_api_returns_them() {
    let store = Store::memory().unwrap();
    let t = tenant(&store, "acme");
    let run = store
        .create_run(t.env.id, "redeploy", "api", json!({}))
        .unwrap();
    let value = serde_json::to_value(&run).unwrap();
    assert_eq!(value["status"], "queued");
    assert_eq!(value["trigger"], "api");
    assert_eq!(
        serde_json::to_value(StepStatus::Interrupted).unwrap(),
        "interrupted"
    );
    assert_eq!(
        serde_json::to_value(RepositoryLevel::Organization).unwrap(),
        "organization"
    );
    assert_eq!("running".parse::<RunStatus>().unwrap(), RunStatus::Running);
    assert!(matches!(
        "sleeping".parse::<RunStatus>(),
        Err(StateError::Invalid(_))
    ));
}

#[test]
fn storage_targets_keep_their_secret_and_backups_are_listed_newest_first() {
    let store = Store::memory().unwrap();
    let org = store.create_organization("acme").unwrap().id;
    let target = store
        .create_storage_target(
            org,
            serde_json::from_value(serde_json::json!({
                "name": "offsite", "backend": "s3", "user": "AKIA",
                "secret": "s3cr3t", "settings": {"provider": "r2", "bucket": "b"}
            }))
            .unwrap(),
        )
        .unwrap();
    let shown = serde_json::to_string(&store.storage_targets(org).unwrap()).unwrap();
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert_eq!(store.storage_target_secret(target.id).unwrap(), "s3cr3t");
    // An SFTP server's host key is pinned on the target, once.
    assert_eq!(target.host_key, None);
    let key = "ssh-ed25519 AAAAC3Nza sftp";
    assert_eq!(
        store.pin_storage_target_host_key(target.id, key).unwrap(),
        key
    );
    assert_eq!(
        store
            .pin_storage_target_host_key(target.id, "ssh-ed25519 AAAAC3Nza other")
            .unwrap(),
        key
    );
    assert_eq!(
        store
            .storage_target(org, "offsite")
            .unwrap()
            .host_key
            .as_deref(),
        Some(key)
    );
    let bad = serde_json::json!({"name": "x", "backend": "dropbox", "user": "u", "secret": "s"});
    assert!(matches!(
        store.create_storage_target(org, serde_json::from_value(bad).unwrap()),
        Err(StateError::Invalid(_))
    ));
}

#[test]
fn a_grant_request_waits_for_one_decision_and_an_approval_makes_the_grant() {
    let store = Store::memory().unwrap();
    let t = tenant(&store, "acme");
    let other = tenant(&store, "other");
    let ask = |capability: &str, environment_id, server_id| berth_state::NewGrantRequest {
        organization_id: t.org.id,
        plugin: "gate".into(),
        capability: capability.into(),
        environment_id,
        server_id,
    };
    let docker = store
        .request_grant(ask("docker", Some(t.env.id), None))
        .unwrap();
    assert_eq!(docker.status, berth_state::GrantRequestStatus::Pending);
    let again = store
        .request_grant(ask("docker", Some(t.env.id), None))
        .unwrap();
    assert_eq!(again.id, docker.id, "one pending request of a grant");
    let shell = store
        .request_grant(ask("ssh.shell", None, Some(t.server_id)))
        .unwrap();
    // Another organization's environment or server cannot be named.
    assert!(matches!(
        store.request_grant(ask("docker", Some(other.env.id), None)),
        Err(StateError::NotFound(_))
    ));
    assert!(matches!(
        store.request_grant(ask("ssh.exec", None, Some(other.server_id))),
        Err(StateError::NotFound(_))
    ));

    let (approved, grant) = store.approve_grant_request(docker.id).unwrap();
    assert_eq!(approved.status, berth_state::GrantRequestStatus::Approved);
    assert_eq!(approved.grant_id, Some(grant.id));
    assert_eq!(grant.environment_id, Some(t.env.id));
    assert!(
        store
            .grants_for(t.env.id)
            .unwrap()
            .iter()
            .any(|g| g.capability == "docker")
    );
    let denied = store
        .deny_grant_request(shell.id, Some("not on this server"))
        .unwrap();
    assert_eq!(denied.reason.as_deref(), Some("not on this server"));
    for decided in [docker.id, shell.id] {
        assert!(matches!(
            store.approve_grant_request(decided),
            Err(StateError::Conflict(_))
        ));
        assert!(matches!(
            store.deny_grant_request(decided, None),
            Err(StateError::Conflict(_))
        ));
    }
    // Asked again after a decision: a new request.
    let renewed = store
        .request_grant(ask("docker", Some(t.env.id), None))
        .unwrap();
    assert_ne!(renewed.id, docker.id);
    // A grant made meanwhile is linked, not duplicated.
    let (_, same) = store.approve_grant_request(renewed.id).unwrap();
    assert_eq!(same.id, grant.id);

    let own = store.grant_requests(Some(t.org.id), None).unwrap();
    assert_eq!(own.len(), 3);
    assert!(
        store
            .grant_requests(Some(other.org.id), None)
            .unwrap()
            .is_empty()
    );
    let pending = Some(berth_state::GrantRequestStatus::Pending);
    assert!(store.grant_requests(None, pending).unwrap().is_empty());
}

#[test]
fn uploads_are_counted_per_organization_within_the_hour() {
    let store = Store::memory().unwrap();
    let t = tenant(&store, "acme");
    let other = tenant(&store, "other");
    let two = |w: &berth_state::UploadWindow| w.uploads < 2;
    for expected in 0..2 {
        let (window, counted) = store.count_upload(t.org.id, 1000, two).unwrap();
        assert!(counted);
        assert_eq!(
            (window.uploads, window.bytes),
            (expected, u64::from(expected) * 1000)
        );
    }
    let (window, counted) = store.count_upload(t.org.id, 1000, two).unwrap();
    assert!(!counted, "the third is refused");
    assert_eq!((window.uploads, window.bytes), (2, 2000));
    assert!(window.oldest_at.is_some());
    let (_, counted) = store.count_upload(t.org.id, 1000, two).unwrap();
    assert!(!counted, "a refused upload is not counted");
    let (window, counted) = store.count_upload(other.org.id, 1000, two).unwrap();
    assert!(
        counted && window.uploads == 0,
        "another organization's count is its own"
    );

    assert_eq!(
        store.upload_quota(t.org.id).unwrap(),
        berth_state::UploadQuota::default()
    );
    let quota = berth_state::UploadQuota {
        max_plugins: Some(3),
        uploads_per_hour: None,
        upload_mib_per_hour: Some(5),
    };
    store.set_upload_quota(t.org.id, &quota).unwrap();
    assert_eq!(store.upload_quota(t.org.id).unwrap(), quota);
}
