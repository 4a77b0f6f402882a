//! The real backends Berth lends to plugins. Nothing here knows about WebAssembly: the runtime
//! crate checks grants and translates to the WIT contract; these modules talk to real servers.

pub mod database;
pub mod docker;
pub mod git;
pub mod odoo_zip;
pub mod ssh;
pub mod storage;
