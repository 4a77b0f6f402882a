//! Benchmark of the plugin runtime on this machine:
//! - compile time of a plugin (no cache),
//! - load time from the on-disk cache (a fresh `Runtime` each time, as after a restart),
//! - p50/p99 of a fresh store + instantiate + one trivial hook call,
//! - p50/p99 of one host-call round trip (`config.get`).
//!
//! Run: `./dev bench` (or `cargo bench -p berth-e2e --bench dispatch` after `./dev build`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_e2e::{Harness, component};
use berth_runtime::runlog::{LogSink, RunEvent};
use berth_runtime::{Runtime, RuntimeOptions};

struct NullLog;

impl LogSink for NullLog {
    fn event(&self, _: RunEvent) {}
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>, per: u32) {
    let per = per.max(1);
    for s in &mut samples {
        *s /= per;
    }
    samples.sort();
    println!(
        "{name:<46} n={:<6} p50={:>10.2?} p99={:>10.2?} min={:>10.2?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[0]
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

async fn bench() {
    let bytes = std::fs::read(component("probe")).unwrap();
    println!("probe component: {} bytes", bytes.len());
    // `BERTH_BENCH=dispatch` runs only the dispatch loop, longer (for profiling).
    let only_dispatch = std::env::var("BERTH_BENCH").is_ok_and(|v| v == "dispatch");
    if !only_dispatch {
        load_times(&bytes).await;
    }
    let rounds = if only_dispatch { 200_000 } else { 21_000 };
    dispatch_times(&bytes, rounds).await;
}

async fn load_times(bytes: &[u8]) {
    let mut compile = Vec::new();
    for _ in 0..5 {
        let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
        let start = Instant::now();
        runtime.load(bytes).await.unwrap();
        compile.push(start.elapsed());
    }
    report("compile + validate (no cache)", compile, 1);

    let cache = tempfile::tempdir().unwrap();
    let options = RuntimeOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    Runtime::new(options.clone())
        .unwrap()
        .load(bytes)
        .await
        .unwrap();
    let mut cached = Vec::new();
    for _ in 0..20 {
        let runtime = Runtime::new(options.clone()).unwrap();
        let start = Instant::now();
        let plugin = runtime.load(bytes).await.unwrap();
        cached.push(start.elapsed());
        assert!(plugin.from_cache());
    }
    report("load from disk cache + validate", cached, 1);
}

async fn dispatch_times(bytes: &[u8], rounds: usize) {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let plugin = runtime.load(bytes).await.unwrap();
    let mut harness = Harness::new("staging", "probe", &[]);
    harness.invocation.log = Arc::new(NullLog);
    let nothing = harness.event("before:nothing", "{}");
    let mut dispatch = Vec::new();
    for i in 0..rounds {
        let start = Instant::now();
        plugin
            .handle(&runtime, &harness.invocation, &nothing)
            .await
            .unwrap();
        if i >= 1_000 {
            dispatch.push(start.elapsed());
        }
    }
    report(
        "fresh store + instantiate + trivial hook call",
        dispatch.clone(),
        1,
    );

    const CALLS: u32 = 1_000;
    let many = harness.event("before:host-calls", &CALLS.to_string());
    let base = percentile(
        &{
            let mut d = dispatch;
            d.sort();
            d
        },
        0.5,
    );
    let mut calls = Vec::new();
    for i in 0..2_100 {
        let start = Instant::now();
        plugin
            .handle(&runtime, &harness.invocation, &many)
            .await
            .unwrap();
        if i >= 100 {
            calls.push(start.elapsed().saturating_sub(base));
        }
    }
    report("host-call round trip (config.get)", calls, CALLS);
}
