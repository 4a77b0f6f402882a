//! The sandbox holds: each misbehaving plugin is stopped with a precise error, the host survives and
//! keeps serving, grants decide every capability-bound call, and every decision is audited.

use std::time::Duration;

use berth_e2e::{Harness, component};
use berth_runtime::limits::LimitExceeded;
use berth_runtime::plugin::PluginError;
use berth_runtime::{
    InvokeError, Plugin, Registry, Runtime, RuntimeOptions, Verdict, WitError, Workspace,
};

fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions::default()).expect("a runtime")
}

async fn load(rt: &Runtime, name: &str) -> Plugin {
    rt.load_file(&component(name))
        .await
        .unwrap_or_else(|e| panic!("{name} loads: {e}"))
}

/// Runs `point` of the hook plugin `name` with `grants` and returns the outcome.
async fn hook(
    name: &str,
    point: &str,
    grants: &[&str],
    tweak: impl FnOnce(&mut Harness),
) -> (Result<Verdict, InvokeError>, Harness) {
    let rt = runtime();
    let plugin = load(&rt, name).await;
    let mut h = Harness::new("staging", name, grants);
    tweak(&mut h);
    let event = h.event(point, "{}");
    (plugin.handle(&rt, &h.invocation, &event).await, h)
}

/// Runs `point` of the misbehave plugin with `grants` and returns the outcome.
async fn misbehave(
    point: &str,
    grants: &[&str],
    tweak: impl FnOnce(&mut Harness),
) -> (Result<Verdict, InvokeError>, Harness) {
    hook("misbehave", point, grants, tweak).await
}

