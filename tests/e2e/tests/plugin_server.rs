//! Plugins using `ssh` and `docker` through the sandbox, against a real server: what a grant
//! allows, for which environment, and what reaches the run log.

use berth_e2e::server::Env;
use berth_e2e::{Harness, component};
use berth_runtime::{Grant, Runtime, RuntimeOptions, Scope, ServerAccess, Verdict, WitError};

/// A harness whose run is about `env` on test server 1, with `grants` for `grant_env`.
fn harness(env: &str, grant_env: &str, grants: &[&str], server: &Env) -> Harness {
    let mut h = Harness::new(env, "misbehave", &[]);
    h.invocation.grants = Harness::new(grant_env, "misbehave", grants)
        .invocation
        .grants
        .clone();
    h.lend(std::sync::Arc::new(ServerAccess {
        pool: server.pool.clone(),
        target: server.target.clone(),
        database: None,
    }));
    h
}

async fn run(
    h: &Harness,
    point: &str,
    payload: &str,
) -> Result<Verdict, berth_runtime::InvokeError> {
    let rt = Runtime::new(RuntimeOptions::default()).unwrap();
    let plugin = rt.load_file(&component("misbehave")).await.unwrap();
    plugin
        .handle(&rt, &h.invocation, &h.event(point, payload))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_plugin_runs_an_argv_on_its_environments_server() {
    let server = Env::new("staging");
    let h = harness("staging", "staging", &["ssh.exec"], &server);
    let verdict = run(&h, "before:ssh", "printf\n%s|%s\nhello world\n$(id)").await;
    assert!(matches!(verdict.unwrap(), Verdict::Continue));
    let messages = h.log.messages();
    assert!(
        messages.contains(&"hello world|$(id)".to_string()),
        "streamed output in the run log: {messages:?}"
    );
    assert!(
        messages.contains(&"exit 0: hello world|$(id)".to_string()),
        "{messages:?}"
    );
    let records = h.audit.records();
    assert_eq!(records.len(), 1);
    assert!(
        records[0].allowed
            && records[0].call == "ssh.exec"
            && records[0].scope == "acme/shop/staging"
    );

    // A failing command is data for the plugin, not an error.
    let h = harness("staging", "staging", &["ssh.exec"], &server);
    run(&h, "before:ssh", "sh\n-c\nexit 7").await.unwrap();
    assert!(
        h.log.messages().contains(&"exit 7: ".to_string()),
        "{:?}",
        h.log.messages()
    );
}

/// A hook granted `ssh.exec` for one environment once read a sibling environment's `odoo.conf`
/// on the same server: `ssh.exec` runs as the server's SSH user. It is server-wide: a grant of it
/// for an environment opens nothing, and a grant for a server opens it on that server's runs only
/// (whichever environment they are about — which is what it always was).
#[tokio::test(flavor = "multi_thread")]
async fn ssh_exec_counts_only_when_granted_for_the_runs_server() {
    let server = Env::new("staging");
    let with = |scope: Scope| {
        let mut h = harness("staging", "staging", &[], &server);
        h.invocation.grants = std::sync::Arc::new(vec![Grant {
            plugin: "misbehave".into(),
            capability: berth_runtime::Capability::SSH_EXEC,
            scope,
        }]);
        h
    };
    for (case, scope) in [
        (
            "its environment",
            Scope::environment("acme", "shop", "staging"),
        ),
        ("its organization", Scope::organization("acme")),
        ("another server", Scope::server("acme", "server-2")),
    ] {
        let h = with(scope);
        match run(&h, "before:ssh", "{}")
            .await
            .unwrap_err()
            .plugin_error()
        {
            Some(WitError::Denied(msg)) => {
                assert!(msg.contains("server-wide"), "{case}: {msg}")
            }
            other => panic!("{case}: expected denied, got {other:?}"),
        }
        let records = h.audit.records();
        assert_eq!((records.len(), records[0].allowed), (1, false), "{case}");
    }
    let server_name = berth_e2e::environment("staging").server.name;
    let h = with(Scope::server("acme", &server_name));
    assert!(matches!(
        run(&h, "before:ssh", "{}").await.unwrap(),
        Verdict::Continue
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn blobs_travel_to_the_server_and_back_without_entering_the_plugin() {
    let server = Env::new("staging");
    let denied = harness("staging", "staging", &["ssh.exec"], &server);
    let outcome = run(&denied, "before:ssh-files", "{}").await;
    assert!(
        matches!(
            outcome.unwrap_err().plugin_error(),
            Some(WitError::Denied(_))
        ),
        "ssh.files is its own grant"
    );

    let h = harness("staging", "staging", &["ssh.files"], &server);
    assert!(matches!(
        run(&h, "before:ssh-files", "{}").await.unwrap(),
        Verdict::Continue
    ));
    assert_eq!(
        h.log.messages(),
        ["round trip of 17 bytes, identical: true"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_needs_its_grant_and_keeps_plugins_inside_the_fence() {
    let server = Env::new("staging");
    let without = harness("staging", "staging", &["ssh.exec"], &server);
    let outcome = run(&without, "before:docker-list", "{}").await;
    match outcome.unwrap_err().plugin_error() {
        Some(WitError::Denied(msg)) => assert!(msg.contains("capability `docker`"), "{msg}"),
        other => panic!("expected denied, got {other:?}"),
    }

    let h = harness("staging", "staging", &["docker"], &server);
    assert!(matches!(
        run(&h, "before:docker-list", "{}").await.unwrap(),
        Verdict::Continue
    ));
    assert_eq!(h.log.messages(), ["containers: 0"]);

    let h = harness("staging", "staging", &["docker"], &server);
    let outcome = run(&h, "before:docker-mount-root", "{}").await;
    match outcome.unwrap_err().plugin_error() {
        // Refused as a hook's writable bind mount, before the fence would refuse "/" itself.
        Some(WitError::Denied(msg)) => {
            assert!(msg.contains("\"/\"") && msg.contains("read-only"), "{msg}")
        }
        other => panic!("expected the mount to be refused, got {other:?}"),
    }
}
