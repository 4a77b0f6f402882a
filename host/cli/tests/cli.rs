//! `berth plugin inspect|run` on the example and on each misbehaving plugin: the outcome, the exit
//! status and the one-line reason.

use std::process::{Command, Output};

use berth_e2e::component;

fn berth(args: &[&str]) -> Output {
    let cache = std::env::temp_dir().join("berth-cli-tests-cache");
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .arg("--cache-dir")
        .arg(&cache)
        .output()
        .expect("berth runs")
}

fn path(name: &str) -> String {
    component(name).display().to_string()
}

/// Exit code, stdout, and the last line of stderr (the one-line reason).
fn outcome(out: &Output) -> (i32, String, String) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().expect("an exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr.lines().last().unwrap_or_default().to_string(),
    )
}

fn run_misbehave(point: &str, extra: &[&str]) -> (i32, String, String) {
    let file = path("misbehave");
    let hook = format!("before:{point}");
    let mut args = vec![
        "plugin",
        "run",
        file.as_str(),
        "--hook",
        hook.as_str(),
        "--timeout",
        "1s",
    ];
    args.extend_from_slice(extra);
    outcome(&berth(&args))
}

#[test]
fn inspect_shows_role_contract_description_capabilities_and_imports() {
    let (code, stdout, _) = outcome(&berth(&["plugin", "inspect", &path("misbehave")]));
    assert_eq!(code, 0);
    for expected in [
        "misbehave 0.1.0",
        "role:          hook",
        "contract:      berth:plugin@0.2.0",
        "capabilities:  files, secret:token, ssh.exec, ssh.files, docker, database, database.dump, git",
        "berth:plugin/files@0.2.0",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }

    let out = berth(&["plugin", "inspect", &path("hello_hook"), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["description"]["name"], "hello-hook");
    assert_eq!(json["description"]["role"], "hook");
    assert_eq!(json["description"]["config"][0]["default"], "hello");
    assert_eq!(json["wit_version"], "0.2.0");
    assert!(
        json["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "berth:plugin/log@0.2.0")
    );
}

#[test]
fn run_the_example_prints_its_log_and_continues() {
    let file = path("hello_hook");
    let out = berth(&["plugin", "run", &file, "--hook", "before:health-check"]);
    let (code, stdout, _) = outcome(&out);
    assert_eq!((code, stdout.as_str()), (0, "verdict: continue\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[hello-hook@0.1.0] info: hello from dev (before:health-check)"),
        "{stderr}"
    );

    let out = berth(&[
        "plugin",
        "run",
        &file,
        "--hook",
        "before:health-check",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["verdict"], "continue");
}

#[test]
fn each_misbehaviour_exits_non_zero_with_a_precise_one_line_reason() {
    let cases = [
        ("spin", "misbehave@0.1.0: timed out after 1s"),
        ("hog-memory", "misbehave@0.1.0: grew its memory to"),
        (
            "touch-files",
            "misbehave@0.1.0: returned denied: files.write needs capability `files`",
        ),
        (
            "read-secret",
            "misbehave@0.1.0: returned denied: secrets.get needs capability `secret:token`",
        ),
        (
            "flood-log",
            "misbehave@0.1.0: logged more than the limit of 1048576 bytes",
        ),
        (
            "flood-stdout",
            "misbehave@0.1.0: wrote more than the limit of 65536 bytes to stdout",
        ),
        (
            "big-answer",
            "misbehave@0.1.0: returned an abort reason of 1048576 bytes",
        ),
        (
            "hostcalls",
            "misbehave@0.1.0: exceeded the budget of 100000 host calls",
        ),
        (
            "hoard-blobs",
            "misbehave@0.1.0: holds more than the limit of 1024 host resources",
        ),
        ("panic", "misbehave panicked on purpose"),
    ];
    for (point, reason) in cases {
        let (code, _, last) = run_misbehave(point, &[]);
        assert_eq!(code, 3, "{point}: {last}");
        assert!(
            last.starts_with("error: ") && last.contains(reason),
            "{point}: {last}"
        );
    }
}

#[test]
fn a_denial_is_reported_as_an_audit_line_and_a_grant_lifts_it() {
    let file = path("misbehave");
    let out = berth(&["plugin", "run", &file, "--hook", "before:touch-files"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "audit: denied files.write (capability files) for misbehave@0.1.0 in local/demo/dev"
        ),
        "{stderr}"
    );
    let (code, stdout, _) = run_misbehave("touch-files", &["--grant", "files"]);
    assert_eq!((code, stdout.as_str()), (0, "verdict: continue\n"));
}

#[test]
fn a_memory_cap_from_the_command_line_applies() {
    let (code, _, last) = run_misbehave("hog-memory", &["--memory", "16MiB"]);
    assert_eq!(code, 3);
    assert!(last.contains("over the limit of 16777216 bytes"), "{last}");
}

#[test]
fn bad_plugins_and_bad_usage_are_refused_with_a_reason() {
    let (code, _, last) = outcome(&berth(&["plugin", "inspect", &path("alien")]));
    assert_eq!(code, 4);
    assert!(last.contains("unknown world"), "{last}");

    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let (code, _, last) = outcome(&berth(&[
        "plugin",
        "run",
        core.to_str().unwrap(),
        "--hook",
        "on-failure",
    ]));
    assert_eq!(code, 4);
    assert!(
        last.contains("not a WebAssembly component: this is a core module"),
        "{last}"
    );

    let (code, _, last) = run_misbehave("touch-files", &["--grant", "root"]);
    assert_eq!(code, 2);
    assert!(last.contains("unknown capability `root`"), "{last}");

    let file = path("hello_hook");
    let (code, _, last) = outcome(&berth(&[
        "plugin",
        "run",
        &file,
        "--hook",
        "before:start-odoo",
    ]));
    assert_eq!(code, 2);
    assert!(
        last.contains("does not subscribe to before:start-odoo"),
        "{last}"
    );
}

#[test]
fn an_aborting_hook_exits_1_with_its_reason() {
    let file = path("misbehave");
    let out = berth(&[
        "plugin",
        "run",
        &file,
        "--hook",
        "on-failure",
        "--event",
        r#"{"payload": {"abort": true}}"#,
    ]);
    let (code, stdout, _) = outcome(&out);
    assert_eq!(
        (code, stdout.as_str()),
        (1, "verdict: abort: misbehave refuses to let this pass\n")
    );
}
