//! A hook plugin that misbehaves on purpose, one way per hook point, so tests can show the sandbox
//! holds: `before:spin` loops forever, `before:hog-memory` allocates without end, `before:touch-files`
//! uses the workspace (denied unless `files` is granted), `before:read-secret` reads a secret,
//! `before:flood-log` / `before:flood-stdout` write far more than allowed, `before:big-answer` returns
//! a huge abort reason, `before:hostcalls` calls the host without end, `before:hoard-blobs` holds
//! blobs without end, `before:panic` panics, `before:ssh` runs the argv in its payload on the
//! server, `before:ssh-files` sends a blob to the server and back, `before:docker-list` lists its
//! environment's containers, `before:docker-mount-root` tries to mount the server's `/`,
//! `before:db-query` / `before:db-dump` query and dump the database named by the payload,
//! `before:db-sql` runs the statement after the first line of its payload in the database the first
//! line names,
//! `before:git` fetches the repository at the payload's URL and exports `main` to the server. On `on-failure` it continues, or aborts when the payload
//! says `"abort"`.

use berth_sdk::blobs::Blob;
use berth_sdk::prelude::*;
use berth_sdk::{config, database, docker, files, git, secrets, ssh};

struct Misbehave;

const POINTS: [&str; 19] = [
    "before:spin",
    "before:hog-memory",
    "before:touch-files",
    "before:read-secret",
    "before:flood-log",
    "before:flood-stdout",
    "before:big-answer",
    "before:hostcalls",
    "before:hoard-blobs",
    "before:panic",
    "before:ssh",
    "before:ssh-files",
    "before:docker-list",
    "before:docker-mount-root",
    "before:db-query",
    "before:db-sql",
    "before:db-dump",
    "before:git",
    "before:forge-lines",
];

impl Plugin for Misbehave {
    fn describe() -> Description {
        let mut d = Description::hook("misbehave", env!("CARGO_PKG_VERSION"))
            .summary("Misbehaves on purpose (sandbox tests)")
            .priority(-5)
            .capability("files")
            .capability("secret:token")
            .capability("ssh.exec")
            .capability("ssh.files")
            .capability("docker")
            .capability("database")
            .capability("database.dump")
            .capability("git")
            .on("on-failure");
        for point in POINTS {
            d = d.on(point);
        }
        d
    }
}

impl Hook for Misbehave {
    fn handle(event: Event) -> Result<Verdict, Error> {
        match event.point.as_str() {
            "before:spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "before:hog-memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "before:touch-files" => {
                files::write("notes/hello.txt", b"written by misbehave")?;
                let back = files::read("notes/hello.txt")?;
                info!("read back {} bytes", back.len());
                match files::read("../outside.txt") {
                    Err(e) => info!("escape refused: {e:?}"),
                    Ok(_) => return Err(Error::failed("read outside the workspace")),
                }
                Ok(Verdict::Continue)
            }
            "before:read-secret" => {
                let token = secrets::get("token")?;
                info!("the token has {} characters", token.len());
                Ok(Verdict::Continue)
            }
            "before:flood-log" => loop {
                info!("{}", "x".repeat(1024));
            },
            "before:flood-stdout" => loop {
                println!("{}", "y".repeat(1024));
            },
            "before:big-answer" => Ok(Verdict::abort("z".repeat(1 << 20))),
            // Logs the payload's text and aborts with it: text meant to forge host lines.
            "before:forge-lines" => {
                let payload: serde_json::Value =
                    serde_json::from_str(&event.payload).unwrap_or_default();
                let text = payload["text"].as_str().unwrap_or("").to_string();
                info!("{text}");
                Ok(Verdict::abort(text))
            }
            "before:hostcalls" => loop {
                std::hint::black_box(config::get("anything"));
            },
            "before:hoard-blobs" => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(Blob::new());
                }
            }
            "before:docker-list" => {
                let containers = docker::list_containers()?;
                info!("containers: {}", containers.len());
                Ok(Verdict::Continue)
            }
            "before:docker-mount-root" => {
                let spec = docker::ContainerSpec {
                    name: "grab-the-host".into(),
                    image: "debian:12".into(),
                    command: vec![],
                    env: vec![],
                    mounts: vec![docker::Mount {
                        source: "/".into(),
                        target: "/host".into(),
                        read_only: false,
                    }],
                    networks: vec![],
                    ports: vec![],
                    restart_policy: None,
                    labels: vec![],
                };
                docker::create(&spec)?;
                Ok(Verdict::Continue)
            }
            "before:db-query" => {
                let sql = "SELECT $1::text || ' and ' || count(*)::text FROM pg_class";
                let rows = database::query(
                    &event.payload,
                    sql,
                    &[database::Value::Text("bound".into())],
                )?;
                if let Some(database::Value::Text(text)) = rows.rows.first().and_then(|r| r.first())
                {
                    info!(
                        "query said: {}",
                        text.split(" and ").next().unwrap_or_default()
                    );
                }
                Ok(Verdict::Continue)
            }
            "before:db-sql" => {
                let (db, sql) = event
                    .payload
                    .split_once('\n')
                    .ok_or_else(|| Error::invalid("payload: the database, a newline, the SQL"))?;
                let affected = database::execute(db, sql, &[])?;
                info!("sql affected {affected} row(s)");
                Ok(Verdict::Continue)
            }
            "before:db-dump" => {
                let dump = database::dump(&event.payload, database::DumpFormat::Custom)?;
                let magic = dump.read(0, 5)?;
                info!(
                    "dump of {} bytes, starts with {}",
                    dump.size(),
                    String::from_utf8_lossy(&magic)
                );
                Ok(Verdict::Continue)
            }
            "before:git" => {
                let url = event.payload.as_str();
                git::fetch(url)?;
                let commit = git::resolve(url, "main")?;
                let files = git::export_tree(url, &commit, "primary")?;
                info!("exported {files} files of {}", &commit[..7]);
                Ok(Verdict::Continue)
            }
            "before:panic" => panic!("misbehave panicked on purpose"),
            "before:ssh" => {
                // The payload is the argv, one argument per line ("{}" means `true`).
                let argv: Vec<String> = match event.payload.as_str() {
                    "{}" => vec!["true".into()],
                    lines => lines.split('\n').map(str::to_string).collect(),
                };
                let options = ssh::ExecOptions {
                    cwd: None,
                    env: vec![],
                    timeout_ms: None,
                };
                let result = ssh::exec(&argv, &options)?;
                info!("exit {}: {}", result.status, result.stdout.trim_end());
                Ok(Verdict::Continue)
            }
            "before:ssh-files" => {
                let blob = Blob::new();
                blob.append(b"hello from a blob")?;
                let path = format!("/tmp/berth-plugin-{}", event.run.id);
                ssh::upload(&blob, &path, 0o600)?;
                let back = ssh::download(&path)?;
                let same = back.sha256()? == blob.sha256()?;
                info!("round trip of {} bytes, identical: {same}", back.size());
                Ok(Verdict::Continue)
            }
            "on-failure" if event.payload.contains("\"abort\"") => {
                Ok(Verdict::abort("misbehave refuses to let this pass"))
            }
            "on-failure" => {
                info!(
                    "misbehave saw the failure: {}",
                    event.failure.unwrap_or_default()
                );
                Ok(Verdict::Continue)
            }
            other => Err(Error::invalid(format!(
                "misbehave has no behaviour for {other}"
            ))),
        }
    }
}

berth_sdk::export!(hook: Misbehave);
