//! The git primitive: control-plane mirrors of real repositories (`file://` here), and commit trees
//! exported to a test server over SSH.

use std::path::Path;

use berth_backends::git::{GitError, Mirrors};
use berth_backends::ssh::Command;
use berth_e2e::control_plane::git;
use berth_e2e::server::Env;

/// A repository with two commits on `main`; returns (url, first, second).
fn repository(dir: &Path) -> (String, String, String) {
    let repo = dir.join("origin");
    std::fs::create_dir_all(repo.join("addons/shop")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "first\n").unwrap();
    std::fs::write(
        repo.join("addons/shop/__manifest__.py"),
        "{'version': '17.0.1.0.0'}\n",
    )
    .unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("README.md"), "second\n").unwrap();
    std::fs::write(repo.join("requirements.txt"), "requests\n").unwrap();
    std::fs::write(repo.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(repo.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "second"]);
    git(&repo, &["tag", "v2"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    (format!("file://{}", repo.display()), first, second)
}

#[test]
fn a_mirror_fetches_resolves_and_diffs() {
    let dir = tempfile::tempdir().unwrap();
    let (url, first, second) = repository(dir.path());
    let mirrors = Mirrors::new(&dir.path().join("mirrors")).unwrap();
    assert!(
        matches!(mirrors.resolve(&url, "main"), Err(GitError::NotFound(_))),
        "not fetched yet"
    );
    mirrors.fetch(&url).unwrap();
    assert_eq!(mirrors.resolve(&url, "main").unwrap(), second);
    assert_eq!(mirrors.resolve(&url, "v2").unwrap(), second);
    assert_eq!(mirrors.resolve(&url, &first).unwrap(), first);
    let unknown = mirrors.resolve(&url, "no-such-branch").unwrap_err();
    assert!(
        matches!(unknown, GitError::NotFound(_)) && unknown.to_string().contains("no-such-branch"),
        "{unknown}"
    );
    assert_eq!(
        mirrors.changed_paths(&url, &first, &second).unwrap(),
        ["README.md", "requirements.txt", "run.sh"]
    );
    assert!(matches!(
        mirrors.changed_paths(&url, "zzz", &second),
        Err(GitError::Invalid(_))
    ));
    let missing = format!("file://{}/nowhere", dir.path().display());
    assert!(matches!(mirrors.fetch(&missing), Err(GitError::Failed(_))));
    // A second fetch updates in place.
    mirrors.fetch(&url).unwrap();
}

/// What a push may deploy: a commit its branch reaches (the head or an ancestor), never one of
/// another branch or one the repository does not hold (a fork's).
#[test]
fn a_branch_reaches_its_own_commits_only() {
    let dir = tempfile::tempdir().unwrap();
    let (url, first, second) = repository(dir.path());
    let repo = dir.path().join("origin");
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(repo.join("feature.txt"), "elsewhere\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "feature"]);
    let feature = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-q", "main"]);
    let mirrors = Mirrors::new(&dir.path().join("mirrors")).unwrap();
    mirrors.fetch(&url).unwrap();
    assert!(mirrors.reaches(&url, "main", &second).unwrap(), "the head");
    assert!(
        mirrors.reaches(&url, "main", &first).unwrap(),
        "an ancestor"
    );
    assert!(
        !mirrors.reaches(&url, "main", &feature).unwrap(),
        "another branch"
    );
    assert!(mirrors.reaches(&url, "feature", &feature).unwrap());
    let absent = "0123456789abcdef0123456789abcdef01234567";
    assert!(
        !mirrors.reaches(&url, "main", absent).unwrap(),
        "not in the repository"
    );
    assert!(matches!(
        mirrors.reaches(&url, "main", &second[..12]),
        Err(GitError::Invalid(_))
    ));
    assert!(mirrors.reaches(&url, "no-such-branch", &second).is_err());
}

/// A branch or tag named with a checked commit's 40 hex digits stood in for that commit when the
/// deploy resolved it: the check passed on one commit and another was deployed.
#[test]
fn a_full_commit_id_is_never_read_as_a_branch_or_tag() {
    let dir = tempfile::tempdir().unwrap();
    let (url, first, second) = repository(dir.path());
    let repo = dir.path().join("origin");
    git(&repo, &["branch", &first, &second]);
    git(&repo, &["tag", &second, &first]);
    let mirrors = Mirrors::new(&dir.path().join("mirrors")).unwrap();
    mirrors.fetch(&url).unwrap();
    assert_eq!(mirrors.resolve(&url, &first).unwrap(), first);
    assert_eq!(mirrors.resolve(&url, &second).unwrap(), second);
    let absent = "0123456789abcdef0123456789abcdef01234567";
    assert!(matches!(
        mirrors.resolve(&url, absent),
        Err(GitError::NotFound(_))
    ));
    assert_eq!(mirrors.resolve(&url, "main").unwrap(), second);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_tree_is_exported_to_the_server_without_git_there() {
    let dir = tempfile::tempdir().unwrap();
    let (url, first, second) = repository(dir.path());
    let mirrors = Mirrors::new(&dir.path().join("mirrors")).unwrap();
    mirrors.fetch(&url).unwrap();
    let env = Env::new(&format!("git{}", std::process::id()));
    let destination = format!("/srv/berth/acme/shop/{}/code/primary", env.name);

    let files = mirrors
        .export(&env.pool, &env.target, &url, &first, &destination)
        .await
        .unwrap();
    assert_eq!(files, 2);
    let files = mirrors
        .export(&env.pool, &env.target, &url, &second, &destination)
        .await
        .unwrap();
    assert_eq!(files, 4);
    let listing = Command::new([
        "sh",
        "-c",
        "cd \"$1\" && find . -type f | sort && cat README.md && stat -c %a run.sh && ls -a .. | grep -c primary",
        "sh",
        &destination,
    ]);
    let out = env
        .pool
        .exec(&env.target, &listing, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "./README.md\n./addons/shop/__manifest__.py\n./requirements.txt\n./run.sh\nsecond\n755\n1\n",
        "the second export replaced the first, leaving no staging or archive behind"
    );
    let refused = mirrors
        .export(&env.pool, &env.target, &url, &second, "/srv/berth/../etc")
        .await;
    assert!(matches!(refused, Err(GitError::Invalid(_))));
    env.pool
        .exec(
            &env.target,
            &Command::new(["rm", "-rf", &format!("/srv/berth/acme/shop/{}", env.name)]),
            &mut |_, _| {},
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_use_git_only_with_the_grant() {
    use berth_e2e::{Harness, component};
    use berth_runtime::{Runtime, RuntimeOptions, ServerAccess, Verdict, WitError};

    let dir = tempfile::tempdir().unwrap();
    let (url, _, second) = repository(dir.path());
    let env = Env::new(&format!("gitp{}", std::process::id()));
    let mirrors = std::sync::Arc::new(Mirrors::new(&dir.path().join("mirrors")).unwrap());
    let rt = Runtime::new(RuntimeOptions::default()).unwrap();
    let plugin = rt.load_file(&component("misbehave")).await.unwrap();
    let harness = |grants: &[&str]| {
        let mut h = Harness::new(&env.name, "misbehave", grants);
        h.lend(mirrors.clone());
        h.lend(std::sync::Arc::new(ServerAccess {
            pool: env.pool.clone(),
            target: env.target.clone(),
            database: None,
        }));
        h
    };
    let h = harness(&[]);
    let outcome = plugin
        .handle(&rt, &h.invocation, &h.event("before:git", &url))
        .await;
    assert!(matches!(
        outcome.unwrap_err().plugin_error(),
        Some(WitError::Denied(_))
    ));

    let h = harness(&["git"]);
    let outcome = plugin
        .handle(&rt, &h.invocation, &h.event("before:git", &url))
        .await;
    assert!(matches!(outcome.unwrap(), Verdict::Continue));
    assert_eq!(
        h.log.messages(),
        [format!("exported 4 files of {}", &second[..7])]
    );
    let exported = format!("/srv/berth/acme/shop/{}/code/primary/README.md", env.name);
    let out = env
        .pool
        .exec(
            &env.target,
            &Command::new(["cat", &exported]),
            &mut |_, _| {},
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, b"second\n");
    env.pool
        .exec(
            &env.target,
            &Command::new(["rm", "-rf", &format!("/srv/berth/acme/shop/{}", env.name)]),
            &mut |_, _| {},
        )
        .await
        .unwrap();
}
