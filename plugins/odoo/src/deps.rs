//! Dependency files: `apt.txt` (system packages) and `requirements.txt` (Python packages), and the
//! rule that decides between a fast and a full auto-deploy.

/// A push that touches any of these files (in any repository) needs a full deploy.
pub const DEPENDENCY_FILES: [&str; 8] = [
    "requirements.txt",
    "apt.txt",
    "setup.py",
    "pyproject.toml",
    "setup.cfg",
    "Pipfile",
    "Pipfile.lock",
    "poetry.lock",
];

/// The first changed path that is a dependency file, wherever it sits in the repository.
pub fn dependency_change(changed: &[String]) -> Option<&str> {
    changed
        .iter()
        .map(String::as_str)
        .find(|path| DEPENDENCY_FILES.contains(&path.rsplit('/').next().unwrap_or(path)))
}

/// The packages of an `apt.txt`: one or more per line, `#` comments. A name that is not a Debian
/// package name is an error (it would otherwise reach apt-get as an option).
pub fn apt_packages(text: &str) -> Result<Vec<String>, String> {
    let mut packages = Vec::new();
    for word in text
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(str::split_whitespace)
    {
        let valid = word.len() >= 2
            && word.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && word.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'+' | b'-')
            });
        if !valid {
            return Err(format!("{word:?} is not a Debian package name"));
        }
        if !packages.iter().any(|p| p == word) {
            packages.push(word.to_string());
        }
    }
    Ok(packages)
}

/// Whether a `requirements.txt` asks for anything (not only comments and blank lines).
pub fn has_requirements(text: &str) -> bool {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .any(|line| !line.is_empty())
}

/// Whether pip's output says it installed something.
pub fn pip_installed(stdout: &str) -> Option<&str> {
    stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("Successfully installed "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_files_are_found_anywhere_in_a_repository() {
        let code = ["addons/sale_extra/models.py".to_string()];
        assert_eq!(dependency_change(&code), None);
        let deps = [
            "addons/sale_extra/models.py".to_string(),
            "vendor/lib/pyproject.toml".to_string(),
        ];
        assert_eq!(dependency_change(&deps), Some("vendor/lib/pyproject.toml"));
        assert_eq!(
            dependency_change(&["requirements.txt.orig".to_string()]),
            None
        );
    }

    #[test]
    fn apt_txt_is_read_and_checked() {
        assert_eq!(
            apt_packages(
                "# system\nlibxml2-dev  poppler-utils\n\nwkhtmltopdf # pdf\nlibxml2-dev\n"
            )
            .unwrap(),
            ["libxml2-dev", "poppler-utils", "wkhtmltopdf"]
        );
        assert!(apt_packages("-o APT::Get::Foo=1").is_err());
    }

    #[test]
    fn requirements_and_pip_output() {
        assert!(!has_requirements("# nothing\n\n"));
        assert!(has_requirements("phonenumbers==8.13\n"));
        assert_eq!(
            pip_installed("Processing x\nSuccessfully installed berth-standin-dep-1.0\n"),
            Some("berth-standin-dep-1.0")
        );
        assert_eq!(pip_installed("Requirement already satisfied: x"), None);
    }
}
