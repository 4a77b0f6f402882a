//! Git on the control plane (libgit2): one bare mirror per repository URL, fetched by Berth, and
//! commit trees exported to servers as tar archives over SSH — servers never hold git credentials
//! and never run git.
//!
//! Calls here block (libgit2 is synchronous); async callers run them on a blocking thread.
//!
//! A fetch is a tenant's connection: its URL is checked again when it is fetched, under the egress
//! policy (the API checked it when it was added, but a name may resolve elsewhere by now), and
//! libgit2 follows no redirect to another host.
//!
//! Mirrors would otherwise grow with every repository ever added: each use marks its mirror (its
//! directory's modification time), and [`Mirrors::prune`] removes those no repository names any
//! more and those unused for long (a removed mirror is simply fetched whole again).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use git2::{FetchOptions, ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use sha2::{Digest, Sha256};

use crate::egress::{EgressPolicy, authority_host};
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

/// Marks a mirror used now (its directory's modification time). A mirror that cannot be marked
/// is pruned earlier than it could be and fetched again: a cost, not a fault.
fn mark_used(path: &Path) {
    let _ = std::fs::File::open(path).and_then(|dir| dir.set_modified(SystemTime::now()));
}

fn failed(what: &str, err: git2::Error) -> GitError {
    if err.code() == git2::ErrorCode::NotFound {
        GitError::NotFound(format!("{what}: {}", err.message()))
    } else {
        GitError::Failed(format!("{what}: {}", err.message()))
    }
}

/// Refuses a repository URL an organization must not use: a path or `file://` on the control
/// plane (other tenants' mirrors) unless the policy is open, a scheme other than `https://`,
/// `ssh://` or `user@host:path`, credentials in the URL (they are shown and logged), and any host
/// the egress policy refuses as written. Returns the host and port the URL reaches (`None`: a
/// path).
pub fn check_url<'u>(
    url: &'u str,
    egress: &EgressPolicy,
) -> Result<Option<(&'u str, u16)>, GitError> {
    let refuse = |why: &str| Err(GitError::Invalid(format!("repository URL {url:?}: {why}")));
    let local = url.starts_with("file:") || url.starts_with('/') || url.starts_with('.');
    if local {
        return if egress.is_open() {
            Ok(None)
        } else {
            refuse("a path on the control plane is not a repository an organization may use")
        };
    }
    let (authority, scp, port) = if let Some(rest) = url.strip_prefix("https://") {
        (rest.split('/').next().unwrap_or(""), false, 443)
    } else if let Some(rest) = url.strip_prefix("ssh://") {
        (rest.split('/').next().unwrap_or(""), false, 22)
    } else if !url.contains("://") && url.contains('@') && url.contains(':') {
        (url.split(':').next().unwrap_or(""), true, 22)
    } else {
        return refuse("use https://, ssh:// or user@host:path");
    };
    let userinfo = authority.rsplit_once('@').map(|(user, _)| user);
    if !scp && userinfo.is_some_and(|u| u.contains(':')) {
        return refuse("credentials do not belong in a URL (use an SSH deploy key)");
    }
    let host = authority_host(authority);
    if host.is_empty() {
        return refuse("it names no host");
    }
    if let Err(e) = egress.check_host(host) {
        return refuse(&e.to_string());
    }
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(_, rest)| rest),
        None => host_port.split_once(':').map_or("", |(_, port)| port),
    };
    let port = match after_host.trim_start_matches(':') {
        "" => port,
        given if scp => return refuse(&format!("{given:?} after the host is not a port")),
        given => match given.parse() {
            Ok(port) => port,
            Err(_) => return refuse(&format!("{given:?} is not a port")),
        },
    };
    Ok(Some((host, port)))
}

