//! Wall time of a first deploy, a redeploy and a fast deploy on the test bed, through the API, split
//! into the underlying operations (time inside host primitives: SSH, Docker, PostgreSQL, git) and
//! Berth's own overhead (the rest: sandbox, engine, state writes, hooks, HTTP). Uses the run's own
//! step timings. Needs the test bed (`tests/testbed.sh up`) and the default plugins (`./dev build`).

use berth_e2e::control_plane::{commit, fixture, unique};
use serde_json::Value;

/// (run wall, Σ step wall, Σ host) in milliseconds.
type Split = (i64, i64, i64);

fn split(run: &Value) -> Split {
    let wall = run["finished_at"].as_i64().unwrap() - run["started_at"].as_i64().unwrap();
    let steps = run["steps"].as_array().unwrap();
    let step_wall = steps
        .iter()
        .filter_map(|s| Some(s["finished_at"].as_i64()? - s["started_at"].as_i64()?))
        .sum();
    let host = steps.iter().filter_map(|s| s["host_ms"].as_i64()).sum();
    (wall, step_wall, host)
}

/// (step, wall ms, host ms) of each step that ran.
fn step_times(run: &Value) -> Vec<(String, i64, i64)> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let wall = s["finished_at"].as_i64()? - s["started_at"].as_i64()?;
            let name = s["name"].as_str()?.to_string();
            Some((name, wall, s["host_ms"].as_i64().unwrap_or(0)))
        })
        .collect()
}

fn median(mut values: Vec<i64>) -> i64 {
    values.sort();
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    const ROUNDS: usize = 5;
    let f = fixture().await;
    let mut per_step: Vec<Vec<(String, i64, i64)>> = Vec::new();
    let mut figures: Vec<(&str, Vec<Split>)> = vec![
        ("first deploy", vec![]),
        ("redeploy", vec![]),
        ("fast deploy", vec![]),
    ];
    for round in 0..ROUNDS {
        let env = f.environment(&unique("bench"), f.server).await;
        let id = env["id"].as_i64().unwrap();
        let secret = env["webhook_secret"].as_str().unwrap().to_string();
        for (kind, samples) in figures.iter_mut() {
            let run = match *kind {
                "fast deploy" => {
                    let file = format!("addons/shop_sale/bench_{round}.py");
                    let head = commit(&f.project_repo, &[(file.as_str(), "# bench\n")], "bench");
                    f.cp.github_push(id, &secret, "main", &head).await.1
                }
                _ => f.deploy(id).await,
            };
            let run = f.cp.finished(&f.token, run["id"].as_i64().unwrap()).await;
            assert_eq!(run["status"], "succeeded", "{run:#}");
            samples.push(split(&run));
            if *kind == "first deploy" {
                per_step.push(step_times(&run));
            }
        }
    }
    println!("deploys through the API on the test bed, median of {ROUNDS} (ms)");
    println!(
        "{:<14} {:>8} {:>12} {:>14} {:>16}",
        "", "wall", "host prims", "berth overhead", "of which engine"
    );
    for (kind, samples) in figures {
        let wall = median(samples.iter().map(|s| s.0).collect());
        let host = median(samples.iter().map(|s| s.2).collect());
        let overhead = median(samples.iter().map(|s| s.0 - s.2).collect());
        let engine = median(samples.iter().map(|s| s.0 - s.1).collect());
        println!("{kind:<14} {wall:>8} {host:>12} {overhead:>14} {engine:>16}");
    }
    println!("first deploy by step, median (ms): wall / inside host primitives");
    for (i, (name, _, _)) in per_step[0].iter().enumerate() {
        let wall = median(per_step.iter().map(|r| r[i].1).collect());
        let host = median(per_step.iter().map(|r| r[i].2).collect());
        println!("  {name:<22} {wall:>6} / {host:>6}");
    }
}
