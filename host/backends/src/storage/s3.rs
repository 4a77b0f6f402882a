//! S3 and S3-compatible services (AWS, Cloudflare R2, Backblaze B2, MinIO…) through aws-sdk-s3:
//! an explicit endpoint, region and addressing style (the backend plugin's presets choose them),
//! multipart uploads in parts of [`PART_SIZE`], streamed downloads.
//!
//! The endpoint is a tenant's destination: the client's connector resolves every name through the
//! egress policy ([`EgressResolver`]) and connects only to the addresses it checked, so a name that
//! resolves elsewhere after the API's check is refused when the connection is made; an address
//! literal (which the connector does not resolve) is checked when the client is opened. The SDK
//! follows no redirect: an answer of 3xx is an error.

use aws_sdk_s3::config::{BehaviorVersion, Credentials as AwsCredentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};

use crate::egress::{EgressError, EgressPolicy, url_host};

use super::{Credentials, ObjectInfo, PART_SIZE, Result, StorageError, read_full};
use crate::{Sink, Source};
use tokio::io::AsyncWriteExt;

pub struct S3 {
    client: aws_sdk_s3::Client,
    bucket: String,
    endpoint: String,
}

/// A precise error: the service's code (`InvalidAccessKeyId`, `NoSuchBucket`, …) when it gave one.
fn s3_error<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    what: &str,
    endpoint: &str,
    err: SdkError<E, R>,
) -> StorageError {
    let code = err
        .as_service_error()
        .and_then(|e| e.code())
        .map(str::to_string);
    let message = err
        .as_service_error()
        .and_then(|e| e.message())
        .map(str::to_string);
    let detail = match (&code, &message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.clone(),
        _ => match &err {
            SdkError::DispatchFailure(e) => match e.as_connector_error().and_then(|c| refusal(c)) {
                Some(refused) => {
                    return StorageError::Invalid(format!("S3 {what} at {endpoint}: {refused}"));
                }
                None => format!("cannot reach the endpoint ({e:?})"),
            },
            SdkError::TimeoutError(_) => "timed out".into(),
            other => format!("{other}"),
        },
    };
    let text = format!("S3 {what} at {endpoint}: {detail}");
    match code.as_deref() {
        Some("NoSuchKey" | "NotFound" | "NoSuchBucket") => StorageError::NotFound(text),
        Some(
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AccessDenied"
            | "Forbidden"
            | "InvalidToken",
        ) => StorageError::Denied(text),
        _ => StorageError::Failed(text),
    }
}

/// The S3 connector's name resolver: [`EgressPolicy::resolve`], so every address is checked and
/// the connector reaches only those.
#[derive(Clone, Debug)]
struct EgressResolver(EgressPolicy);

impl ResolveDns for EgressResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move {
            let addresses = self
                .0
                .resolve(name, 0)
                .await
                .map_err(ResolveDnsError::new)?;
            Ok(addresses.into_iter().map(|a| a.ip()).collect())
        })
    }
}

/// The egress policy's refusal behind a failed dispatch, if that is why it failed.
fn refusal<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e EgressError> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(refused) = error.downcast_ref::<EgressError>() {
            return Some(refused);
        }
        cause = error.source();
    }
    None
}

impl S3 {
    /// A client of `endpoint` whose connections go only where `egress` allows.
    pub fn open(
        endpoint: &str,
        region: &str,
        bucket: &str,
        path_style: bool,
        credentials: &Credentials,
        egress: &EgressPolicy,
    ) -> Result<Self> {
        egress
            .check_host(url_host(endpoint))
            .map_err(|e| StorageError::Invalid(format!("S3 endpoint {endpoint}: {e}")))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .build_with_resolver(EgressResolver(egress.clone()));
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .endpoint_url(endpoint)
            .region(Region::new(region.to_string()))
            .force_path_style(path_style)
            .credentials_provider(AwsCredentials::new(
                &credentials.user,
                &credentials.secret,
                None,
                None,
                "berth-storage-target",
            ))
            .build();
        Ok(S3 {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket: bucket.to_string(),
            endpoint: endpoint.to_string(),
        })
    }