fn limit_of(outcome: &Result<Verdict, InvokeError>) -> &LimitExceeded {
    match outcome {
        Err(InvokeError::Limit { limit, .. }) => limit,
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_loads_runs_logs_and_continues() {
    let rt = runtime();
    let plugin = load(&rt, "hello_hook").await;
    let d = plugin.description();
    assert_eq!(
        (d.name.as_str(), d.version.as_str()),
        ("hello-hook", "0.1.0")
    );
    assert_eq!(plugin.wit_version(), "0.2.0");
    assert!(d.subscribes_to("before:health-check"));

    let h = Harness::new("staging", "hello-hook", &[]);
    let verdict = plugin
        .handle(&rt, &h.invocation, &h.event("before:health-check", "{}"))
        .await;
    assert!(matches!(verdict.unwrap(), Verdict::Continue));
    assert_eq!(
        h.log.messages(),
        ["hello from staging (before:health-check)"]
    );
    assert!(h.audit.records().is_empty(), "log and config need no grant");
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_comes_from_settings_over_declared_defaults() {
    let rt = runtime();
    let plugin = load(&rt, "hello_hook").await;
    let mut h = Harness::new("staging", "hello-hook", &[]);
    let settings: berth_runtime::Settings =
        toml_settings("[plugins.hello-hook.config]\ngreeting = \"ahoy\"\n");
    h.lend(std::sync::Arc::new(settings));
    plugin
        .handle(&rt, &h.invocation, &h.event("before:health-check", "{}"))
        .await
        .unwrap();
    assert_eq!(
        h.log.messages(),
        ["ahoy from staging (before:health-check)"]
    );
}

fn toml_settings(text: &str) -> berth_runtime::Settings {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    std::fs::write(&path, text).unwrap();
    berth_runtime::Settings::load(&path).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_loaded_twice_from_the_cache_is_not_recompiled_and_answers_the_same() {
    let cache = tempfile::tempdir().unwrap();
    let options = RuntimeOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    let mut answers = Vec::new();
    for round in 0..2 {
        let rt = Runtime::new(options.clone()).unwrap();
        let plugin = load(&rt, "hello_hook").await;
        let stats = rt.stats();
        let (compiled, cached) = (
            stats.compiled.load(std::sync::atomic::Ordering::Relaxed),
            stats
                .loaded_from_cache
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        if round == 0 {
            assert_eq!((compiled, cached, plugin.from_cache()), (1, 0, false));
        } else {
            assert_eq!(
                (compiled, cached, plugin.from_cache()),
                (0, 1, true),
                "second start reads the cache"
            );
        }
        let h = Harness::new("staging", "hello-hook", &[]);
        let verdict = plugin
            .handle(&rt, &h.invocation, &h.event("before:health-check", "{}"))
            .await
            .unwrap();
        answers.push((verdict, h.log.messages()));
    }
    assert_eq!(format!("{:?}", answers[0]), format!("{:?}", answers[1]));
    assert_eq!(
        std::fs::read_dir(cache.path()).unwrap().count(),
        1,
        "one cache entry"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_infinite_loop_is_stopped_at_the_deadline_and_the_host_carries_on() {
    let rt = runtime();
    let plugin = load(&rt, "misbehave").await;
    let hello = load(&rt, "hello_hook").await;
    let mut spin = Harness::new("staging", "misbehave", &[]);
    spin.invocation.limits.deadline = Duration::from_millis(300);
    let calm = Harness::new("staging", "hello-hook", &[]);

    // The loop and a well-behaved hook run at the same time; the loop does not hold the other up.
    let (spin_event, calm_event) = (
        spin.event("before:spin", "{}"),
        calm.event("before:health-check", "{}"),
    );
    let (looped, fine) = tokio::join!(
        plugin.handle(&rt, &spin.invocation, &spin_event),
        hello.handle(&rt, &calm.invocation, &calm_event),
    );
    match looped {
        Err(InvokeError::Timeout { plugin, after }) => {
            assert_eq!(plugin, "misbehave@0.1.0");
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(matches!(fine.unwrap(), Verdict::Continue));
    // The same loaded plugin still serves new invocations.
    let again = Harness::new("staging", "misbehave", &[]);
    let ok = plugin
        .handle(&rt, &again.invocation, &again.event("on-failure", "{}"))
        .await;
    assert!(matches!(ok.unwrap(), Verdict::Continue));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_bomb_is_trapped_at_the_cap() {
    let (outcome, _) = misbehave("before:hog-memory", &[], |h| {
        h.invocation.limits.memory = 32 << 20
    })
    .await;
    match limit_of(&outcome) {
        LimitExceeded::Memory { desired, limit } => {
            assert_eq!(*limit, 32 << 20);
            assert!(desired > limit);
        }
        other => panic!("expected the memory limit, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ungranted_import_gets_denied_and_is_audited() {
    let (outcome, h) = misbehave("before:touch-files", &[], |_| {}).await;
    match outcome {
        Err(InvokeError::Plugin {
            error: WitError::Denied(msg),
            ..
        }) => assert!(
            msg.contains("files.write needs capability `files`"),
            "{msg}"
        ),
        other => panic!("expected denied, got {other:?}"),
    }
    let records = h.audit.records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (
            r.plugin.as_str(),
            r.capability.as_str(),
            r.call.as_str(),
            r.scope.as_str(),
            r.run.as_str(),
            r.allowed
        ),
        (
            "misbehave@0.1.0",
            "files",
            "files.write",
            "acme/shop/staging",
            "run-1",
            false
        )
    );
    assert!(
        std::fs::read_dir(h.workspace.path())
            .unwrap()
            .next()
            .is_none(),
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_workspace_is_usable_and_nothing_outside_it_is() {
    let (outcome, h) = misbehave("before:touch-files", &["files"], |_| {}).await;
    assert!(matches!(outcome.unwrap(), Verdict::Continue));
    let written = std::fs::read_to_string(h.workspace.path().join("notes/hello.txt")).unwrap();
    assert_eq!(written, "written by misbehave");
    let messages = h.log.messages();
    assert!(messages[0] == "read back 20 bytes", "{messages:?}");
    assert!(
        messages[1].starts_with("escape refused: Error::Invalid"),
        "{messages:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_for_another_environment_does_not_count() {
    let rt = runtime();
    let plugin = load(&rt, "misbehave").await;
    // `files` granted for production; the run is about staging.
    let mut h = Harness::new("staging", "misbehave", &[]);
    let production = Harness::new("production", "misbehave", &["files"]);
    h.invocation.grants = production.invocation.grants.clone();
    let outcome = plugin
        .handle(&rt, &h.invocation, &h.event("before:touch-files", "{}"))
        .await;
    assert!(matches!(
        outcome.unwrap_err().plugin_error(),
        Some(WitError::Denied(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_need_their_own_grant_and_never_reach_the_log() {
    let (denied, _) = misbehave("before:read-secret", &[], |_| {}).await;
    assert!(matches!(
        denied.unwrap_err().plugin_error(),
        Some(WitError::Denied(_))
    ));

    let (allowed, h) = misbehave("before:read-secret", &["secret:token"], |h| {
        h.lend(std::sync::Arc::new(toml_settings(
            "[secrets]\ntoken = \"hunter22\"\n",
        )));
    })
    .await;
    assert!(matches!(allowed.unwrap(), Verdict::Continue));
    assert_eq!(h.log.messages(), ["the token has 8 characters"]);
    let records = h.audit.records();
    assert_eq!(records.len(), 1);
    assert!(records[0].allowed && records[0].capability == "secret:token");
    assert!(
        !format!("{:?}", h.invocation.lent::<berth_runtime::Settings>()).contains("hunter22"),
        "secrets are redacted in Debug"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logging_far_more_than_allowed_is_cut_off() {
    let (outcome, h) = misbehave("before:flood-log", &[], |_| {}).await;
    assert_eq!(*limit_of(&outcome), LimitExceeded::Log(1 << 20));
    let logged: usize = h.log.messages().iter().map(String::len).sum();
    assert!(
        logged <= 1 << 20,
        "the log holds at most the budget ({logged} bytes)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn printing_far_more_than_allowed_is_cut_off() {
    let (outcome, h) = misbehave("before:flood-stdout", &[], |_| {}).await;
    assert_eq!(
        *limit_of(&outcome),
        LimitExceeded::Output {
            stream: "stdout",
            limit: 64 << 10
        }
    );
    let printed: usize = h.log.messages().iter().map(String::len).sum();
    assert!(
        printed <= 64 << 10,
        "stdout reached the run log, bounded ({printed} bytes)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn returning_far_more_than_allowed_is_refused() {
    let (outcome, _) = misbehave("before:big-answer", &[], |_| {}).await;
    assert_eq!(
        *limit_of(&outcome),
        LimitExceeded::Returned {
            what: "an abort reason",
            size: 1 << 20,
            limit: 64 << 10
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_calls_and_host_resources_are_budgeted() {
    let (calls, _) = misbehave("before:hostcalls", &[], |h| {
        h.invocation.limits.hostcalls = 5_000
    })
    .await;
    assert_eq!(*limit_of(&calls), LimitExceeded::Hostcalls(5_000));
    let (blobs, _) = misbehave("before:hoard-blobs", &[], |h| {
        h.invocation.limits.resources = 100
    })
    .await;
    assert_eq!(*limit_of(&blobs), LimitExceeded::Resources(100));
}

/// Gives the harness's workspace a disk quota of `quota` bytes.
fn workspace_quota(h: &mut Harness, quota: u64) {
    let workspace = Workspace::with_quota(h.workspace.path(), quota);
    h.lend(std::sync::Arc::new(workspace));
}

/// Asserts `outcome` is the quota of `limit` bytes on `what` (`memory` or `disk`).
fn over_quota(outcome: &Result<Verdict, InvokeError>, what: &str, limit: u64) {
    match limit_of(outcome) {
        LimitExceeded::Quota(quota) => {
            assert_eq!(quota.limit, limit, "{quota:?}");
            assert!(quota.what.starts_with(what), "{quota:?}");
        }
        other => panic!("expected the {what} quota, got {other}"),
    }
}

/// A hook capped at 64 MiB of memory once held ~1 GiB of host memory as 1,000 blobs of 1 MiB.
#[tokio::test(flavor = "multi_thread")]
async fn a_hook_hoarding_blobs_in_host_memory_is_stopped_at_its_memory_cap() {
    let (outcome, _) = hook("glutton", "before:hoard-megabytes", &[], |h| {
        h.invocation.limits.memory = 32 << 20
    })
    .await;
    match limit_of(&outcome) {
        // The blobs and the plugin's own memory share the cap: whichever asked last is refused.
        LimitExceeded::Memory { limit, .. } => assert_eq!(*limit, 32 << 20),
        _ => over_quota(&outcome, "memory", 32 << 20),
    }
}

/// One blob once spilled 1 GiB to a temporary file outside the workspace, bounded only by 64 GiB.
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_spilling_without_end_is_stopped_at_the_workspace_quota() {
    let (outcome, h) = hook("glutton", "before:spill-blob", &[], |h| {
        workspace_quota(h, 16 << 20)
    })
    .await;
    over_quota(&outcome, "disk", 16 << 20);
    assert_eq!(
        std::fs::read_dir(h.workspace.path()).unwrap().count(),
        0,
        "the spill was an unnamed file of the workspace, gone with the blob"
    );
}

/// A plugin granted `files` once wrote 1 GiB into its workspace: no quota held it.
#[tokio::test(flavor = "multi_thread")]
async fn a_hook_filling_its_workspace_is_stopped_at_the_quota() {
    let (outcome, h) = hook("glutton", "before:fill-workspace", &["files"], |h| {
        workspace_quota(h, 16 << 20)
    })
    .await;
    over_quota(&outcome, "disk", 16 << 20);
    let written = std::fs::read_dir(h.workspace.path().join("fill"))
        .unwrap()
        .count();
    assert!(
        written < 16,
        "{written} files of 1 MiB in a 16 MiB workspace"
    );
}

/// A tar entry with a 512 MiB GNU long name was once read whole into host memory (~860 MiB RSS).
#[tokio::test(flavor = "multi_thread")]
async fn a_tar_announcing_a_huge_long_name_is_refused_unread() {
    let (outcome, _) = hook("glutton", "before:long-name", &[], |_| {}).await;
    match outcome {
        Err(InvokeError::Plugin {
            error: WitError::Failed(message),
            ..
        }) => assert!(
            message.contains("a long name of 536870912 bytes, over the limit of 4096 bytes"),
            "{message}"
        ),
        other => panic!("expected the archive refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primitive_without_a_server_answers_unsupported_after_the_grant_check() {
    let (denied, h) = misbehave("before:ssh", &[], |_| {}).await;
    assert!(matches!(
        denied.unwrap_err().plugin_error(),
        Some(WitError::Denied(_))
    ));
    assert!(!h.audit.records()[0].allowed);
    let (unsupported, h) = misbehave("before:ssh", &["ssh.exec"], |_| {}).await;
    match unsupported.unwrap_err().plugin_error() {
        Some(WitError::Unsupported(msg)) => assert_eq!(msg, "ssh.exec: this run has no server"),
        other => panic!("expected unsupported, got {other:?}"),
    }
    assert!(
        h.audit.records()[0].allowed,
        "the allowed attempt is audited too"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_is_a_trap_that_names_the_panic() {
    let (outcome, h) = misbehave("before:panic", &[], |_| {}).await;
    match outcome {
        Err(InvokeError::Trap { plugin, message }) => {
            assert_eq!(plugin, "misbehave@0.1.0");
            assert!(message.contains("unreachable"), "{message}");
            assert!(
                message.contains("misbehave panicked on purpose"),
                "{message}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(
        h.log
            .messages()
            .iter()
            .any(|m| m == "misbehave panicked on purpose"),
        "stderr reached the run log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn files_that_are_not_plugins_are_refused_precisely() {
    let rt = runtime();
    let core_module = b"\0asm\x01\0\0\0";
    match rt.load(core_module).await {
        Err(PluginError::NotAComponent(msg)) => assert!(msg.contains("core module"), "{msg}"),
        other => panic!("expected not-a-component, got {other:?}"),
    }
    match rt.load(b"#!/bin/sh\necho pwned\n").await {
        Err(PluginError::NotAComponent(msg)) => assert!(msg.contains("magic bytes"), "{msg}"),
        other => panic!("expected not-a-component, got {other:?}"),
    }
    let mut truncated = std::fs::read(component("hello_hook")).unwrap();
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(
        rt.load(&truncated).await,
        Err(PluginError::Compile(_))
    ));
    match rt.load_file(&component("alien")).await {
        Err(PluginError::UnknownWorld(msg)) => assert!(msg.contains("frobnicate"), "{msg}"),
        other => panic!("expected unknown world, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lifecycle_plugin_is_recognised_by_its_world_and_is_not_a_hook() {
    let rt = runtime();
    let plugin = load(&rt, "steps").await;
    assert_eq!(plugin.description().role, berth_runtime::Role::Lifecycle);
    assert!(
        plugin
            .exports()
            .iter()
            .any(|e| e == "berth:plugin/lifecycle-steps@0.2.0")
    );
    let h = Harness::new("staging", "steps", &[]);
    let outcome = plugin
        .handle(&rt, &h.invocation, &h.event("on-failure", "{}"))
        .await;
    assert_eq!(
        outcome.unwrap_err().to_string(),
        "steps@0.1.0: is a lifecycle plugin, not a hook plugin"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_directory_loads_the_good_and_reports_the_bad() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["hello_hook", "misbehave", "alien"] {
        std::fs::copy(component(name), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    std::fs::write(dir.path().join("junk.wasm"), b"not wasm at all").unwrap();
    std::fs::write(dir.path().join("README.txt"), b"ignored").unwrap();
    let rt = runtime();
    let (registry, failures) = Registry::load_dir(&rt, dir.path()).await.unwrap();
    let names: Vec<&str> = registry.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["hello-hook", "misbehave"]);
    let failed: Vec<(String, String)> = failures
        .iter()
        .map(|f| {
            (
                f.path.file_name().unwrap().to_string_lossy().into_owned(),
                f.error.to_string(),
            )
        })
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0].0, "alien.wasm");
    assert!(failed[0].1.starts_with("unknown world"), "{failed:?}");
    assert_eq!(failed[1].0, "junk.wasm");
    assert!(
        failed[1].1.contains("not a WebAssembly component"),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_run_in_priority_order_and_stop_at_the_first_abort() {
    let rt = runtime();
    let mut registry = Registry::default();
    registry.insert(load(&rt, "hello_hook").await).unwrap();
    registry.insert(load(&rt, "misbehave").await).unwrap();
    assert!(matches!(
        registry.insert(load(&rt, "misbehave").await),
        Err(PluginError::Duplicate(_))
    ));

    let h = Harness::new("staging", "-", &[]);
    let mut event = h.event("on-failure", "{}");
    event.failure = Some("health check failed".into());
    let outcome = registry.dispatch(&rt, &h.invocation, &event).await;
    let order: Vec<&str> = outcome.results.iter().map(|r| r.plugin.as_str()).collect();
    assert_eq!(
        order,
        ["misbehave@0.1.0", "hello-hook@0.1.0"],
        "priority -5 before 0"
    );
    assert!(outcome.proceed());
    assert_eq!(
        h.log.messages(),
        [
            "misbehave saw the failure: health check failed",
            "hello from staging (on-failure)"
        ]
    );

    let abort = registry
        .dispatch(
            &rt,
            &h.invocation,
            &h.event("on-failure", r#"{"abort": true}"#),
        )
        .await;
    assert!(!abort.proceed());
    assert_eq!(
        abort.results.len(),
        1,
        "hello-hook is not called after an abort"
    );
    assert_eq!(
        abort.stop_reason().unwrap(),
        "misbehave@0.1.0 aborted: misbehave refuses to let this pass"
    );

    let trapped = registry
        .dispatch(&rt, &h.invocation, &h.event("before:panic", "{}"))
        .await;
    assert!(!trapped.proceed());
    assert!(
        trapped
            .stop_reason()
            .unwrap()
            .contains("misbehave panicked on purpose")
    );

    let healthy = registry
        .dispatch(&rt, &h.invocation, &h.event("before:health-check", "{}"))
        .await;
    assert!(healthy.proceed(), "the registry keeps serving after a trap");
    assert_eq!(healthy.results.len(), 1);
}

/// The control plane runs invocations on a multi-threaded executor: the futures must be `Send`.
#[allow(dead_code)]
fn invocations_can_be_spawned(rt: &'static Runtime, plugin: &'static Plugin, h: &'static Harness) {
    fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}
    let event = h.event("on-failure", "{}");
    spawnable(async move { plugin.handle(rt, &h.invocation, &event).await });
    let registry: &'static Registry = Box::leak(Box::default());
    let event = h.event("on-failure", "{}");
    spawnable(async move { registry.dispatch(rt, &h.invocation, &event).await });
}

/// A refused upload once left its compiled form in the cache; only validated plugins are kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_upload_leaves_nothing_in_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeOptions::default()
    })
    .unwrap();
    let refused = rt.load_file(&component("alien")).await;
    assert!(
        matches!(refused, Err(PluginError::UnknownWorld(_))),
        "{refused:?}"
    );
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
    load(&rt, "hello_hook").await;
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
}

/// One upload crafted to compile slowly once held a tokio worker for its whole compile, and the
/// API stopped answering. Compiling runs on the blocking pool: on a single-threaded runtime,
/// another task runs while a component compiles.
#[test]
fn compiling_a_plugin_never_holds_the_async_workers() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let runtime = std::sync::Arc::new(Runtime::new(RuntimeOptions::default()).unwrap());
        let watcher = runtime.clone();
        let saw_a_compile = tokio::spawn(async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                if watcher
                    .stats()
                    .compiling
                    .load(std::sync::atomic::Ordering::Relaxed)
                    > 0
                {
                    return true;
                }
                tokio::task::yield_now().await;
            }
            false
        });
        let bytes = std::fs::read(component("misbehave")).unwrap();
        runtime.load(&bytes).await.unwrap();
        assert!(
            saw_a_compile.await.unwrap(),
            "another task ran while the component compiled"
        );
    });
}

/// The size cap is checked before anything is compiled.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_component_is_refused_before_it_compiles() {
    let rt = Runtime::new(RuntimeOptions {
        max_component_bytes: 1024,
        ..RuntimeOptions::default()
    })
    .unwrap();
    let refused = rt.load_file(&component("hello_hook")).await;
    assert!(
        matches!(refused, Err(PluginError::TooLarge { limit: 1024, .. })),
        "{refused:?}"
    );
    assert_eq!(
        rt.stats()
            .compiled
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
