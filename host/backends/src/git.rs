//! Git on the control plane (libgit2): one bare mirror per repository URL, fetched by Berth, and
//! commit trees exported to servers as tar archives over SSH — servers never hold git credentials
//! and never run git.
//!
//! Calls here block (libgit2 is synchronous); async callers run them on a blocking thread.

use std::io::Write;
use std::path::{Path, PathBuf};

use git2::{FetchOptions, ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use sha2::{Digest, Sha256};

use crate::ssh::{Command, SshPool, Target};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

fn failed(what: &str, err: git2::Error) -> GitError {
    if err.code() == git2::ErrorCode::NotFound {
        GitError::NotFound(format!("{what}: {}", err.message()))
    } else {
        GitError::Failed(format!("{what}: {}", err.message()))
    }
}

/// The control plane's mirrors, one bare repository per URL under `root`.
#[derive(Clone, Debug)]
pub struct Mirrors {
    root: PathBuf,
}

impl Mirrors {
    pub fn new(root: &Path) -> Result<Self, GitError> {
        std::fs::create_dir_all(root).map_err(|e| {
            GitError::Failed(format!(
                "cannot create the mirror directory {}: {e}",
                root.display()
            ))
        })?;
        Ok(Mirrors {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, url: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(url.as_bytes()));
        self.root.join(format!("{}.git", &digest[..24]))
    }

    /// The mirror of `url`; it must have been fetched.
    fn open(&self, url: &str) -> Result<Repository, GitError> {
        let path = self.path(url);
        if !path.exists() {
            return Err(GitError::NotFound(format!(
                "{url} has not been fetched yet"
            )));
        }
        Repository::open_bare(&path).map_err(|e| failed(&format!("opening the mirror of {url}"), e))
    }

    /// Creates or updates the mirror of `url` (all branches and tags, pruned).
    pub fn fetch(&self, url: &str) -> Result<(), GitError> {
        if url.is_empty() || url.starts_with('-') {
            return Err(GitError::Invalid(format!(
                "{url:?} is not a repository URL"
            )));
        }
        let path = self.path(url);
        let repo = match Repository::open_bare(&path) {
            Ok(repo) => repo,
            Err(_) => Repository::init_bare(&path).map_err(|e| failed("creating a mirror", e))?,
        };
        let mut remote = repo
            .remote_anonymous(url)
            .map_err(|e| failed(&format!("remote {url}"), e))?;
        let mut options = FetchOptions::new();
        options.prune(git2::FetchPrune::On);
        remote
            .fetch(
                &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                Some(&mut options),
                None,
            )
            .map_err(|e| GitError::Failed(format!("fetching {url}: {}", e.message())))
    }

    /// Resolves a branch, tag or commit id of a fetched repository to a commit id.
    pub fn resolve(&self, url: &str, reference: &str) -> Result<String, GitError> {
        let repo = self.open(url)?;
        let candidates = [
            format!("refs/heads/{reference}"),
            format!("refs/tags/{reference}"),
            reference.to_string(),
        ];
        for candidate in &candidates {
            if let Ok(object) = repo.revparse_single(candidate)
                && let Ok(commit) = object.peel_to_commit()
            {
                return Ok(commit.id().to_string());
            }
        }
        Err(GitError::NotFound(format!(
            "{url} has no branch, tag or commit {reference:?}"
        )))
    }

    fn commit<'r>(repo: &'r Repository, url: &str, id: &str) -> Result<git2::Commit<'r>, GitError> {
        let oid = Oid::from_str(id)
            .map_err(|_| GitError::Invalid(format!("{id:?} is not a commit id")))?;
        repo.find_commit(oid)
            .map_err(|e| failed(&format!("commit {id} of {url}"), e))
    }

    /// Paths changed between two commits (added, modified, deleted, both sides of renames).
    pub fn changed_paths(
        &self,
        url: &str,
        base: &str,
        head: &str,
    ) -> Result<Vec<String>, GitError> {
        let repo = self.open(url)?;
        let old = Self::commit(&repo, url, base)?
            .tree()
            .map_err(|e| failed("tree", e))?;
        let new = Self::commit(&repo, url, head)?
            .tree()
            .map_err(|e| failed("tree", e))?;
        let diff = repo
            .diff_tree_to_tree(Some(&old), Some(&new), None)
            .map_err(|e| failed("diff", e))?;
        let mut paths = std::collections::BTreeSet::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(path) = file.path() {
                    paths.insert(path.to_string_lossy().into_owned());
                }
            }
        }
        Ok(paths.into_iter().collect())
    }

    /// Writes the tree of `commit` as a tar archive to `out`. Returns the number of files.
    pub fn archive(&self, url: &str, commit: &str, out: impl Write) -> Result<u64, GitError> {
        let repo = self.open(url)?;
        let tree = Self::commit(&repo, url, commit)?
            .tree()
            .map_err(|e| failed("tree", e))?;
        let mut tar = tar::Builder::new(out);
        let mut files = 0u64;
        let mut error = None;
        tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
            let path = format!("{dir}{}", entry.name().unwrap_or_default());
            let appended = match entry.kind() {
                Some(ObjectType::Blob) => entry
                    .to_object(&repo)
                    .and_then(|o| o.peel_to_blob())
                    .map(|blob| {
                        let mut header = tar::Header::new_gnu();
                        let link = entry.filemode() == 0o120000;
                        header.set_entry_type(if link {
                            tar::EntryType::Symlink
                        } else {
                            tar::EntryType::Regular
                        });
                        header.set_mode(if entry.filemode() == 0o100755 {
                            0o755
                        } else {
                            0o644
                        });
                        header.set_mtime(0);
                        if link {
                            header.set_size(0);
                            let target = String::from_utf8_lossy(blob.content()).into_owned();
                            tar.append_link(&mut header, &path, target)
                        } else {
                            header.set_size(blob.size() as u64);
                            tar.append_data(&mut header, &path, blob.content())
                        }
                    }),
                _ => return TreeWalkResult::Ok,
            };
            match appended {
                Ok(Ok(())) => {
                    files += 1;
                    TreeWalkResult::Ok
                }
                Ok(Err(e)) => {
                    error = Some(GitError::Failed(format!("archiving {path}: {e}")));
                    TreeWalkResult::Abort
                }
                Err(e) => {
                    error = Some(failed(&format!("reading {path}"), e));
                    TreeWalkResult::Abort
                }
            }
        })
        .map_err(|e| {
            error
                .take()
                .unwrap_or_else(|| failed("walking the tree", e))
        })?;
        if let Some(e) = error {
            return Err(e);
        }
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(|e| GitError::Failed(format!("finishing the archive: {e}")))?;
        Ok(files)
    }

    /// Replaces `destination` (an absolute path on `target`) with the tree of `commit`: the archive
    /// is built on the control plane (spooled to a temporary file), sent over SFTP, unpacked into a
    /// fresh directory and swapped in, so a failed export leaves the old code in place.
    pub async fn export(
        &self,
        pool: &SshPool,
        target: &Target,
        url: &str,
        commit: &str,
        destination: &str,
    ) -> Result<u64, GitError> {
        if !destination.starts_with('/') || destination.split('/').any(|c| c == ".." || c == ".") {
            return Err(GitError::Invalid(format!(
                "{destination:?} is not a clean absolute path"
            )));
        }
        let (mirrors, url_owned, commit_owned) =
            (self.clone(), url.to_string(), commit.to_string());
        let (spool, files) = tokio::task::spawn_blocking(move || {
            let mut spool = tempfile::tempfile()
                .map_err(|e| GitError::Failed(format!("spooling the archive: {e}")))?;
            let files = mirrors.archive(&url_owned, &commit_owned, &mut spool)?;
            use std::io::Seek;
            spool
                .rewind()
                .map_err(|e| GitError::Failed(format!("spooling the archive: {e}")))?;
            Ok::<_, GitError>((spool, files))
        })
        .await
        .map_err(|e| GitError::Failed(format!("archive worker: {e}")))??;

        let ssh = |e: crate::ssh::SshError| GitError::Failed(format!("exporting to {target}: {e}"));
        let staging = format!("{destination}.incoming");
        let archive = format!("{destination}.tar");
        let parent = destination
            .rsplit_once('/')
            .map(|(p, _)| p)
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        let run = async |argv: &[&str]| -> Result<(), GitError> {
            let out = pool
                .exec(target, &Command::new(argv.iter().copied()), &mut |_, _| {})
                .await
                .map_err(ssh)?;
            if out.status != 0 {
                return Err(GitError::Failed(format!(
                    "exporting to {target}: `{}` exited with {}: {}",
                    argv[0],
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Ok(())
        };
        run(&["mkdir", "-p", parent]).await?;
        let mut spool = tokio::fs::File::from_std(spool);
        pool.upload(target, &mut spool, &archive, 0o600)
            .await
            .map_err(ssh)?;
        run(&["rm", "-rf", &staging]).await?;
        run(&["mkdir", "-p", &staging]).await?;
        run(&["tar", "-x", "-f", &archive, "-C", &staging]).await?;
        let previous = format!("{destination}.previous");
        run(&["rm", "-rf", &previous]).await?;
        run(&[
            "sh",
            "-c",
            "[ ! -e \"$1\" ] || mv -- \"$1\" \"$2\"",
            "sh",
            destination,
            &previous,
        ])
        .await?;
        run(&["mv", "--", &staging, destination]).await?;
        run(&["rm", "-rf", "--", &previous, &archive]).await?;
        Ok(files)
    }
}