    /// One `PutObject` when the data fits in a part, a multipart upload otherwise: the first part
    /// is read before deciding, so a stream of unknown size needs no spooling.
    pub async fn put(&self, key: &str, data: Source<'_>) -> Result<ObjectInfo> {
        let io =
            |e: std::io::Error| StorageError::Failed(format!("reading the data for {key}: {e}"));
        let mut first = vec![0u8; PART_SIZE];
        let n = read_full(data, &mut first).await.map_err(io)?;
        if n < PART_SIZE {
            let mut body = first;
            body.truncate(n);
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| s3_error(&format!("upload of {key}"), &self.endpoint, e))?;
            return Ok(ObjectInfo {
                key: key.to_string(),
                size: n as u64,
                modified: None,
            });
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(&format!("upload of {key}"), &self.endpoint, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        match self.parts(key, &upload_id, first, data).await {
            Ok(size) => Ok(ObjectInfo {
                key: key.to_string(),
                size,
                modified: None,
            }),
            Err(e) => {
                // Leave no half-uploaded parts to pay for.
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    /// Sends `first` (a full part) then the rest of `data`, part by part, and completes the upload.
    async fn parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Vec<u8>,
        data: Source<'_>,
    ) -> Result<u64> {
        let mut parts = Vec::new();
        let mut total = 0u64;
        let mut buffer = first;
        for number in 1.. {
            let n = if number == 1 {
                buffer.len()
            } else {
                read_full(data, &mut buffer)
                    .await
                    .map_err(|e| StorageError::Failed(format!("reading the data for {key}: {e}")))?
            };
            if n == 0 && number > 1 {
                break;
            }
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(buffer[..n].to_vec()))
                .send()
                .await
                .map_err(|e| {
                    s3_error(
                        &format!("upload of {key} (part {number})"),
                        &self.endpoint,
                        e,
                    )
                })?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
            total += n as u64;
            if n < PART_SIZE {
                break;
            }
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error(&format!("upload of {key}"), &self.endpoint, e))?;
        Ok(total)
    }

    pub async fn get(&self, key: &str, sink: Sink<'_>) -> Result<u64> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(&format!("download of {key}"), &self.endpoint, e))?;
        let mut body = object.body;
        let mut total = 0u64;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StorageError::Failed(format!("S3 download of {key}: {e}")))?
        {
            sink.write_all(&chunk)
                .await
                .map_err(|e| StorageError::Failed(format!("storing {key}: {e}")))?;
            total += chunk.len() as u64;
        }
        sink.flush()
            .await
            .map_err(|e| StorageError::Failed(format!("storing {key}: {e}")))?;
        Ok(total)
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: head.content_length().unwrap_or(0).max(0) as u64,
                modified: head.last_modified().map(|t| t.secs().max(0) as u64),
            })),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(s3_error(&format!("lookup of {key}"), &self.endpoint, e)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut objects = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("listing", &self.endpoint, e))?;
            for object in page.contents() {
                objects.push(ObjectInfo {
                    key: object.key().unwrap_or_default().to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified: object.last_modified().map(|t| t.secs().max(0) as u64),
                });
            }
        }
        Ok(objects)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(&format!("deletion of {key}"), &self.endpoint, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Credentials, S3, StorageError};
    use crate::egress::EgressPolicy;
    use crate::egress::testing::{Server, own_name};

    fn open(endpoint: &str, egress: &EgressPolicy) -> super::Result<S3> {
        let credentials = Credentials {
            user: "access".into(),
            secret: "secret".into(),
        };
        S3::open(endpoint, "us-east-1", "backups", true, &credentials, egress)
    }

    /// The SDK resolved an endpoint's name itself, after the API's check: a name resolving to the
    /// control plane's own machine was reached, and its answer read.
    #[tokio::test]
    async fn an_endpoint_name_that_now_resolves_inside_is_refused_at_connect() {
        let server = Server::answering(String::new());
        let policy = EgressPolicy::public_only();
        let s3 = open(&format!("http://{}:{}", own_name(), server.port), &policy).unwrap();
        let refused = s3.list("").await.unwrap_err();
        assert!(
            matches!(&refused, StorageError::Invalid(m) if m.contains("does not connect there")),
            "{refused}"
        );
        assert_eq!(server.connections(), 0, "the client reached the server");
        let literal = open(&format!("http://127.1:{}", server.port), &policy);
        assert!(
            matches!(literal, Err(StorageError::Invalid(_))),
            "127.1 was accepted"
        );
    }

    /// An endpoint allowed when it was checked must not send the client elsewhere: the SDK
    /// follows no redirect.
    #[tokio::test]
    async fn an_endpoint_redirect_is_not_followed() {
        let inside = Server::answering(String::new());
        let outside = Server::answering(format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://localhost:{}/backups\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            inside.port
        ));
        let s3 = open(
            &format!("http://127.0.0.1:{}", outside.port),
            &EgressPolicy::open(),
        )
        .unwrap();
        assert!(s3.list("").await.is_err());
        assert!(outside.connections() >= 1);
        assert_eq!(inside.connections(), 0, "the redirect was followed");
    }
}
