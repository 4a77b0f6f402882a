//! A hook plugin that asks the host to hold more than its share, one way per hook point, so tests
//! can show that what the host keeps for a plugin counts against it: `before:hoard-megabytes`
//! keeps blobs of 1 MiB in host memory without end, `before:spill-blob` grows one blob on disk
//! without end, `before:fill-workspace` writes 1 MiB files into its workspace without end, and
//! `before:long-name` hands the host a tar whose first header announces a 512 MiB GNU long name.

use berth_sdk::blobs::Blob;
use berth_sdk::prelude::*;
use berth_sdk::{archive, files};

struct Glutton;

const POINTS: [&str; 4] = [
    "before:hoard-megabytes",
    "before:spill-blob",
    "before:fill-workspace",
    "before:long-name",
];

const MEGABYTE: usize = 1 << 20;

impl Plugin for Glutton {
    fn describe() -> Description {
        let mut d = Description::hook("glutton", env!("CARGO_PKG_VERSION"))
            .summary("Asks the host to hold more than its share (sandbox tests)")
            .capability("files");
        for point in POINTS {
            d = d.on(point);
        }
        d
    }
}

/// A GNU tar header announcing a long name of `size` bytes: the first 512 bytes of a tar whose
/// first member's name would follow.
fn long_name_header(size: u64) -> Vec<u8> {
    let mut header = vec![0u8; 512];
    header[..13].copy_from_slice(b"././@LongLink");
    header[100..108].copy_from_slice(b"0000644\0");
    header[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    header[156] = b'L';
    header[257..265].copy_from_slice(b"ustar  \0");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    header
}

impl Hook for Glutton {
    fn handle(event: Event) -> Result<Verdict, Error> {
        let megabyte = vec![7u8; MEGABYTE];
        match event.point.as_str() {
            "before:hoard-megabytes" => {
                let mut hoard = Vec::new();
                loop {
                    let blob = Blob::new();
                    blob.append(&megabyte)?;
                    hoard.push(blob);
                }
            }
            "before:spill-blob" => {
                let blob = Blob::new();
                loop {
                    blob.append(&megabyte)?;
                }
            }
            "before:fill-workspace" => {
                for i in 0.. {
                    files::write(&format!("fill/{i}"), &megabyte)?;
                }
                Ok(Verdict::Continue)
            }
            "before:long-name" => {
                let tar = Blob::new();
                tar.append(&long_name_header(512 << 20))?;
                let file = archive::tar_file(&tar, "shop/dump.sql")?;
                file.read(0, 16)?;
                Ok(Verdict::Continue)
            }
            other => Err(Error::invalid(format!(
                "glutton has no behaviour for {other}"
            ))),
        }
    }
}

berth_sdk::export!(hook: Glutton);
