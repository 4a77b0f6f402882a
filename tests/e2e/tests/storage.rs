//! The storage-backend plugins against real servers: S3 (s3s-fs) through each preset — AWS, R2, B2,
//! MinIO, their endpoints pointed at the local server —, FTP and FTPS (pure-ftpd) and SFTP (a test
//! server's OpenSSH). Each target is checked, then an object goes up, is listed, comes back
//! identical and is deleted — always as host-side blobs; wrong credentials fail with an error
//! naming the backend; TLS is verified and never given up for plain FTP.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_backends::egress::EgressPolicy;
use berth_backends::ssh::HostKey;
use berth_e2e::{Harness, component, storage_targets};
use berth_runtime::capabilities::blobs::Blob;
use berth_runtime::settings::Secret;
use berth_runtime::{
    Limits, Plugin, Runtime, RuntimeOptions, StorageAnswer, StorageRequest, StorageTarget,
    StorageTargets,
};
use sha2::{Digest, Sha256};

/// Every target of the test bed, by name, with the plugin that serves it.
fn targets() -> (StorageTargets, Vec<(&'static str, &'static str)>) {
    let specs = storage_targets();
    let plugins = specs
        .iter()
        .map(|t| {
            (
                t.name,
                if t.backend == "s3" {
                    "storage_s3"
                } else if t.backend == "ftp" {
                    "storage_ftp"
                } else {
                    "storage_sftp"
                },
            )
        })
        .collect();
    let map: BTreeMap<String, StorageTarget> = specs
        .into_iter()
        .map(|t| {
            let target = StorageTarget {
                settings: t.settings.into_iter().collect(),
                user: t.user,
                secret: Secret::new(t.secret),
                host_key: HostKey::first_contact_in_memory(),
            };
            (t.name.to_string(), target)
        })
        .collect();
    // The test bed's servers are on this machine.
    let egress = EgressPolicy::open();
    (
        StorageTargets {
            targets: map,
            egress,
        },
        plugins,
    )
}

async fn load(runtime: &Runtime, name: &str) -> Plugin {
    runtime.load_file(&component(name)).await.unwrap()
}

fn blob_of(data: &[u8]) -> Blob {
    let mut blob = Blob::new(1 << 30);
    blob.append(data).unwrap();
    blob
}

