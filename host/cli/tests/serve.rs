//! `berth serve` and the commands that talk to it, as a user runs them: the first start writes a
//! token, objects are created through the API, and a deploy is followed step by step — here one
//! whose server cannot be reached, so it ends at its first step with the reason.

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
