//! Benchmark of the storage clients on the test bed (`tests/testbed.sh up` first): upload and
//! download throughput of one object through S3 (s3s-fs), FTP, FTPS and SFTP, and the host's peak
//! memory, which must not grow with the object's size (every transfer streams).
//!
//! Run: `./dev bench`. `BERTH_BENCH_STORAGE_MIB` sets the object's size (default 512).

use std::time::Instant;

use berth_backends::ssh::HostKey;
use berth_backends::storage::{Connection, Credentials, FtpTls, Protocol, Remote, TlsMode};
use berth_e2e::{peak_rss_mib, testbed};
use tokio::io::AsyncReadExt;

fn main() {
    berth_e2e::run_bench(bench());
}

fn remote(address: &str, directory: &str) -> Remote {
    let (host, port) = address.rsplit_once(':').unwrap();
    Remote {
        host: host.into(),
        port: port.parse().unwrap(),
        directory: directory.into(),
    }
}

async fn bench() {
    let mib: u64 = std::env::var("BERTH_BENCH_STORAGE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let bed = testbed();
    let (endpoint, bucket, ak, sk) = &bed.s3;
    let login = |(_, user, password): &(String, String, String)| Credentials {
        user: user.clone(),
        secret: password.clone(),
    };
    let server = &bed.servers[0];
    let made = std::process::Command::new("docker")
        .args(["exec", &server.container, "mkdir", "-p", "/srv/berth-sftp"])
        .status()
        .unwrap();
    assert!(made.success());
    let targets = [
        (
            "S3 (s3s-fs)",
            Protocol::S3 {
                endpoint: endpoint.clone(),
                region: "us-east-1".into(),
                bucket: bucket.clone(),
                path_style: true,
            },
            Credentials {
                user: ak.clone(),
                secret: sk.clone(),
            },
        ),
        (
            "FTP",
            Protocol::Ftp(remote(&bed.ftp.0, ""), FtpTls::default()),
            login(&bed.ftp),
        ),
        (
            "FTPS",
            Protocol::Ftp(
                remote(&bed.ftps.0, ""),
                FtpTls {
                    mode: TlsMode::Required,
                    trusted_pem: Some(std::fs::read_to_string(&bed.ftps_ca).unwrap()),
                },
            ),
            login(&bed.ftps),
        ),
        (
            "SFTP",
            Protocol::Sftp(remote(
                &format!("127.0.0.1:{}", server.port),
                "/srv/berth-sftp",
            )),
            Credentials {
                user: "root".into(),
                secret: std::fs::read_to_string(&bed.key).unwrap(),
            },
        ),
    ];
    let bytes = mib << 20;
    println!(
        "object of {mib} MiB; host peak RSS {:.0} MiB before",
        peak_rss_mib()
    );
    for (name, protocol, credentials) in targets {
        // The test bed is on this machine.
        let egress = berth_backends::egress::EgressPolicy::open();
        let connection = Connection::open(
            &protocol,
            &credentials,
            HostKey::first_contact_in_memory(),
            &egress,
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let key = format!("bench/{}.bin", std::process::id());
        let mut source = tokio::io::repeat(0x5a).take(bytes);
        let started = Instant::now();
        connection.put(&key, &mut source).await.unwrap();
        let put = started.elapsed();
        let started = Instant::now();
        let got = connection.get(&key, &mut tokio::io::sink()).await.unwrap();
        let get = started.elapsed();
        assert_eq!(got, bytes, "{name}");
        connection.delete(&key).await.unwrap();
        let rate = |d: std::time::Duration| mib as f64 / d.as_secs_f64();
        println!(
            "{name:<12} upload {put:>8.2?} = {:>5.0} MiB/s   download {get:>8.2?} = {:>5.0} MiB/s   host peak RSS {:.0} MiB",
            rate(put),
            rate(get),
            peak_rss_mib()
        );
    }
}
