//! A hook plugin that does as little as possible, for benchmarks: `before:nothing` returns at once;
//! `before:host-calls` makes as many `config.get` calls as the payload's number says.

use berth_sdk::config;
use berth_sdk::prelude::*;

struct Probe;

impl Plugin for Probe {
    fn describe() -> Description {
        Description::hook("probe", env!("CARGO_PKG_VERSION"))
            .summary("Does as little as possible (benchmarks)")
            .on("before:nothing")
            .on("before:host-calls")
    }
}

impl Hook for Probe {
    fn handle(event: Event) -> Result<Verdict, Error> {
        if event.point == "before:host-calls" {
            let n: u32 = event
                .payload
                .trim()
                .parse()
                .map_err(|_| Error::invalid("payload: a number"))?;
            for _ in 0..n {
                std::hint::black_box(config::get("key"));
            }
        }
        Ok(Verdict::Continue)
    }
}

berth_sdk::export!(hook: Probe);
