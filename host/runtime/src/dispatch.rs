//! Hook dispatch: deliver an event to every plugin subscribed to its hook point.
//!
//! Order is deterministic — priority, then name — so two control planes with the same plugins make
//! the same decisions. Delivery stops at the first plugin that aborts or fails: the operation will
//! not go on, so later hooks must not act as if it would. A failing plugin (trap, timeout, limit, an
//! error it returned) counts as an abort with its precise error; it never takes the host down.

use std::time::{Duration, Instant};

use crate::bindings::types::{Event, Verdict};
use crate::engine::Runtime;
use crate::invoke::{Invocation, InvokeError};
use crate::registry::Registry;

/// What one hook answered.
#[derive(Debug)]
pub struct HookResult {
    /// `name@version`
    pub plugin: String,
    pub outcome: Result<Verdict, InvokeError>,
    pub elapsed: Duration,
}

#[derive(Debug)]
pub struct DispatchOutcome {
    pub point: String,
    /// In dispatch order; ends at the first abort or failure.
    pub results: Vec<HookResult>,
}

impl DispatchOutcome {
    /// Whether the operation may go on.
    pub fn proceed(&self) -> bool {
        self.results
            .iter()
            .all(|r| matches!(r.outcome, Ok(Verdict::Continue)))
    }

    /// Why the operation must stop, if it must: the plugin and its reason or error.
    pub fn stop_reason(&self) -> Option<String> {
        self.results.iter().find_map(|r| match &r.outcome {
            Ok(Verdict::Continue) => None,
            Ok(Verdict::Abort(reason)) => Some(format!("{} aborted: {reason}", r.plugin)),
            Err(err) => Some(format!("hook failed: {err}")),
        })
    }
}

impl Registry {
    /// Delivers `event` to the subscribers of `event.point`.
    pub async fn dispatch(
        &self,
        runtime: &Runtime,
        invocation: &Invocation,
        event: &Event,
    ) -> DispatchOutcome {
        let mut results = Vec::new();
        for plugin in self.subscribers(&event.point) {
            let started = Instant::now();
            let outcome = plugin.handle(runtime, invocation, event).await;
            let stop = !matches!(outcome, Ok(Verdict::Continue));
            results.push(HookResult {
                plugin: plugin.description().label(),
                outcome,
                elapsed: started.elapsed(),
            });
            if stop {
                break;
            }
        }
        DispatchOutcome {
            point: event.point.clone(),
            results,
        }
    }
}
