//! The SSH primitive against real OpenSSH servers of the test bed.

use std::sync::Arc;
use std::time::Duration;

use berth_backends::ssh::{
    Command, HostKey, MemoryPin, SshError, SshPool, Stream, Target, host_key_fingerprint,
};
use berth_e2e::{TestServer, testbed};

fn target(server: &TestServer) -> Target {
    server.target(&server.container)
}

/// A pool with Berth's test key.
fn pool() -> SshPool {
    SshPool::new(&testbed().key).expect("a pool")
}

async fn run(
    pool: &SshPool,
    target: &Target,
    command: Command,
) -> Result<(i32, String, String), SshError> {
    let mut streamed = Vec::new();
    let out = pool
        .exec(target, &command, &mut |stream, data| {
            if stream == Stream::Stdout {
                streamed.extend_from_slice(data)
            }
        })
        .await?;
    assert_eq!(streamed, out.stdout, "the sink saw what the tail kept");
    Ok((
        out.status,
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn argv_reaches_the_program_exactly_and_the_status_comes_back() {
    let bed = testbed();
    let server = target(&bed.servers[0]);
    let pool = pool();
    let tricky = [
        "a b",
        "it's",
        "$HOME",
        "; rm -rf / #",
        "`id`",
        "*",
        "",
        "naïve ✓",
        "--help",
    ];
    let mut argv = vec!["printf", "[%s]\\n"];
    argv.extend(tricky);
    let (status, stdout, _) = run(&pool, &server, Command::new(argv)).await.unwrap();
    assert_eq!(status, 0);
    let expected: String = tricky.iter().map(|a| format!("[{a}]\n")).collect();
    assert_eq!(stdout, expected);

    let (status, _, stderr) = run(
        &pool,
        &server,
        Command::new(["sh", "-c", "echo failing >&2; exit 7"]),
    )
    .await
    .unwrap();
    assert_eq!((status, stderr.as_str()), (7, "failing\n"));

    let in_dir = Command {
        cwd: Some("/tmp".into()),
        env: vec![("GREETING".into(), "hi there; $(echo not run)".into())],
        ..Command::new(["sh", "-c", "pwd; printf '%s\\n' \"$GREETING\""])
    };
    let (_, stdout, _) = run(&pool, &server, in_dir).await.unwrap();
    assert_eq!(stdout, "/tmp\nhi there; $(echo not run)\n");

    let (status, _, stderr) = run(&pool, &server, Command::new(["no-such-program-xyz"]))
        .await
        .unwrap();
    assert_eq!(status, 127, "{stderr}");
    assert_eq!(
        pool.connections_opened(),
        1,
        "one connection carried every call"
    );
}

/// One known-hosts file once pinned every tenant's servers by address. A pin belongs to one
/// server record: the first contact pins the key offered on it, every connection — a cached one
/// too — is checked against it, and a changed key is refused with both fingerprints.
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_host_key_is_refused_with_both_fingerprints() {
    let bed = testbed();
    let (first, second) = (&bed.servers[0], &bed.servers[1]);
    let pool = pool();
    let record = Arc::new(MemoryPin::default());
    let mut server = first.target("web-1");
    server.host_key = HostKey::FirstContact(record.clone());
    run(&pool, &server, Command::new(["true"])).await.unwrap();
    let pinned = record.pinned().expect("the first contact pins a key");
    server.host_key = HostKey::Pinned(pinned.clone());
    run(&pool, &server, Command::new(["true"])).await.unwrap();
    assert_eq!(
        pool.connections_opened(),
        1,
        "the pinned key's connection serves on"
    );

    // The record's pin changes (here to the other server's key): the open connection is not
    // reused, and a new one is refused.
    let wrong = second.host_key();
    server.host_key = HostKey::Pinned(wrong.clone());
    let err = run(&pool, &server, Command::new(["true"]))
        .await
        .unwrap_err();
    let SshError::HostKeyChanged {
        pinned: said_pinned,
        offered,
        ..
    } = &err
    else {
        panic!("expected a refused host key, got {err:?}");
    };
    assert_eq!(*said_pinned, host_key_fingerprint(&wrong).unwrap());
    assert_eq!(*offered, host_key_fingerprint(&pinned).unwrap());
    assert!(said_pinned.starts_with("SHA256:") && offered.starts_with("SHA256:"));
    assert!(
        err.to_string().contains(said_pinned.as_str())
            && err.to_string().contains(offered.as_str())
    );
    assert_eq!(
        pool.connections_opened(),
        1,
        "nothing connected with the wrong key"
    );

    // Another record at the same address inherits no pin: its first contact pins its own.
    let theirs = Arc::new(MemoryPin::default());
    let mut other = first.target("their-web-1");
    other.host_key = HostKey::FirstContact(theirs.clone());
    run(&pool, &other, Command::new(["true"])).await.unwrap();
    assert_eq!(theirs.pinned(), Some(pinned));

    // A pin that is no key refuses to connect, saying so.
    server.host_key = HostKey::Pinned("ssh-ed25519 not-base64".into());
    let err = run(&pool, &server, Command::new(["true"]))
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Pin { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_client_key_is_refused() {
    let bed = testbed();
    let dir = tempfile::tempdir().unwrap();
    let stranger = dir.path().join("stranger");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .expect("ssh-keygen runs");
    assert!(made.success());
    let pool = SshPool::new(&stranger).unwrap();
    let err = run(&pool, &target(&bed.servers[0]), Command::new(["true"]))
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Auth { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_past_its_timeout_is_abandoned_and_the_connection_serves_on() {
    let bed = testbed();
    let server = target(&bed.servers[0]);
    let pool = pool();
    let slow = Command {
        timeout: Some(Duration::from_millis(500)),
        ..Command::new(["sleep", "30"])
    };
    let err = run(&pool, &server, slow).await.unwrap_err();
    assert!(matches!(err, SshError::Timeout { .. }), "{err}");
    let (status, stdout, _) = run(&pool, &server, Command::new(["echo", "still here"]))
        .await
        .unwrap();
    assert_eq!((status, stdout.as_str()), (0, "still here\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_dropped_mid_command_is_reported_and_the_next_call_reconnects() {
    let bed = testbed();
    let server = target(&bed.servers[1]);
    let pool = pool();
    run(&pool, &server, Command::new(["true"])).await.unwrap();
    let container = bed.servers[1].container.clone();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        // Kill every SSH session process on the server; the listener stays up.
        let killed = tokio::process::Command::new("docker")
            .args(["exec", &container, "pkill", "-KILL", "-f", "sshd: root@"])
            .status()
            .await
            .expect("docker exec runs");
        assert!(killed.success(), "pkill found the session");
    });
    let err = run(&pool, &server, Command::new(["sleep", "30"]))
        .await
        .unwrap_err();
    killer.await.unwrap();
    assert!(matches!(err, SshError::Dropped { .. }), "{err}");
    assert!(
        err.to_string().contains("dropped while running `sleep`"),
        "{err}"
    );
    let (status, stdout, _) = run(&pool, &server, Command::new(["echo", "back"]))
        .await
        .unwrap();
    assert_eq!((status, stdout.as_str()), (0, "back\n"));
    assert_eq!(pool.connections_opened(), 2, "one reconnection");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_travel_both_ways_over_sftp_as_streams() {
    let bed = testbed();
    let server = target(&bed.servers[0]);
    let pool = pool();
    let data: Vec<u8> = (0..8 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let path = format!("/tmp/berth-sftp-{}", std::process::id());
    let sent = pool
        .upload(
            &server,
            &mut std::io::Cursor::new(data.clone()),
            &path,
            0o640,
        )
        .await
        .unwrap();
    assert_eq!(sent, data.len() as u64);
    let (_, mode, _) = run(&pool, &server, Command::new(["stat", "-c", "%a %s", &path]))
        .await
        .unwrap();
    assert_eq!(mode, format!("640 {}\n", data.len()));
    let mut back = Vec::new();
    let received = pool.download(&server, &path, &mut back).await.unwrap();
    assert_eq!((received, back == data), (data.len() as u64, true));
    let missing = pool
        .download(&server, "/nonexistent/file", &mut tokio::io::sink())
        .await
        .unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("download of /nonexistent/file"),
        "{missing}"
    );
    run(&pool, &server, Command::new(["rm", "-f", &path]))
        .await
        .unwrap();
}

/// The pool held one lock while it connected: a server that never answered held up every run to
/// every other server of the same key until its connect timed out. Now a server waits only for
/// its own connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_holds_up_only_its_own_connections() {
    let bed = testbed();
    let pool = Arc::new(pool());
    let port = berth_e2e::silent_server().await;
    let mut nowhere = target(&bed.servers[0]);
    nowhere.name = "silent".into();
    nowhere.host = "127.0.0.1".into();
    nowhere.port = port;
    let stuck = {
        let pool = pool.clone();
        tokio::spawn(async move { run(&pool, &nowhere, Command::new(["true"])).await })
    };
    // Let the stuck connect begin (it holds its server's slot from now on).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, stdout, _) = run(
        &pool,
        &target(&bed.servers[0]),
        Command::new(["echo", "here"]),
    )
    .await
    .unwrap();
    assert_eq!((status, stdout.as_str()), (0, "here\n"));
    assert!(
        !stuck.is_finished(),
        "the other server answered while the silent one was still being connected to"
    );
    let err = stuck.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("no answer"), "{err}");
}
