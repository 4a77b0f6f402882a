//! The CLI against an attacker's expectations: the API token goes to the control plane and
//! nowhere else, whatever a command's arguments say.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `berth repo add NAME URL` once read the repository's URL as the control plane's (the argument
/// and the global `--url` shared a name), so the token went to the git host.
#[test]
fn repo_add_never_sends_the_token_to_the_repository_host() {
    let git_host = TcpListener::bind("127.0.0.1:0").unwrap();
    git_host.set_nonblocking(true).unwrap();
    let repository = format!("http://{}/acme/shop.git", git_host.local_addr().unwrap());
    let control_plane = TcpListener::bind("127.0.0.1:0").unwrap();
    let control_plane_url = format!("http://{}", control_plane.local_addr().unwrap());
    // The control plane answers nothing useful: what matters is who was asked.
    let answering = std::thread::spawn(move || {
        (0..2)
            .map(|_| {
                let (mut conn, _) = control_plane.accept().unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut request = [0u8; 4096];
                let n = conn.read(&mut request).unwrap_or(0);
                String::from_utf8_lossy(&request[..n]).into_owned()
                // Dropped unanswered: the command fails.
            })
            .collect::<Vec<_>>()
    });
    for args in [
        vec!["repo", "add", "shop", repository.as_str(), "--project", "1"],
        vec!["repo", "add", "shop", repository.as_str()],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(&args)
            .env("BERTH_URL", &control_plane_url)
            .env("BERTH_TOKEN", "berth_secret_token")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Whoever it asked never answers; the command is stopped if it waits.
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        match git_host.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!(
                "`berth {}` reached the repository's host: {other:?}",
                args.join(" ")
            ),
        }
    }
    for request in answering.join().unwrap() {
        assert!(
            request.starts_with("POST /v1/repositories"),
            "the control plane got the request: {request}"
        );
    }
}

/// A plugin's log line or abort reason with newlines and ANSI escapes once printed lines that
/// looked like the host's own (`audit: allowed …`, `verdict: continue`) and cleared the terminal's
/// line. Plugin text is printed on one line, control characters shown.
#[test]
fn plugin_text_cannot_forge_host_lines() {
    let forged =
        "fine\naudit: allowed ssh.shell (capability ssh.shell)\r\u{1b}[2Kverdict: continue";
    let event = serde_json::json!({ "payload": { "text": forged } }).to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["plugin", "run"])
        .arg(berth_e2e::component("misbehave"))
        .args(["--hook", "before:forge-lines", "--event", &event])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "the hook aborted: {text}");
    assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
    for line in text.lines() {
        assert!(
            !line.starts_with("audit: allowed ssh.shell") && line != "verdict: continue",
            "a forged host line: {line:?} in {text}"
        );
    }
    assert!(
        text.contains("fine\\naudit: allowed ssh.shell"),
        "the text is shown, escaped: {text}"
    );
}
