//! The `s3` storage backend: AWS S3 and the S3-compatible services, by preset.
//!
//! Target settings: `provider` (`aws` — the default —, `r2`, `b2`, `minio`), `bucket`, `prefix`,
//! and what the preset needs:
//! - `aws`: `region` (default `us-east-1`); endpoint `https://s3.<region>.amazonaws.com`,
//!   virtual-hosted addressing;
//! - `r2` (Cloudflare): `account-id`; endpoint `https://<account-id>.r2.cloudflarestorage.com`,
//!   region `auto`;
//! - `b2` (Backblaze): `region` (e.g. `us-west-004`); endpoint `https://s3.<region>.backblazeb2.com`;
//! - `minio`: `endpoint` (required), path-style addressing.
//!
//! `endpoint` overrides any preset's (e.g. a private gateway). Credentials (access key, secret key)
//! are the target's secrets, applied by the host.

use berth_sdk::prelude::*;
use berth_sdk::storage::{Protocol, S3Settings};
use berth_sdk::{StorageTarget, TargetSettings};

struct S3;

impl Plugin for S3 {
    fn describe() -> Description {
        Description::storage_backend("s3", env!("CARGO_PKG_VERSION"))
            .summary("S3, Cloudflare R2, Backblaze B2 and MinIO storage targets")
            .capability("storage")
    }
}

/// The connection settings of a target, from its provider's preset.
fn s3_settings(settings: &TargetSettings) -> Result<S3Settings, Error> {
    let provider = settings.get("provider").unwrap_or("aws");
    let bucket = settings.required("bucket")?.to_string();
    let (endpoint, region, path_style) = match provider {
        "aws" => {
            let region = settings.get("region").unwrap_or("us-east-1");
            (
                format!("https://s3.{region}.amazonaws.com"),
                region.to_string(),
                false,
            )
        }
        "r2" => {
            let account = settings.required("account-id")?;
            (
                format!("https://{account}.r2.cloudflarestorage.com"),
                "auto".to_string(),
                true,
            )
        }
        "b2" => {
            let region = settings.required("region")?;
            (
                format!("https://s3.{region}.backblazeb2.com"),
                region.to_string(),
                true,
            )
        }
        "minio" => {
            let endpoint = settings.required("endpoint")?;
            let region = settings.get("region").unwrap_or("us-east-1");
            (endpoint.to_string(), region.to_string(), true)
        }
        other => {
            return Err(Error::invalid(format!(
                "unknown S3 provider {other:?}: expected aws, r2, b2 or minio"
            )));
        }
    };
    Ok(S3Settings {
        endpoint: settings
            .get("endpoint")
            .map(str::to_string)
            .unwrap_or(endpoint),
        region,
        bucket,
        path_style,
    })
}

impl StorageBackend for S3 {
    fn open(target: &str) -> Result<StorageTarget, Error> {
        let settings = TargetSettings::read(target)?;
        settings.connect(&Protocol::S3(s3_settings(&settings)?))
    }
}

berth_sdk::export!(storage_backend: S3);
