//! `berth serve` and the commands that talk to it, as a user runs them: the first start writes a
//! token, objects are created through the API, and a deploy is followed step by step — here one
//! whose server cannot be reached, so it ends at its first step with the reason. The operator's
//! commands run with the token of the first start, and an organization's token is refused them.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::control_plane::default_plugins;

struct Serving {
    child: Child,
    url: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn serve(data: &Path) -> Serving {
    let url_port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", &format!("127.0.0.1:{url_port}")])
        // Its server is on this machine.
        .arg("--allow-local-network")
        .arg("--data")
        .arg(data)
        .arg("--plugins")
        .arg(default_plugins())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth serve starts");
    let serving = Serving {
        child,
        url: format!("http://127.0.0.1:{url_port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", url_port)).is_err() {
        assert!(Instant::now() < deadline, "berth serve did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    serving
}

fn berth(serving: &Serving, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("BERTH_URL", &serving.url)
        .env("BERTH_TOKEN", token)
        .output()
        .expect("berth runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn serve_then_create_objects_and_follow_a_deploy() {
    let data = tempfile::tempdir().unwrap();
    let serving = serve(data.path());
    let token =
        std::fs::read_to_string(data.path().join("token")).expect("the first start wrote a token");
    let token = token.trim();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.path().join("token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    assert_eq!(
        stdout(&berth(&serving, token, &["project", "create", "shop"])),
        "project shop (id 1)"
    );
    let public = stdout(&berth(&serving, token, &["key", "create", "deploy"]));
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    assert_eq!(
        stdout(&berth(&serving, token, &["key", "show", "deploy"])),
        public
    );
    let port = free_port().to_string();
    let server = [
        "server",
        "add",
        "gone",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--ssh-key",
        "deploy",
    ];
    assert_eq!(
        stdout(&berth(&serving, token, &server)),
        "server gone (id 1)"
    );
    let elsewhere = [
        "server",
        "add",
        "other",
        "--host",
        "127.0.0.1",
        "--ssh-key",
        "../../etc/x",
    ];
    assert_eq!(berth(&serving, token, &elsewhere).status.code(), Some(1));
    let env = [
        "env",
        "create",
        "staging",
        "--project",
        "1",
        "--server",
        "1",
    ];
    assert_eq!(
        stdout(&berth(&serving, token, &env)),
        "environment staging (id 1)"
    );
    let set = ["env", "set", "1", "--workers", "4", "--auto-deploy", "off"];
    assert_eq!(
        stdout(&berth(&serving, token, &set)),
        "environment staging: changed auto_deploy, workers\nno redeploy needed"
    );
    let refused = berth(&serving, token, &["env", "set", "1", "--cpus", "0"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("422"));
    let listed = stdout(&berth(&serving, token, &["project", "list", "--json"]));
    assert!(listed.contains("\"name\":\"shop\""), "{listed}");

    let out = berth(&serving, token, &["deploy", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("run 1: first-deploy of environment 1"),
        "{text}"
    );
    assert!(text.contains("[1/9] connect-server: running"), "{text}");
    assert!(text.contains("[1/9] connect-server: failed:"), "{text}");
    assert!(
        text.contains("run failed: step connect-server failed"),
        "{text}"
    );

    let shown = stdout(&berth(&serving, token, &["run", "show", "1"]));
    assert!(shown.starts_with("run 1 first-deploy failed"), "{shown}");
    assert!(shown.contains("health-check"), "{shown}");

    let wrong = berth(&serving, "berth_wrong", &["project", "list"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
}

/// The organization uploads a plugin and asks for grants beyond its ceiling over the API; its
/// token is refused every operator command; the operator decides, creates an organization and
/// sets its ceiling, quotas and run limit with `berth operator …`.
#[test]
fn operator_commands_decide_grant_requests_and_an_organization_token_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let serving = serve(data.path());
    let read = |name: &str| {
        let text = std::fs::read_to_string(data.path().join(name)).expect("the first start");
        text.trim().to_string()
    };
    let (token, operator) = (read("token"), read("operator-token"));

    let refused = berth(&serving, &token, &["operator", "grant-requests"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("operator commands take the operator's token")
            && stderr.contains("403 Forbidden"),
        "{stderr}"
    );

    // The organization uploads a plugin and asks for what it may not grant itself.
    let requests: Vec<i64> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = reqwest::Client::new();
        let upload = client
            .post(format!("{}/v1/plugins", serving.url))
            .bearer_auth(&token)
            .body(std::fs::read(berth_e2e::component("hello_hook")).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(upload.status(), 201, "{}", upload.text().await.unwrap());
        let mut ids = Vec::new();
        for capability in ["docker", "git"] {
            let asked = client
                .post(format!("{}/v1/grants", serving.url))
                .bearer_auth(&token)
                .json(&serde_json::json!({ "plugin": "hello-hook", "capability": capability }))
                .send()
                .await
                .unwrap();
            assert_eq!(asked.status(), 202);
            let request: serde_json::Value = asked.json().await.unwrap();
            ids.push(request["id"].as_i64().unwrap());
        }
        ids
    });
    let own = stdout(&berth(&serving, &token, &["grant-requests"]));
    assert_eq!(own.lines().count(), 2, "{own}");
    assert!(
        own.contains(&format!(
            "{}\tpending\torg 1\thello-hook\tdocker\torganization",
            requests[0]
        )),
        "{own}"
    );
    let pending = stdout(&berth(&serving, &operator, &["operator", "grant-requests"]));
    assert_eq!(pending, own, "the operator sees the same requests");
    for (verb, id) in [("approve", requests[0]), ("deny", requests[1])] {
        let out = berth(&serving, &token, &["operator", verb, &id.to_string()]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{verb} with an organization's token"
        );
    }
    let approved = stdout(&berth(
        &serving,
        &operator,
        &["operator", "approve", &requests[0].to_string()],
    ));
    assert!(approved.starts_with("approved: "), "{approved}");
    assert!(approved.contains("\tapproved\t"), "{approved}");
    let denied = stdout(&berth(
        &serving,
        &operator,
        &[
            "operator",
            "deny",
            &requests[1].to_string(),
            "--reason",
            "git is the lifecycle's",
        ],
    ));
    assert!(
        denied.starts_with("denied: ") && denied.ends_with("\tgit is the lifecycle's"),
        "{denied}"
    );
    let args = ["operator", "grant-requests"];
    assert_eq!(stdout(&berth(&serving, &operator, &args)), "");
    let all = stdout(&berth(
        &serving,
        &operator,
        &["operator", "grant-requests", "--all"],
    ));
    assert_eq!(all.lines().count(), 2, "{all}");

    // Without --token or BERTH_TOKEN, operator commands read `<data>/operator-token`.
    let created = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["operator", "org", "create", "acme"])
        .env("BERTH_URL", &serving.url)
        .env("BERTH_DATA", data.path())
        .env_remove("BERTH_TOKEN")
        .output()
        .unwrap();
    let acme_token = stdout(&created);
    assert!(acme_token.starts_with("berth_"), "{acme_token}");
    assert!(String::from_utf8_lossy(&created.stderr).contains("organization acme (id 2) created"));
    assert_eq!(
        stdout(&berth(&serving, &acme_token, &["project", "list"])),
        ""
    );

    let operate = |args: &[&str]| {
        let mut all = vec!["operator"];
        all.extend_from_slice(args);
        stdout(&berth(&serving, &operator, &all))
    };
    let may = "organization 2 may grant its plugins: files, docker";
    assert_eq!(operate(&["ceiling", "2", "files", "docker"]), may);
    assert_eq!(operate(&["ceiling", "2"]), may);
    assert_eq!(
        operate(&["ceiling", "2", "--none"]),
        "organization 2 may grant its plugins: nothing"
    );

    let quota = operate(&["upload-quota", "2", "--max-plugins", "3"]);
    assert!(
        quota.starts_with("organization 2: at most 3 plugins, "),
        "{quota}"
    );
    assert!(quota.contains("uploads an hour (default)"), "{quota}");
    let quota = operate(&["upload-quota", "2", "--uploads-per-hour", "5"]);
    assert!(
        quota.starts_with("organization 2: at most 3 plugins, 5 uploads an hour, "),
        "the quota set before stays: {quota}"
    );
    let quota = operate(&["upload-quota", "2", "--max-plugins", "default"]);
    assert!(
        quota.contains("plugins (default), 5 uploads an hour, "),
        "{quota}"
    );

    assert_eq!(
        operate(&["run-limit", "2", "2"]),
        "organization 2: 2 runs at once"
    );
    let limit = operate(&["run-limit", "2", "default"]);
    assert!(
        limit.ends_with("runs at once (the platform's default)"),
        "{limit}"
    );
    let refused = berth(&serving, &acme_token, &["operator", "run-limit", "2", "9"]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(operate(&["run-limit", "2"]), limit);
}
