//! Shared helpers of the end-to-end tests: finding the built plugin components, and a run harness.
//!
//! Components are built by `./dev build` (and so by `./dev test`) into
//! `target/wasm32-wasip2/release`; `BERTH_WASM_DIR` overrides where they are looked for. A missing
//! component fails the test with the command that builds it.

pub mod backups;
pub mod control_plane;

use std::path::PathBuf;
use std::sync::Arc;

use berth_runtime::{
    Capability, Environment, Event, Grant, Invocation, MemoryAudit, MemoryLog, Operation, RunInfo,
    Scope, Server, Settings, Stage, Workspace,
};

/// The path of a built component, e.g. `component("hello_hook")`.
pub fn component(name: &str) -> PathBuf {
    let dir = std::env::var_os("BERTH_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/wasm32-wasip2/release")
        });
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "component {} is missing: build the plugins first with `./dev build` (or run all tests with `./dev test`)",
        path.display()
    );
    path
}

/// An environment for tests: `acme/shop/<name>`.
pub fn environment(name: &str) -> Environment {
    Environment {
        organization: "acme".into(),
        project: "shop".into(),
        name: name.into(),
        stage: Stage::Staging,
        odoo_version: "17.0".into(),
        branch: Some("main".into()),
        server: Server {
            name: "test".into(),
            host: "127.0.0.1".into(),
            port: 22,
        },
    }
}

/// A run harness: the invocation plus the sinks tests look at.
pub struct Harness {
    pub invocation: Invocation,
    pub log: Arc<MemoryLog>,
    pub audit: Arc<MemoryAudit>,
    pub workspace: tempfile::TempDir,
}

impl Harness {
    /// A run about `acme/shop/<env>`, with `grants` given to `plugin` for exactly that environment
    /// (a server-wide capability for the server it is on).
    pub fn new(env: &str, plugin: &str, grants: &[&str]) -> Self {
        let log = Arc::new(MemoryLog::default());
        let audit = Arc::new(MemoryAudit::default());
        let workspace = tempfile::tempdir().expect("a temporary workspace");
        let invocation = Invocation::new(RunInfo {
            id: "run-1".into(),
            operation: Operation::Redeploy.into(),
            environment: environment(env),
        });
        let env = invocation.env_ref();
        let grants = grants
            .iter()
            .map(|g| {
                let capability = g.parse::<Capability>().expect("a known capability");
                Grant {
                    plugin: plugin.into(),
                    scope: Scope::of_run(&capability, &env),
                    capability,
                }
            })
            .collect();
        let invocation = invocation
            .grants(grants)
            .audit(audit.clone())
            .log(log.clone())
            .lend(Arc::new(Settings::default()))
            .lend(Arc::new(Workspace::new(workspace.path())));
        Harness {
            invocation,
            log,
            audit,
            workspace,
        }
    }

    /// Lends the run's capabilities `context` (a server, mirrors, storage targets, settings…).
    pub fn lend<T: ?Sized + Send + Sync + 'static>(&mut self, context: Arc<T>) {
        self.invocation = self.invocation.clone().lend(context);
    }

    /// An event at `point` for this harness's run.
    pub fn event(&self, point: &str, payload: &str) -> Event {
        Event {
            point: point.into(),
            run: self.invocation.run.clone(),
            step: point.split_once(':').map(|(_, s)| s.to_string()),
            failure: None,
            payload: payload.into(),
        }
    }
}

/// The real-server test bed started by `tests/testbed.sh up` (which `./dev test` runs).
pub struct Testbed {
    /// Berth's private key, authorized on every test server.
    pub key: PathBuf,
    /// The PostgreSQL stand-in image.
    pub postgres_image: String,
    /// The Odoo stand-in image.
    pub odoo_image: String,
    /// Storage targets: an S3 server (endpoint, bucket, access key, secret key), an FTP server
    /// (address, user, password), and an FTP server that refuses anything but TLS, with the CA
    /// certificate (PEM) its certificate is signed by.
    pub s3: (String, String, String, String),
    pub ftp: (String, String, String),
    pub ftps: (String, String, String),
    pub ftps_ca: PathBuf,
    /// A plain FTP server whose PASV answers name another host.
    pub ftp_liar: (String, String, String),
    pub servers: Vec<TestServer>,
}

pub struct TestServer {
    pub host: String,
    pub port: u16,
    /// The server's container, for tests that break things on purpose.
    pub container: String,
}

