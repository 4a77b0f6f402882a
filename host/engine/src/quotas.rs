//! Per-organization upload quotas. Every upload is compiled, and a crafted one can keep the
//! compiler busy for a long time: how often and how much an organization uploads, and how many
//! plugins it keeps, are bounded so that one tenant cannot hold the compile slot or the disk.
//! The operator sets them per organization; without that, the defaults below hold.

use berth_state::{PluginRecord, UPLOAD_WINDOW_MS, UploadQuota};
use serde::Serialize;

use crate::{Engine, EngineError};

/// How many plugins (by name) an organization may keep, unless the operator says otherwise.
pub const DEFAULT_MAX_PLUGINS: u32 = 20;
/// How many uploads an organization may make in an hour, unless the operator says otherwise.
pub const DEFAULT_UPLOADS_PER_HOUR: u32 = 10;
/// How many MiB an organization may upload in an hour, unless the operator says otherwise.
pub const DEFAULT_UPLOAD_MIB_PER_HOUR: u32 = 100;

/// The quotas in force for one organization: the operator's, or the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct UploadLimits {
    pub max_plugins: u32,
    pub uploads_per_hour: u32,
    pub upload_mib_per_hour: u32,
}

impl UploadLimits {
    fn of(quota: UploadQuota) -> Self {
        UploadLimits {
            max_plugins: quota.max_plugins.unwrap_or(DEFAULT_MAX_PLUGINS),
            uploads_per_hour: quota.uploads_per_hour.unwrap_or(DEFAULT_UPLOADS_PER_HOUR),
            upload_mib_per_hour: quota
                .upload_mib_per_hour
                .unwrap_or(DEFAULT_UPLOAD_MIB_PER_HOUR),
        }
    }

    fn bytes_per_hour(&self) -> u64 {
        u64::from(self.upload_mib_per_hour) << 20
    }
}

impl Engine {
    /// The upload quotas in force for organization `org_id`.
    pub fn upload_limits(&self, org_id: i64) -> Result<UploadLimits, EngineError> {
        Ok(UploadLimits::of(self.store.upload_quota(org_id)?))
    }

    /// Validates and installs a hook plugin uploaded by organization `org_id`, within its quotas:
    /// the upload is counted (or refused, `Limited`) before anything compiles, and a plugin of a
    /// new name is refused once the organization keeps its maximum.
    pub async fn upload_plugin(
        &self,
        org_id: i64,
        bytes: &[u8],
    ) -> Result<PluginRecord, EngineError> {
        let limits = self.upload_limits(org_id)?;
        let size = bytes.len() as u64;
        let (window, counted) = self.store.count_upload(org_id, size, |window| {
            window.uploads < limits.uploads_per_hour
                && window.bytes + size <= limits.bytes_per_hour()
        })?;
        if !counted {
            let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
            if size > limits.bytes_per_hour() {
                return Err(EngineError::Limited(format!(
                    "upload quota: this upload ({:.1} MiB) is more than the organization may \
                     upload in an hour ({} MiB); ask the operator to raise it",
                    mib(size),
                    limits.upload_mib_per_hour
                )));
            }
            let wait_ms = window.oldest_at.map_or(0, |oldest| {
                oldest + UPLOAD_WINDOW_MS - berth_state::now_ms()
            });
            return Err(EngineError::Limited(format!(
                "upload quota: the organization uploaded {} plugin(s), {:.1} MiB, in the last \
                 hour; its quota is {} upload(s) and {} MiB an hour (this upload: {:.1} MiB); \
                 try again in {} minute(s), or ask the operator to raise it",
                window.uploads,
                mib(window.bytes),
                limits.uploads_per_hour,
                limits.upload_mib_per_hour,
                mib(size),
                (wait_ms.max(0) + 59_999) / 60_000
            )));
        }
        self.plugins
            .upload(
                &self.store,
                &self.runtime,
                org_id,
                bytes,
                limits.max_plugins,
            )
            .await
    }
}
