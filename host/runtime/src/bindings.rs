//! Host-side bindings of the `berth:plugin` WIT contract.
//!
//! The `plugin-base` world generates the imports (every host interface) and the `plugin` export that
//! all plugins share; each role world then generates only its own export and reuses the base's import
//! bindings through `with`, so there is exactly one Rust type per WIT type.
//!
//! Every import is `async` (primitives do network I/O) and `trappable`: a host call either returns
//! the WIT `error` to the guest or traps the invocation (for limits such as the host-call budget).
//! Results of the form `result<T, error>` map to `Result<T, Fault>`, see [`crate::bindings::Fault`].

mod base {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "berth:plugin/plugin-base",
        imports: { default: async | trappable },
        exports: { default: async },
        trappable_error_type: { "berth:plugin/types.error" => crate::bindings::Fault },
        with: {
            "berth:plugin/blobs.blob": berth_backends::blob::Blob,
            "berth:plugin/storage.connection": berth_backends::storage::SharedConnection,
        },
    });
}

/// Generates the export bindings of one role world, reusing the base world's imports.
macro_rules! role_world {
    ($module:ident, $world:literal) => {
        pub mod $module {
            wasmtime::component::bindgen!({
                path: "../../wit",
                world: $world,
                imports: { default: async | trappable },
                exports: { default: async },
                with: {
                    "berth:plugin/types": super::types,
                    "berth:plugin/log": super::log,
                    "berth:plugin/config": super::config,
                    "berth:plugin/secrets": super::secrets,
                    "berth:plugin/blobs": super::blobs,
                    "berth:plugin/files": super::files,
                    "berth:plugin/ssh": super::ssh,
                    "berth:plugin/docker": super::docker,
                    "berth:plugin/database": super::database,
                    "berth:plugin/storage": super::storage,
                    "berth:plugin/git": super::git,
                    "berth:plugin/operation": super::operation,
                    "berth:plugin/targets": super::targets,
                    "berth:plugin/archive": super::archive,
                },
            });
        }
    };
}

pub use base::PluginBase;
pub use base::PluginBasePre;
pub use base::berth::plugin::{
    archive, blobs, config, database, docker, files, git, log, operation, secrets, ssh, storage,
    targets, types,
};

role_world!(hook, "berth:plugin/hook");
role_world!(lifecycle, "berth:plugin/lifecycle");
role_world!(storage_backend, "berth:plugin/storage-backend");
role_world!(neutralizer, "berth:plugin/neutralizer");
role_world!(importer, "berth:plugin/importer");

berth_contract::wit_glue!(error: types::Error, operation: types::Operation);

use crate::limits::LimitExceeded;
use types::Error;

/// Why a host call did not return a value: a WIT error for the guest, or a trap that ends the
/// invocation (a limit, or a host fault the guest must not paper over).
#[derive(Debug)]
pub enum Fault {
    Guest(Error),
    Trap(wasmtime::Error),
}

impl From<Error> for Fault {
    fn from(err: Error) -> Self {
        Fault::Guest(err)
    }
}

impl From<LimitExceeded> for Fault {
    fn from(err: LimitExceeded) -> Self {
        Fault::Trap(wasmtime::Error::new(err))
    }
}

impl Fault {
    /// For host calls whose WIT signature has no error case: any fault ends the invocation.
    pub(crate) fn into_trap(self) -> wasmtime::Error {
        match self {
            Fault::Trap(trap) => trap,
            Fault::Guest(err) => wasmtime::Error::msg(err.to_string()),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Guest(err) => write!(f, "{err}"),
            Fault::Trap(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for Fault {}
