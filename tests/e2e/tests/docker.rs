//! The Docker primitive against the machine's Docker engine, reached through a test server's SSH.

use std::time::{Duration, Instant};

use berth_backends::docker::{ContainerSpec, DockerError, EnvDocker};
use berth_backends::ssh::Command;
use berth_e2e::server::Env;
use berth_e2e::testbed;

/// Docker fenced to `acme/shop/<env>` on test server 1 (the `Env` keeps the connection's files).
fn env_docker(env: &str) -> (EnvDocker, Env) {
    let server = Env::new(env);
    (server.docker(env), server)
}

/// A unique environment name per test run, so parallel tests and reruns never collide.
fn unique(name: &str) -> String {
    format!("{name}{}", std::process::id())
}

fn sleeper(name: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: testbed().postgres_image,
        command: vec!["sleep".into(), "300".into()],
        env: vec![("GREETING".into(), "hello there".into())],
        mounts: vec![("data".into(), "/data".into(), false)],
        networks: vec!["internal".into()],
        restart_policy: Some("unless-stopped".into()),
        ..Default::default()
    }
}

fn docker_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_lives_its_whole_life_through_ssh() {
    let env = unique("life");
    let (docker, _dir) = env_docker(&env);
    assert!(
        docker
            .image_present(&testbed().postgres_image)
            .await
            .unwrap()
    );
    let id = docker.create(&sleeper("app")).await.unwrap();
    assert!(!id.is_empty());
    let full = format!("berth.acme.shop.{env}.app");
    assert_eq!(
        docker_cli(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"berth.scope\"}}",
            &full
        ]),
        format!("acme/shop/{env}")
    );
    assert_eq!(
        docker_cli(&["inspect", "-f", "{{.HostConfig.Privileged}}", &full]),
        "false"
    );

    docker.start("app").await.unwrap();
    let info = docker.inspect("app").await.unwrap();
    assert!(info.running, "{info:?}");
    assert_eq!(info.addresses.len(), 1);
    assert_eq!(info.addresses[0].0, "internal");

    let mut streamed = Vec::new();
    let argv: Vec<String> = ["sh", "-c", "echo \"$GREETING\"; echo oops >&2; exit 3"]
        .map(String::from)
        .to_vec();
    let out = docker
        .exec("app", &argv, None, &mut |_, d| {
            streamed.extend_from_slice(d)
        })
        .await
        .unwrap();
    assert_eq!(
        (out.status, out.stdout.as_slice(), out.stderr.as_slice()),
        (3, &b"hello there\n"[..], &b"oops\n"[..])
    );

    let started = Instant::now();
    docker.restart("app").await.unwrap();
    eprintln!("container restart through SSH: {:?}", started.elapsed());
    assert!(docker.inspect("app").await.unwrap().running);

    let listed = docker.list().await.unwrap();
    assert_eq!(
        listed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["app"]
    );

    docker.stop("app", Some(1)).await.unwrap();
    docker.stop("app", Some(1)).await.unwrap();
    let stopped = docker.inspect("app").await.unwrap();
    assert!(!stopped.running);
    docker.remove("app").await.unwrap();
    assert!(matches!(
        docker.inspect("app").await,
        Err(DockerError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_environment_sees_and_touches_only_its_own_containers() {
    let (a, _d1) = env_docker(&unique("fence-a"));
    let (b, _d2) = env_docker(&unique("fence-b"));
    a.create(&sleeper("db")).await.unwrap();
    for outcome in [
        b.inspect("db").await.map(|_| ()),
        b.start("db").await,
        b.remove("db").await,
        b.exec("db", &["true".into()], None, &mut |_, _| {})
            .await
            .map(|_| ()),
    ] {
        assert!(
            matches!(outcome, Err(DockerError::NotFound(_))),
            "{outcome:?}"
        );
    }
    assert!(b.list().await.unwrap().is_empty());
    assert_eq!(a.list().await.unwrap().len(), 1);
    a.remove("db").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_paths_and_host_networking_are_refused() {
    let env = unique("fence-c");
    let (docker, _dir) = env_docker(&env);
    let root_mount = ContainerSpec {
        mounts: vec![("/".into(), "/host".into(), false)],
        ..sleeper("evil")
    };
    let err = docker.create(&root_mount).await.unwrap_err();
    assert!(
        matches!(err, DockerError::Refused(_))
            && err.to_string().contains("bind mount of \"/\" refused"),
        "{err}"
    );
    // A volume that carries the environment's name but not its label (made by someone else) is
    // not the environment's to mount.
    let foreign = format!("berth.acme.shop.{env}.stolen");
    let made = std::process::Command::new("docker")
        .args([
            "volume",
            "create",
            "--label",
            "berth.scope=other/org/env",
            &foreign,
        ])
        .output()
        .unwrap();
    assert!(made.status.success());
    let stolen = ContainerSpec {
        mounts: vec![("stolen".into(), "/data".into(), false)],
        ..sleeper("thief")
    };
    let err = docker.create(&stolen).await.unwrap_err();
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", &foreign])
        .output();
    assert!(
        matches!(err, DockerError::Refused(_))
            && err.to_string().contains("not this environment's"),
        "{err}"
    );
    let escape = ContainerSpec {
        mounts: vec![(
            format!("/srv/berth/acme/shop/{env}/../other"),
            "/x".into(),
            false,
        )],
        ..sleeper("evil")
    };
    assert!(matches!(
        docker.create(&escape).await,
        Err(DockerError::Refused(_))
    ));
    let host_net = ContainerSpec {
        networks: vec!["host".into()],
        ..sleeper("evil")
    };
    assert!(matches!(
        docker.create(&host_net).await,
        Err(DockerError::Refused(_))
    ));
    let reserved = ContainerSpec {
        labels: vec![("berth.scope".into(), "acme/shop/production".into())],
        ..sleeper("evil")
    };
    assert!(matches!(
        docker.create(&reserved).await,
        Err(DockerError::Refused(_))
    ));
    // As a deploy would: the environment's directory exists on the server before anything mounts it.
    let bed = testbed();
    let server = &bed.servers[0];
    let mkdir = std::process::Command::new("docker")
        .args([
            "exec",
            &server.container,
            "mkdir",
            "-p",
            &format!("/srv/berth/acme/shop/{env}/filestore"),
        ])
        .status()
        .unwrap();
    assert!(mkdir.success());
    let inside = ContainerSpec {
        mounts: vec![(
            format!("/srv/berth/acme/shop/{env}/filestore"),
            "/filestore".into(),
            false,
        )],
        ..sleeper("fine")
    };
    docker.create(&inside).await.unwrap();
    docker.remove("fine").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pulling_without_a_registry_fails_cleanly() {
    let (docker, _dir) = env_docker(&unique("pull"));
    let pulled = tokio::time::timeout(
        Duration::from_secs(120),
        docker.ensure_image("berth-test/absent-image:1.0"),
    )
    .await;
    let err = pulled.expect("the pull gives up by itself").unwrap_err();
    assert!(
        err.to_string().contains("berth-test/absent-image:1.0"),
        "{err}"
    );
}

/// A hook granted `docker` published `127.0.0.1:22` on the server, and a container created with
/// no network landed on Docker's default bridge (although `bridge` by name was refused).
#[tokio::test(flavor = "multi_thread")]
async fn no_published_ports_and_no_default_bridge() {
    let env = unique("ports");
    let (docker, _dir) = env_docker(&env);
    let publishing = ContainerSpec {
        ports: vec![(22, 2222)],
        ..sleeper("door")
    };
    let err = docker.create(&publishing).await.unwrap_err();
    assert!(
        matches!(err, DockerError::Refused(_)) && err.to_string().contains("published ports"),
        "{err}"
    );
    let unattached = ContainerSpec {
        networks: vec![],
        ..sleeper("loner")
    };
    docker.create(&unattached).await.unwrap();
    let full = format!("berth.acme.shop.{env}.loner");
    let mode = docker_cli(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", &full]);
    docker.remove("loner").await.unwrap();
    assert_eq!(mode, "none", "not Docker's default bridge");
}

/// Runs `argv` on the environment's server as Berth does; panics unless it succeeds.
async fn on_server(server: &Env, argv: &[&str]) {
    let out = server
        .pool
        .exec(
            &server.target,
            &Command::new(argv.iter().copied()),
            &mut |_, _| {},
        )
        .await
        .unwrap();
    assert_eq!(
        out.status,
        0,
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A repository may commit a link `rootlink -> /`: the fence once checked a bind mount's source by
/// its spelling, so a hook granted `docker` mounted `<code>/…/rootlink` and wrote files as root on
/// the Docker host. Sources are resolved on the server and checked by their real path, a folder
/// mounts at its real path, and a container whose folder was replaced by a link since it was
/// created does not start.
#[tokio::test(flavor = "multi_thread")]
async fn a_link_in_the_environments_directory_cannot_carry_a_bind_mount_out_of_it() {
    let env = unique("links");
    let (docker, server) = env_docker(&env);
    let root = format!("/srv/berth/acme/shop/{env}");
    let repo = format!("{root}/code/repo");
    // What a checkout of a repository that commits these links leaves in the code folder.
    on_server(&server, &["mkdir", "-p", &format!("{repo}/addons")]).await;
    on_server(&server, &["ln", "-s", "/", &format!("{repo}/rootlink")]).await;
    on_server(&server, &["ln", "-s", "../../..", &format!("{repo}/up")]).await;
    on_server(&server, &["ln", "-s", "addons", &format!("{repo}/alias")]).await;
    let mounting = |source: &str| ContainerSpec {
        mounts: vec![(format!("{repo}/{source}"), "/host".into(), false)],
        ..sleeper("grab")
    };
    for (source, real) in [
        ("rootlink", "/".to_string()),
        ("rootlink/etc", "/etc".to_string()),
        ("up", "/srv/berth/acme/shop".to_string()),
    ] {
        let err = docker.create(&mounting(source)).await.unwrap_err();
        assert!(
            matches!(err, DockerError::Refused(_))
                && err.to_string().contains(&format!("resolves to {real:?}")),
            "{source}: {err}"
        );
    }
    assert!(matches!(
        docker.inspect("grab").await,
        Err(DockerError::NotFound(_))
    ));
    let missing = docker.create(&mounting("nowhere")).await.unwrap_err();
    assert!(matches!(missing, DockerError::Invalid(_)), "{missing}");

    // A folder mounts, at its real path: a link inside the directory is followed to it.
    docker.create(&mounting("alias")).await.unwrap();
    let full = format!("berth.acme.shop.{env}.grab");
    let sources = docker_cli(&[
        "inspect",
        "-f",
        "{{range .HostConfig.Mounts}}{{.Source}} {{end}}",
        &full,
    ]);
    assert!(
        sources.split(' ').any(|s| s == format!("{repo}/addons")),
        "{sources}"
    );

    // The folder replaced by a link to `/` after the check: Docker would follow it at start.
    on_server(
        &server,
        &[
            "mv",
            &format!("{repo}/addons"),
            &format!("{repo}/addons.real"),
        ],
    )
    .await;
    on_server(&server, &["ln", "-s", "/", &format!("{repo}/addons")]).await;
    let err = docker.start("grab").await.unwrap_err();
    assert!(
        matches!(err, DockerError::Refused(_)) && err.to_string().contains("resolves to \"/\""),
        "{err}"
    );
    assert!(!docker.inspect("grab").await.unwrap().running);
    docker.remove("grab").await.unwrap();
    on_server(&server, &["rm", "-rf", &root]).await;
}
