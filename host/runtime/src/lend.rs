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
use std::sync::Arc;

/// The contexts lent to an invocation, by type. Cloning shares them. A run lends a handful, so a
/// short list searched in order is the quickest map (a host call looks one up on every call).
#[derive(Clone, Default)]
pub struct Lent {
    contexts: Vec<(TypeId, Arc<dyn Any + Send + Sync>)>,
}

impl Lent {
    /// Lends `context` (replacing any context of the same type).
    pub fn insert<T: ?Sized + Send + Sync + 'static>(&mut self, context: Arc<T>) {
        self.remove::<T>();
        self.contexts.push((TypeId::of::<T>(), Arc::new(context)));
    }

    /// Takes back the context of type `T`, if one was lent.
    pub fn remove<T: ?Sized + 'static>(&mut self) {
        let id = TypeId::of::<T>();
        self.contexts.retain(|(t, _)| *t != id);
    }

    /// The context of type `T`, if one was lent, to keep beyond a borrow of the run's state.
    pub fn get<T: ?Sized + Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.find::<T>().cloned()
    }

    /// The context of type `T`, if one was lent, borrowed.
    pub fn find<T: ?Sized + Send + Sync + 'static>(&self) -> Option<&Arc<T>> {
        let id = TypeId::of::<T>();
        self.contexts
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, boxed)| boxed.downcast_ref::<Arc<T>>())
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
        lent.insert(Arc::new(String::from("replaced")));
        assert_eq!(lent.find::<String>().map(|s| s.as_str()), Some("replaced"));
        lent.remove::<String>();
        assert!(lent.get::<String>().is_none());
    }
}