impl TestServer {
    /// How Berth reaches this server as root, named `name`: the key it offers at the first
    /// contact is pinned in memory, as a server's record pins it in the control plane.
    pub fn target(&self, name: &str) -> berth_backends::ssh::Target {
        berth_backends::ssh::Target {
            name: name.into(),
            host: self.host.clone(),
            port: self.port,
            user: "root".into(),
            host_key: berth_backends::ssh::HostKey::first_contact_in_memory(),
        }
    }

    /// The server's Ed25519 host key, as an OpenSSH public key line (read from its container).
    pub fn host_key(&self) -> String {
        let out = std::process::Command::new("docker")
            .args([
                "exec",
                &self.container,
                "cat",
                "/etc/ssh/ssh_host_ed25519_key.pub",
            ])
            .output()
            .expect("docker exec runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

/// Reads `target/testbed/env`; a test that needs the test bed fails here, saying how to start it.
pub fn testbed() -> Testbed {
    let path = std::env::var_os("BERTH_TESTBED")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/testbed/env")
        });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the real-server test bed is not running ({}: {e}); start it with `tests/testbed.sh up` \
             (needs a Docker engine; `./dev test` starts and stops it for you)",
            path.display()
        )
    });
    let vars: std::collections::HashMap<&str, &str> =
        text.lines().filter_map(|l| l.split_once('=')).collect();
    let var = |name: &str| -> String {
        vars.get(name)
            .unwrap_or_else(|| {
                panic!(
                    "{name} missing from {}; restart the test bed",
                    path.display()
                )
            })
            .to_string()
    };
    let ftp = |name: &str| {
        (
            var(name),
            var(&format!("{name}_USER")),
            var(&format!("{name}_PASSWORD")),
        )
    };
    let servers = (1..=2)
        .map(|i| {
            let address = var(&format!("BERTH_TEST_SERVER_{i}"));
            let (host, port) = address.rsplit_once(':').expect("host:port");
            TestServer {
                host: host.into(),
                port: port.parse().expect("a port"),
                container: var(&format!("BERTH_TEST_SERVER_{i}_CONTAINER")),
            }
        })
        .collect();
    Testbed {
        key: var("BERTH_TEST_SSH_KEY").into(),
        postgres_image: var("BERTH_TEST_POSTGRES_IMAGE"),
        odoo_image: var("BERTH_TEST_ODOO_IMAGE"),
        s3: (
            var("BERTH_TEST_S3"),
            var("BERTH_TEST_S3_BUCKET"),
            var("BERTH_TEST_S3_ACCESS_KEY"),
            var("BERTH_TEST_S3_SECRET_KEY"),
        ),
        ftp: ftp("BERTH_TEST_FTP"),
        ftps: ftp("BERTH_TEST_FTPS"),
        ftps_ca: var("BERTH_TEST_FTPS_CA").into(),
        ftp_liar: ftp("BERTH_TEST_FTPLIAR"),
        servers,
    }
}

/// Runs a benchmark's body on a multi-threaded runtime, as `berth serve` runs the control plane.
pub fn run_bench<F: std::future::Future>(bench: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench)
}

/// This process's peak resident memory (VmHWM), in MiB: the control plane's, when it runs in it.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// One storage target of the test bed: its name, the storage-backend plugin that serves it, its
/// settings and credentials.
pub struct TargetSpec {
    pub name: &'static str,
    pub backend: &'static str,
    pub settings: Vec<(String, String)>,
    pub user: String,
    pub secret: String,
}

