//! Benchmark of the real-server primitives on the test bed (`tests/testbed.sh up` first):
//! - SSH exec round trip of `true` on a pooled connection,
//! - restart time of a PostgreSQL container through SSH,
//! - dump throughput and the host's peak memory while a ~1 GiB database streams to a file.
//!
//! Run: `./dev bench`.

use std::time::{Duration, Instant};

use berth_backends::database::{DumpFormat, Principal, Value};
use berth_backends::ssh::Command;
use berth_e2e::peak_rss_mib;
use berth_e2e::server::{Env, start_postgres};

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

fn main() {
    berth_e2e::run_bench(bench());
}

async fn bench() {
    let gib: i64 = std::env::var("BERTH_BENCH_DUMP_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let env = Env::new(&format!("bench{}", std::process::id()));

    let command = Command::new(["true"]);
    let mut samples = Vec::new();
    for i in 0..220 {
        let start = Instant::now();
        env.pool
            .exec(&env.target, &command, &mut |_, _| {})
            .await
            .unwrap();
        if i >= 20 {
            samples.push(start.elapsed());
        }
    }
    let (p50, p99) = percentiles(samples);
    println!("ssh exec round trip (`true`)        n=200  p50={p50:>10.2?} p99={p99:>10.2?}");

    let access = start_postgres(&env).await;
    let docker = env.docker(&env.name);
    let mut restarts = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        docker.restart("db").await.unwrap();
        restarts.push(start.elapsed());
    }
    let (p50, _) = percentiles(restarts);
    println!("postgres container restart          n=5    p50={p50:>10.2?}");

    // The lifecycle's connection: it creates a table, as Odoo's role does.
    let db = env
        .database(&env.name, &access)
        .acting_as(Principal::Lifecycle);
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.query(&env.name, "SELECT 1", &[]).await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    db.execute(&env.name, "CREATE TABLE filler (id int8, body text)", &[])
        .await
        .unwrap();
    // ~1 KiB of incompressible-looking text a row.
    let fill = "INSERT INTO filler SELECT g, string_agg(md5(g::text || '-' || i::text), '') \
                FROM generate_series(1, $1::int8) g, generate_series(1, 32) i GROUP BY g";
    let started = Instant::now();
    db.execute(&env.name, fill, &[Value::Int(gib)])
        .await
        .unwrap();
    println!("filled {gib} rows in {:?}", started.elapsed());

    let rss_before = peak_rss_mib();
    let dir = tempfile::tempdir().unwrap();
    let mut file = tokio::io::BufWriter::new(
        tokio::fs::File::create(dir.path().join("dump.sql"))
            .await
            .unwrap(),
    );
    let started = Instant::now();
    let bytes = db
        .dump(&env.name, DumpFormat::Plain, &mut file)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::flush(&mut file).await.unwrap();
    let elapsed = started.elapsed();
    println!(
        "plain dump to a file                {:.2} GiB in {elapsed:.2?} = {:.0} MiB/s; host peak RSS {rss_before:.0} MiB before, {:.0} MiB after",
        bytes as f64 / (1u64 << 30) as f64,
        bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64(),
        peak_rss_mib()
    );
    docker.remove("db").await.unwrap();
}
