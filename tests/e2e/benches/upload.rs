//! Benchmark: how the control plane answers `/healthz` while the slowest upload one can craft
//! compiles. The component is valid and ~1 MB: one core function with thousands of locals, every
//! one of them live around a loop whose body shuffles them, which is what makes the compiler's
//! register allocation slow. Two such uploads are sent in parallel (each a little different, so
//! neither is found in the compiled cache) while `/healthz` is asked every 10 ms; the figures are
//! its latency over the whole compile (p50, p99, max) and each upload's time and answer.
//!
//! Needs no test bed, only the default plugins (`./dev build`). Run: `./dev bench` (or
//! `cargo bench -p berth-e2e --bench upload`). `BERTH_BENCH_UPLOAD_KIB` and
//! `BERTH_BENCH_UPLOAD_LOCALS` change the component's size and its number of locals.

use std::time::{Duration, Instant};

use berth_e2e::control_plane::ControlPlane;
use wasm_encoder::{
    BlockType, CodeSection, Component, ExportKind, ExportSection, Function, FunctionSection,
    Instruction, Module, ModuleSection, TypeSection, ValType,
};

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A component holding one core module whose one function has `locals` i64 locals, all live
/// around a loop of about `bytes` of `local.get`/`i64.add`/`local.set`; `seed` varies the
/// shuffle (and so the bytes).
fn slow_component(bytes: usize, locals: u32, seed: u32) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut functions = FunctionSection::new();
    functions.function(0);
    let mut exports = ExportSection::new();
    exports.export("run", ExportKind::Func, 0);

    let mut body = Function::new([(locals, ValType::I64)]);
    body.instruction(&Instruction::Loop(BlockType::Empty));
    let mut i: u32 = 0;
    while body.byte_len() < bytes {
        let pick = |k: u32| (i.wrapping_mul(k).wrapping_add(seed)) % locals;
        body.instruction(&Instruction::LocalGet(pick(7)))
            .instruction(&Instruction::LocalGet(pick(13)))
            .instruction(&Instruction::I64Add)
            .instruction(&Instruction::LocalSet(pick(31)));
        i += 1;
    }
    // Loop while local 0 is not zero: every local is live across the back edge.
    body.instruction(&Instruction::LocalGet(0))
        .instruction(&Instruction::I32WrapI64)
        .instruction(&Instruction::BrIf(0))
        .instruction(&Instruction::End)
        .instruction(&Instruction::End);
    let mut code = CodeSection::new();
    code.function(&body);

    let mut module = Module::new();
    module
        .section(&types)
        .section(&functions)
        .section(&exports)
        .section(&code);
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    component.finish()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label:<44} n={:<5} p50={:>9.2?} p99={:>9.2?} max={:>9.2?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

/// Asks `/healthz` every 10 ms until `until` says to stop; the latency of each answer.
async fn probe_health(cp: &ControlPlane, until: impl Fn() -> bool) -> Vec<Duration> {
    let mut samples = Vec::new();
    let url = format!("{}/healthz", cp.url);
    while !until() {
        let started = Instant::now();
        let response = cp
            .client
            .get(&url)
            .timeout(Duration::from_secs(180))
            .send()
            .await
            .expect("/healthz answers");
        assert!(response.status().is_success());
        response.bytes().await.unwrap();
        samples.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    samples
}

fn main() {
    berth_e2e::run_bench(bench());
}

async fn bench() {
    let size = env_or("BERTH_BENCH_UPLOAD_KIB", 1024) as usize * 1024;
    let locals = env_or("BERTH_BENCH_UPLOAD_LOCALS", 4000);
    let cp = ControlPlane::start().await;
    let org = cp.engine.store.create_organization("bench").unwrap();
    let (_, token) = cp.engine.store.create_token(org.id, "bench").unwrap();
    let components: Vec<Vec<u8>> = (1..=2)
        .map(|seed| slow_component(size, locals, seed))
        .collect();
    println!(
        "crafted component: {} bytes, one function with {locals} i64 locals in a loop",
        components[0].len()
    );

    let idle = std::sync::atomic::AtomicU32::new(0);
    let baseline = probe_health(&cp, || {
        idle.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 200
    })
    .await;
    report("/healthz, idle", baseline);

    let done = std::sync::atomic::AtomicUsize::new(0);
    let upload = async |bytes: &Vec<u8>| {
        let started = Instant::now();
        let response = cp
            .client
            .post(format!("{}/v1/plugins", cp.url))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(600))
            .body(bytes.clone())
            .send()
            .await
            .expect("the upload is answered");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (started.elapsed(), status, text)
    };
    let compiled = || {
        cp.engine
            .runtime
            .stats()
            .compiled
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let compiled_before = compiled();
    let started = Instant::now();
    let (first, second, during) = tokio::join!(
        upload(&components[0]),
        upload(&components[1]),
        probe_health(&cp, || done.load(std::sync::atomic::Ordering::SeqCst) == 2),
    );
    let total = started.elapsed();
    report("/healthz, two slow uploads compiling", during);
    for (n, (took, status, text)) in [first, second].into_iter().enumerate() {
        let answer: String = text.chars().take(160).collect();
        println!("upload {}: {took:>9.2?}  {status} {answer}", n + 1);
    }
    println!(
        "both answered after {total:.2?}; components compiled meanwhile: {}",
        compiled() - compiled_before
    );
}