/// Every storage target of the test bed: S3 through each preset (AWS, R2, B2, MinIO, their
/// endpoints pointed at the local S3 server), FTP, FTPS (TLS required, the test bed's CA trusted)
/// and SFTP on test server 1.
pub fn storage_targets() -> Vec<TargetSpec> {
    let bed = testbed();
    let (endpoint, bucket, ak, sk) = &bed.s3;
    let ca = std::fs::read_to_string(&bed.ftps_ca).unwrap();
    let server = &bed.servers[0];
    let key = std::fs::read_to_string(&bed.key).unwrap();
    // The SFTP target's directory on the test server.
    let made = std::process::Command::new("docker")
        .args(["exec", &server.container, "mkdir", "-p", "/srv/berth-sftp"])
        .status()
        .unwrap();
    assert!(made.success());
    let pairs = |settings: &[(&str, &str)]| -> Vec<(String, String)> {
        settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let s3 = |name: &'static str, extra: &[(&str, &str)]| {
        let mut settings = vec![
            ("provider", name),
            ("bucket", bucket.as_str()),
            ("endpoint", endpoint.as_str()),
            ("prefix", "backups/acme"),
        ];
        settings.extend_from_slice(extra);
        TargetSpec {
            name,
            backend: "s3",
            settings: pairs(&settings),
            user: ak.clone(),
            secret: sk.clone(),
        }
    };
    let ftp = |name: &'static str, server: &(String, String, String), extra: &[(&str, &str)]| {
        let (address, user, password) = server;
        let (host, port) = address.split_once(':').unwrap();
        let mut settings = vec![("host", host), ("port", port), ("prefix", "backups")];
        settings.extend_from_slice(extra);
        TargetSpec {
            name,
            backend: "ftp",
            settings: pairs(&settings),
            user: user.clone(),
            secret: password.clone(),
        }
    };
    vec![
        s3("aws", &[("region", "eu-west-1")]),
        s3("r2", &[("account-id", "0123456789abcdef")]),
        s3("b2", &[("region", "us-west-004")]),
        s3("minio", &[]),
        ftp("ftp", &bed.ftp, &[]),
        ftp("ftps", &bed.ftps, &[("tls", "required"), ("tls-ca", &ca)]),
        TargetSpec {
            name: "sftp",
            backend: "sftp",
            settings: pairs(&[
                ("host", "127.0.0.1"),
                ("port", &server.port.to_string()),
                ("directory", "/srv/berth-sftp"),
                ("prefix", "acme"),
            ]),
            user: "root".into(),
            secret: key,
        },
    ]
}

/// An environment on test server 1, and its PostgreSQL started as a deploy would.
pub mod server {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use berth_backends::database::{DbAccess, EnvDatabase};
    use berth_backends::docker::{ContainerSpec, EnvDocker, Scope};
    use berth_backends::ssh::{SshPool, Target};

    use super::testbed;

    pub struct Env {
        pub name: String,
        pub pool: Arc<SshPool>,
        pub target: Target,
    }

    impl Env {
        pub fn new(name: &str) -> Self {
            let bed = testbed();
            let pool = Arc::new(SshPool::new(&bed.key).unwrap());
            let target = bed.servers[0].target("server-1");
            Env {
                name: name.into(),
                pool,
                target,
            }
        }

        pub fn docker(&self, env: &str) -> EnvDocker {
            EnvDocker::new(
                self.pool.clone(),
                self.target.clone(),
                Scope::environment("acme", "shop", env),
            )
            .unwrap()
        }

        pub fn database(&self, env: &str, access: &DbAccess) -> EnvDatabase {
            EnvDatabase::new(
                self.pool.clone(),
                self.target.clone(),
                access.clone(),
                self.docker(env),
            )
        }
    }

    /// Starts the environment's PostgreSQL as a deploy leaves it — the environment's role, owning
    /// the environment's database — and returns how to reach it.
    pub async fn start_postgres(env: &Env) -> DbAccess {
        let docker = env.docker(&env.name);
        let spec = ContainerSpec {
            name: "db".into(),
            image: testbed().postgres_image,
            command: vec!["postgres".into()],
            env: vec![
                ("POSTGRES_USER".into(), "odoo".into()),
                (
                    "POSTGRES_PASSWORD".into(),
                    "pw with spaces & 'quotes'".into(),
                ),
            ],
            mounts: vec![("pgdata".into(), "/var/lib/postgresql/data".into(), false)],
            networks: vec!["internal".into()],
            ..Default::default()
        };
        docker.create(&spec).await.unwrap();
        docker.start("db").await.unwrap();
        // The server shares the machine's network stack, so it reaches the container's bridge address
        // as a real Docker host does.
        let info = docker.inspect("db").await.unwrap();
        let access = DbAccess {
            host: info.addresses[0].1.clone(),
            port: 5432,
            user: "odoo".into(),
            password: "pw with spaces & 'quotes'".into(),
            container: "db".into(),
        };
        let db = env.database(&env.name, &access);
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = db.list().await {
            assert!(Instant::now() < deadline, "PostgreSQL did not come up: {e}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        db.create_role(&env.name, "the environment's role")
            .await
            .unwrap();
        db.create(&env.name, None).await.unwrap();
        access
    }
}

/// A TCP server on loopback that accepts connections and never says a word (a server that never
/// answers SSH); returns its port.
pub async fn silent_server() -> u16 {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    port
}
