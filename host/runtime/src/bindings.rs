//! Host-side bindings of the `berth:plugin` WIT contract.
//!
//! The `plugin-base` world generates the imports (every host interface) and the `plugin` export that
//! all plugins share; each role world then generates only its own export and reuses the base's import
//! bindings through `with`, so there is exactly one Rust type per WIT type.
//!
//! Every import is `async` (primitives do network I/O) and `trappable`: a host call either returns
//! the WIT `error` to the guest or traps the invocation (for limits such as the host-call budget).
//! Results of the form `result<T, error>` map to `Result<T, Fault>`, see [`crate::state::Fault`].

mod base {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "berth:plugin/plugin-base",
        imports: { default: async | trappable },
        exports: { default: async },
        trappable_error_type: { "berth:plugin/types.error" => crate::state::Fault },
        with: {
            "berth:plugin/blobs.blob": crate::primitives::blobs::Blob,
            "berth:plugin/storage.connection": crate::primitives::storage::Connection,
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

/// Adds every host interface of the contract to `linker`.
pub fn add_to_linker(
    linker: &mut wasmtime::component::Linker<crate::state::RunState>,
) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    PluginBase::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
}
