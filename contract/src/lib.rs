//! The Rust half of Berth's contract: what the host writes and a plugin reads (or the reverse)
//! beyond the WIT's types, in one crate that both sides compile — natively for the host,
//! to `wasm32-wasip2` for the plugins. Nothing here does I/O or knows Wasm.
//!
//! - [`Operation`]: the operations a run performs, by the names the WIT, the API and the state use;
//! - [`backup_key`]: the object key of a backup, written by the engine and read by retention;
//! - [`facts`]: the names of the facts a lifecycle plugin records for the engine to read back;
//! - [`dates`]: the proleptic Gregorian calendar on day counts, for keys and retention;
//! - [`wit_glue!`]: what both sides implement on their own generated bindings, written once.

pub mod backup_key;
pub mod dates;
pub mod facts;
mod glue;
mod operation;

pub use operation::{Operation, UnknownOperation};