/// Reads a fetched object (a stream) to its end and returns its SHA-256.
async fn sha(mut blob: Blob) -> String {
    blob.sha256().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_backend_stores_lists_returns_and_deletes() {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let (storage, plugins) = targets();
    // 12 MiB: more than one S3 multipart part.
    let data: Vec<u8> = (0..12u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let expected = hex::encode(Sha256::digest(&data));
    for (name, plugin) in plugins {
        let plugin = load(&runtime, plugin).await;
        let mut h = Harness::new("storage", plugin.name(), &["storage"]);
        h.lend(Arc::new(storage.clone()));
        // Transfers and logins take the time they take (pure-ftpd delays a failed login on purpose).
        h.invocation.limits = Limits::step();
        let call = async |request| {
            plugin
                .storage(&runtime, &h.invocation, name, request)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        assert!(matches!(
            call(StorageRequest::Check).await,
            StorageAnswer::Checked
        ));
        let key = format!("{name}/2026-11-27.zip");
        let put = StorageRequest::Put {
            key: key.clone(),
            data: blob_of(&data),
        };
        let StorageAnswer::Stored(info) = call(put).await else {
            panic!("{name}: put")
        };
        assert_eq!(
            (info.key.as_str(), info.size),
            (key.as_str(), data.len() as u64),
            "{name}"
        );
        let StorageAnswer::Listed(listed) = call(StorageRequest::List {
            prefix: format!("{name}/"),
        })
        .await
        else {
            panic!("{name}: list")
        };
        assert_eq!(
            listed
                .iter()
                .map(|o| (o.key.as_str(), o.size))
                .collect::<Vec<_>>(),
            [(key.as_str(), data.len() as u64)],
            "{name}"
        );
        let StorageAnswer::Fetched(back) = call(StorageRequest::Get { key: key.clone() }).await
        else {
            panic!("{name}: get")
        };
        assert_eq!(
            sha(back).await,
            expected,
            "{name}: the object came back identical"
        );
        assert!(matches!(
            call(StorageRequest::Delete { key: key.clone() }).await,
            StorageAnswer::Deleted
        ));
        let StorageAnswer::Listed(after) = call(StorageRequest::List {
            prefix: format!("{name}/"),
        })
        .await
        else {
            panic!("{name}: list")
        };
        assert!(after.is_empty(), "{name}: {after:?}");
        let missing = plugin
            .storage(&runtime, &h.invocation, name, StorageRequest::Get { key })
            .await
            .unwrap_err();
        assert_eq!(
            missing.plugin_error().map(|e| e.kind()),
            Some("not-found"),
            "{name}: {missing}"
        );
    }
}

/// The error of a `check` of target `name` that must fail.
async fn failed_check(
    runtime: &Runtime,
    plugin: &Plugin,
    storage: StorageTargets,
    name: &str,
) -> String {
    let mut h = Harness::new("storage", plugin.name(), &["storage"]);
    h.lend(Arc::new(storage));
    // Transfers and logins take the time they take (pure-ftpd delays a failed login on purpose).
    h.invocation.limits = Limits::step();
    plugin
        .storage(runtime, &h.invocation, name, StorageRequest::Check)
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_fail_the_check_naming_the_backend() {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = targets();
    let other_key = dir.path().join("other");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key)
        .status()
        .unwrap();
    assert!(made.success());
    let other_key = std::fs::read_to_string(&other_key).unwrap();
    for (name, wrong) in [
        ("minio", "not-the-secret"),
        ("ftp", "not-the-password"),
        ("ftps", "not-the-password"),
        ("sftp", other_key.as_str()),
    ] {
        storage.targets.get_mut(name).unwrap().secret = Secret::new(wrong);
    }
    for (name, plugin, says) in [
        ("minio", "storage_s3", "S3"),
        ("ftp", "storage_ftp", "FTP login of berth"),
        ("ftps", "storage_ftp", "FTP login of berth"),
        ("sftp", "storage_sftp", "refused the key"),
    ] {
        let plugin = load(&runtime, plugin).await;
        let message = failed_check(&runtime, &plugin, storage.clone(), name).await;
        assert!(message.contains(says), "{name}: {message}");
        assert!(
            !message.contains("not-the-"),
            "{name}: the secret is not in the error: {message}"
        );
    }
    // Without the grant, nothing is reached.
    let plugin = load(&runtime, "storage_s3").await;
    let mut h = Harness::new("storage", plugin.name(), &[]);
    h.lend(Arc::new(storage.clone()));
    let err = plugin
        .storage(&runtime, &h.invocation, "minio", StorageRequest::Check)
        .await
        .unwrap_err();
    assert_eq!(
        err.plugin_error().map(|e| e.kind()),
        Some("denied"),
        "{err}"
    );
}

/// The FTPS server refuses plain control and data connections, so the round trip above went over
/// TLS. Here: its certificate is refused when its CA is not trusted, even with `when-offered` (no
/// fall back to plain FTP); TLS turned off meets the server's refusal; a server that refuses
/// `AUTH TLS` is refused when the target requires TLS; an unknown mode is named.
#[tokio::test(flavor = "multi_thread")]
async fn ftp_tls_is_verified_and_never_given_up() {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let (storage, _) = targets();
    let plugin = load(&runtime, "storage_ftp").await;
    let untrusted = [("tls", "when-offered"), ("tls-ca", "")];
    for (name, settings, says) in [
        ("ftps", &untrusted[..], "invalid peer certificate"),
        ("ftps", &[("tls", "off")], "FTP login of berth"),
        ("ftp", &[("tls", "required")], "refuses AUTH TLS"),
        (
            "ftp",
            &[("tls", "sometimes")],
            "expected when-offered, required or off",
        ),
    ] {
        let mut storage = storage.clone();
        let target = storage.targets.get_mut(name).unwrap();
        for (key, value) in settings {
            target.settings.insert(key.to_string(), value.to_string());
        }
        let message = failed_check(&runtime, &plugin, storage, name).await;
        assert!(
            message.contains(says),
            "{name} with {settings:?}: {message}"
        );
    }
}

/// An FTP server's PASV answer sent the data connection to any address it named (here a private
/// address): data connections go to the server the control connection reached.
#[tokio::test(flavor = "multi_thread")]
async fn a_pasv_answer_cannot_send_the_data_connection_elsewhere() {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let (address, user, password) = berth_e2e::testbed().ftp_liar;
    let (host, port) = address.split_once(':').unwrap();
    let settings = [
        ("host", host),
        ("port", port),
        ("prefix", "backups"),
        ("tls", "off"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let storage = StorageTargets {
        targets: BTreeMap::from([(
            "liar".to_string(),
            StorageTarget {
                settings,
                user,
                secret: Secret::new(password),
                host_key: HostKey::first_contact_in_memory(),
            },
        )]),
        egress: EgressPolicy::open(),
    };
    let plugin = load(&runtime, "storage_ftp").await;
    let mut h = Harness::new("storage", plugin.name(), &["storage"]);
    h.lend(Arc::new(storage));
    h.invocation.limits = Limits::step();
    // A data connection sent to the named address never completes: it would run into this.
    h.invocation.limits.deadline = std::time::Duration::from_secs(20);
    let checked = plugin
        .storage(&runtime, &h.invocation, "liar", StorageRequest::Check)
        .await;
    assert!(checked.is_ok(), "{checked:?}");
}
