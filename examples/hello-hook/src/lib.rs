//! A customer-style hook plugin: greets before the health check (and on failure) and lets the
//! operation continue.
//! Build: `cargo build --release --target wasm32-wasip2 -p hello-hook`.

use berth_sdk::prelude::*;

struct Hello;

impl Plugin for Hello {
    fn describe() -> Description {
        Description::hook("hello-hook", env!("CARGO_PKG_VERSION"))
            .summary("Logs a greeting before the health check")
            .on("before:health-check")
            .on("on-failure")
            .config_key("greeting", "What to say", Some("hello"))
    }
}

impl Hook for Hello {
    fn handle(event: Event) -> Result<Verdict, Error> {
        let greeting = berth_sdk::config::get("greeting").unwrap_or_default();
        info!(
            "{greeting} from {} ({})",
            event.run.environment.name, event.point
        );
        Ok(Verdict::Continue)
    }
}

berth_sdk::export!(hook: Hello);