/// The control plane's mirrors, one bare repository per URL under `root`, fetched under an egress
/// policy.
#[derive(Clone, Debug)]
pub struct Mirrors {
    root: PathBuf,
    egress: EgressPolicy,
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
            egress: EgressPolicy::open(),
        })
    }

    /// The mirrors with every fetch checked by `egress`: the URL as [`check_url`] checks it, and
    /// every address its host resolves to at fetch time.
    pub fn with_egress(mut self, egress: EgressPolicy) -> Self {
        self.egress = egress;
        self
    }

    /// The directory name of `url`'s mirror.
    fn name(url: &str) -> String {
        let digest = hex::encode(Sha256::digest(url.as_bytes()));
        format!("{}.git", &digest[..24])
    }

    fn path(&self, url: &str) -> PathBuf {
        self.root.join(Self::name(url))
    }

    /// The mirror of `url`; it must have been fetched. Opening it marks it used.
    fn open(&self, url: &str) -> Result<Repository, GitError> {
        let path = self.path(url);
        if !path.exists() {
            return Err(GitError::NotFound(format!(
                "{url} has not been fetched yet"
            )));
        }
        mark_used(&path);
        Repository::open_bare(&path).map_err(|e| failed(&format!("opening the mirror of {url}"), e))
    }

    /// Removes the mirrors of URLs not in `urls` (their repository is gone) and those not used
    /// for `unused_for`; returns the directories removed. A mirror is directory under the root
    /// named like [`Self::name`]; nothing else there is touched.
    pub fn prune(&self, urls: &[String], unused_for: Duration) -> Result<Vec<PathBuf>, GitError> {
        let io = |e: std::io::Error| {
            GitError::Failed(format!(
                "pruning the mirrors in {}: {e}",
                self.root.display()
            ))
        };
        let wanted: HashSet<String> = urls.iter().map(|url| Self::name(url)).collect();
        let stale_before = SystemTime::now()
            .checked_sub(unused_for)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_mirror = name.len() == 28
                && name.ends_with(".git")
                && name[..24].bytes().all(|b| b.is_ascii_hexdigit());
            let meta = entry.metadata().map_err(io)?;
            if !is_mirror || !meta.is_dir() {
                continue;
            }
            let used = meta.modified().map_err(io)?;
            if wanted.contains(&name) && used >= stale_before {
                continue;
            }
            std::fs::remove_dir_all(entry.path()).map_err(io)?;
            removed.push(entry.path());
        }
        Ok(removed)
    }

    /// Creates or updates the mirror of `url` (all branches and tags, pruned), once its URL and
    /// every address its host resolves to now pass the egress policy.
    pub fn fetch(&self, url: &str) -> Result<(), GitError> {
        if url.is_empty() || url.starts_with('-') {
            return Err(GitError::Invalid(format!(
                "{url:?} is not a repository URL"
            )));
        }
        if !self.egress.is_open()
            && let Some((host, port)) = check_url(url, &self.egress)?
        {
            self.egress
                .resolve_blocking(host, port)
                .map_err(|e| GitError::Invalid(format!("repository URL {url:?}: {e}")))?;
        }
        self.download(url)
    }

    /// The fetch itself, redirects to another host refused (a redirect is a destination no one
    /// checked).
    fn download(&self, url: &str) -> Result<(), GitError> {
        let path = self.path(url);
        let repo = match Repository::open_bare(&path) {
            Ok(repo) => repo,
            Err(_) => Repository::init_bare(&path).map_err(|e| failed("creating a mirror", e))?,
        };
        mark_used(&path);
        let mut remote = repo
            .remote_anonymous(url)
            .map_err(|e| failed(&format!("remote {url}"), e))?;
        let mut options = FetchOptions::new();
        options
            .prune(git2::FetchPrune::On)
            .follow_redirects(git2::RemoteRedirect::None);
        remote
            .fetch(
                &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                Some(&mut options),
                None,
            )
            .map_err(|e| GitError::Failed(format!("fetching {url}: {}", e.message())))
    }

    /// Resolves a branch, tag or commit id of a fetched repository to a commit id.
    /// A full commit id is only ever that commit: never a branch or tag someone named with 40 hex
    /// digits to stand in for it.
    pub fn resolve(&self, url: &str, reference: &str) -> Result<String, GitError> {
        let repo = self.open(url)?;
        if reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            let commit = Oid::from_str(reference)
                .and_then(|id| repo.find_commit(id))
                .map_err(|e| {
                    GitError::NotFound(format!("{url} has no commit {reference}: {}", e.message()))
                })?;
            return Ok(commit.id().to_string());
        }
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

    /// Whether `branch` of a fetched repository reaches `commit`: it is the branch's head or one
    /// of its ancestors. A commit of another branch, or one the repository does not hold (a
    /// fork's), is not reached.
    pub fn reaches(&self, url: &str, branch: &str, commit: &str) -> Result<bool, GitError> {
        let repo = self.open(url)?;
        let wanted = Oid::from_str(commit)
            .ok()
            .filter(|_| commit.len() == 40)
            .ok_or_else(|| GitError::Invalid(format!("{commit:?} is not a full commit id")))?;
        let head = repo
            .refname_to_id(&format!("refs/heads/{branch}"))
            .map_err(|e| failed(&format!("branch {branch} of {url}"), e))?;
        if head == wanted {
            return Ok(true);
        }
        if repo.find_commit(wanted).is_err() {
            return Ok(false);
        }
        repo.graph_descendant_of(head, wanted)
            .map_err(|e| failed(&format!("the history of {branch} of {url}"), e))
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

#[cfg(test)]
mod tests {
    //! Mirrors are removed when no repository names their URL any more, or when unused for long;
    //! using one keeps it.

    use std::time::{Duration, SystemTime};

    use super::{GitError, Mirrors};
    use crate::egress::EgressPolicy;
    use crate::egress::testing::{Server, own_name};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn age(mirrors: &Mirrors, url: &str, by: Duration) {
        let dir = std::fs::File::open(mirrors.path(url)).unwrap();
        dir.set_modified(SystemTime::now() - by).unwrap();
    }

    /// A repository URL was checked only when it was added: a name that resolved to a public
    /// address then and to the control plane's own machine at fetch time was fetched from there.
    #[test]
    fn a_fetch_refuses_a_name_that_now_resolves_inside() {
        let root = tempfile::tempdir().unwrap();
        let server = Server::answering(String::new());
        let url = format!("https://{}:{}/acme/shop.git", own_name(), server.port);
        let mirrors = Mirrors::new(root.path())
            .unwrap()
            .with_egress(EgressPolicy::public_only());
        let refused = mirrors.fetch(&url).unwrap_err();
        assert!(
            matches!(&refused, GitError::Invalid(m) if m.contains("does not connect there")),
            "{refused}"
        );
        assert_eq!(server.connections(), 0, "the fetch reached the server");
        assert!(!mirrors.path(&url).exists(), "a mirror was created");
    }

    /// libgit2 followed a redirect of the first request to another host, one no policy checked
    /// (an internal address, the metadata endpoint).
    #[test]
    fn a_fetch_follows_no_redirect_to_another_host() {
        let root = tempfile::tempdir().unwrap();
        let inside = Server::answering(String::new());
        let redirect = format!(
            "HTTP/1.1 302 Found\r\nLocation: http://localhost:{}/x.git/info/refs?service=git-upload-pack\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            inside.port
        );
        let outside = Server::answering(redirect);
        let mirrors = Mirrors::new(root.path()).unwrap();
        let url = format!("http://127.0.0.1:{}/x.git", outside.port);
        let refused = mirrors.fetch(&url).unwrap_err();
        assert!(refused.to_string().contains("redirect"), "{refused}");
        assert_eq!(outside.connections(), 1);
        assert_eq!(inside.connections(), 0, "the redirect was followed");
    }

    /// Mirrors once stayed on the control plane's disk forever, their repository gone or not.
    #[test]
    fn mirrors_of_gone_or_unused_repositories_are_pruned() {
        let root = tempfile::tempdir().unwrap();
        let mirrors = Mirrors::new(root.path()).unwrap();
        let urls = ["https://a.example/kept.git", "https://a.example/idle.git"];
        for url in urls.iter().chain(["https://a.example/gone.git"].iter()) {
            git2::Repository::init_bare(mirrors.path(url)).unwrap();
        }
        std::fs::create_dir(root.path().join("not-a-mirror")).unwrap();
        age(&mirrors, urls[0], 40 * DAY);
        age(&mirrors, urls[1], 40 * DAY);
        // A use marks the mirror: resolving a missing ref still opened it.
        assert!(mirrors.resolve(urls[0], "main").is_err());

        let wanted: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        let removed = mirrors.prune(&wanted, 30 * DAY).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(mirrors.path(urls[0]).exists(), "used recently");
        assert!(!mirrors.path(urls[1]).exists(), "unused for 40 days");
        assert!(!mirrors.path("https://a.example/gone.git").exists());
        assert!(root.path().join("not-a-mirror").exists());
        assert!(mirrors.prune(&wanted, 30 * DAY).unwrap().is_empty());
    }
}
