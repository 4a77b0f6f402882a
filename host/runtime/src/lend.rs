//! What a run lends its plugins, one typed context per capability.
//!
//! The caller of an invocation (the pipeline engine, `berth plugin run`, a test) lends each
//! capability the context it works with — the server to reach for `ssh`, the mirrors for `git`,
//! the run's record for `operation` — by value, keyed by the context's type. A capability's module
//! owns its context type and asks for it at its door; nothing in between names it. A capability
//! that was lent nothing answers `unsupported`: that run simply has no such power.
//!
//! Contexts are shared (`Arc`) between the invocations of a run and live as long as the run does;
//! per-invocation state (handles, budgets) lives in [`RunState`](crate::state::RunState).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// The contexts lent to an invocation, by type. Cloning shares them.
#[derive(Clone, Default)]
pub struct Lent {
    contexts: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Lent {
    /// Lends `context` (replacing any context of the same type).
    pub fn insert<T: ?Sized + Send + Sync + 'static>(&mut self, context: Arc<T>) {
        self.contexts.insert(TypeId::of::<T>(), Arc::new(context));
    }

    /// Takes back the context of type `T`, if one was lent.
    pub fn remove<T: ?Sized + 'static>(&mut self) {
        self.contexts.remove(&TypeId::of::<T>());
    }

    /// The context of type `T`, if one was lent.
    pub fn get<T: ?Sized + Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.contexts
            .get(&TypeId::of::<T>())
            .and_then(|boxed| boxed.downcast_ref::<Arc<T>>())
            .cloned()
    }
}

impl std::fmt::Debug for Lent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lent({} contexts)", self.contexts.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Named: Send + Sync {
        fn name(&self) -> &str;
    }
    struct Fixed;
    impl Named for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
    }

    #[test]
    fn contexts_are_found_by_their_type_only() {
        let mut lent = Lent::default();
        assert!(lent.get::<String>().is_none());
        lent.insert(Arc::new(String::from("mirrors")));
        lent.insert::<dyn Named>(Arc::new(Fixed));
        assert_eq!(
            lent.get::<String>().as_deref().map(String::as_str),
            Some("mirrors")
        );
        assert_eq!(lent.get::<dyn Named>().unwrap().name(), "fixed");
        assert!(lent.get::<u32>().is_none());
        lent.remove::<String>();
        assert!(lent.get::<String>().is_none());
    }
}
