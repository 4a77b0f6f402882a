//! The export macro of `berth-sdk`: `berth_sdk::export!(hook: MyPlugin)`.
//!
//! A plugin's component must describe exactly the world it plays, so the role world's bindings have
//! to be generated in the plugin crate itself (generating every world in the SDK would make every
//! plugin claim every world). This macro does that generation for the plugin author: it points
//! `wit-bindgen` at the contract shipped with the SDK, reuses the SDK's import bindings (one Rust
//! type per WIT type), and glues the generated export traits to the SDK's role trait.

use proc_macro::TokenStream;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, Path, Token, parse_macro_input};

struct Input {
    role: Ident,
    plugin: Path,
}

impl Parse for Input {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let role = input.parse()?;
        input.parse::<Token![:]>()?;
        let plugin = input.parse()?;
        Ok(Input { role, plugin })
    }
}

/// The contract version the SDK is built against (wit/).
const CONTRACT_VERSION: &str = "0.2.0";

/// The host interfaces every world imports; their bindings come from the SDK.
const IMPORTS: [&str; 14] = [
    "types",
    "log",
    "config",
    "secrets",
    "blobs",
    "files",
    "ssh",
    "docker",
    "database",
    "storage",
    "git",
    "operation",
    "targets",
    "archive",
];

#[proc_macro]
pub fn export(input: TokenStream) -> TokenStream {
    let Input { role, plugin } = parse_macro_input!(input as Input);
    let (world, glue) = match role.to_string().as_str() {
        "hook" => (
            "berth:plugin/hook",
            quote! {
                impl exports::berth::plugin::hook_handler::Guest for Glue {
                    fn handle(event: ::berth_sdk::Event) -> Result<::berth_sdk::Verdict, ::berth_sdk::Error> {
                        <#plugin as ::berth_sdk::Hook>::handle(event)
                    }
                }
            },
        ),
        "lifecycle" => (
            "berth:plugin/lifecycle",
            quote! {
                impl exports::berth::plugin::lifecycle_steps::Guest for Glue {
                    fn steps(
                        operation: ::berth_sdk::Operation,
                        environment: ::berth_sdk::Environment,
                    ) -> Result<Vec<String>, ::berth_sdk::Error> {
                        <#plugin as ::berth_sdk::Lifecycle>::steps(operation, environment)
                    }
                    fn run_step(
                        context: ::berth_sdk::StepContext,
                    ) -> Result<::berth_sdk::StepOutcome, ::berth_sdk::Error> {
                        <#plugin as ::berth_sdk::Lifecycle>::run_step(context)
                    }
                }
            },
        ),
        "storage_backend" => (
            "berth:plugin/storage-backend",
            quote! {
                impl exports::berth::plugin::storage_provider::Guest for Glue {
                    fn check(target: String) -> Result<(), ::berth_sdk::Error> {
                        <#plugin as ::berth_sdk::StorageBackend>::check(target)
                    }
                    fn put(
                        target: String,
                        key: String,
                        data: &::berth_sdk::blobs::Blob,
                    ) -> Result<::berth_sdk::ObjectInfo, ::berth_sdk::Error> {
                        <#plugin as ::berth_sdk::StorageBackend>::put(target, key, data)
                    }
                    fn get(
                        target: String,
                        key: String,
                    ) -> Result<::berth_sdk::blobs::Blob, ::berth_sdk::Error> {
                        <#plugin as ::berth_sdk::StorageBackend>::get(target, key)
                    }
                    fn list_objects(
                        target: String,
                        prefix: String,
                    ) -> Result<Vec<::berth_sdk::ObjectInfo>, ::berth_sdk::Error> {
                        <#plugin as ::berth_sdk::StorageBackend>::list_objects(target, prefix)
                    }
                    fn delete(target: String, key: String) -> Result<(), ::berth_sdk::Error> {
                        <#plugin as ::berth_sdk::StorageBackend>::delete(target, key)
                    }
                }
            },
        ),
        other => {
            let msg = format!(
                "berth_sdk::export! supports the roles `hook`, `lifecycle` and `storage_backend`; `{other}` is not one of them yet"
            );
            return syn::Error::new(role.span(), msg).to_compile_error().into();
        }
    };
    let wit = concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit");
    let with = IMPORTS.iter().map(|name| {
        let key = format!("berth:plugin/{name}@{CONTRACT_VERSION}");
        let module = Ident::new(name, proc_macro2::Span::call_site());
        quote! { #key: ::berth_sdk::bindings::berth::plugin::#module, }
    });
    quote! {
        #[doc(hidden)]
        #[allow(clippy::all, unused, unsafe_code)]
        mod __berth_plugin_exports {
            use super::*;

            ::berth_sdk::wit_bindgen::generate!({
                world: #world,
                path: #wit,
                runtime_path: "::berth_sdk::wit_bindgen::rt",
                with: { #(#with)* },
            });

            struct Glue;

            impl exports::berth::plugin::plugin::Guest for Glue {
                fn describe() -> ::berth_sdk::Description {
                    <#plugin as ::berth_sdk::Plugin>::describe()
                }
            }

            #glue

            export!(Glue with_types_in self);
        }
    }
    .into()
}
