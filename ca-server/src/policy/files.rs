//! Which files make a policy set (on disk or the embedded default), and
//! the set's hash, which names it in every audit row.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::error::PolicyError;

/// The default policy shipped in `policies/`, for `jitssh-ca dev`, for
/// `jitssh-ca init` to copy, and for tests. Only the `*.rego` and
/// `data*.json` entries are part of the policy set.
pub const EMBEDDED_FILES: &[(&str, &str)] = &[
    ("README.md", include_str!("../../../policies/README.md")),
    ("data.json", include_str!("../../../policies/data.json")),
    (
        "example-input.json",
        include_str!("../../../policies/example-input.json"),
    ),
    (
        "example-host-input.json",
        include_str!("../../../policies/example-host-input.json"),
    ),
    ("host.rego", include_str!("../../../policies/host.rego")),
    (
        "host_test.rego",
        include_str!("../../../policies/host_test.rego"),
    ),
    (
        "example-elevation-input.json",
        include_str!("../../../policies/example-elevation-input.json"),
    ),
    (
        "example-approval-input.json",
        include_str!("../../../policies/example-approval-input.json"),
    ),
    (
        "elevation.rego",
        include_str!("../../../policies/elevation.rego"),
    ),
    (
        "elevation_test.rego",
        include_str!("../../../policies/elevation_test.rego"),
    ),
    ("jitssh.rego", include_str!("../../../policies/jitssh.rego")),
    (
        "jitssh_test.rego",
        include_str!("../../../policies/jitssh_test.rego"),
    ),
    (
        "workload.rego",
        include_str!("../../../policies/workload.rego"),
    ),
    (
        "workload_test.rego",
        include_str!("../../../policies/workload_test.rego"),
    ),
    (
        "console.rego",
        include_str!("../../../policies/console.rego"),
    ),
    (
        "console_test.rego",
        include_str!("../../../policies/console_test.rego"),
    ),
];

/// Whether a file name belongs to a policy set. Hidden files (editor
/// backups and locks) are never part of one.
pub(super) fn is_policy_file(name: &str) -> bool {
    !name.starts_with('.')
        && (name.ends_with(".rego") || (name.starts_with("data") && name.ends_with(".json")))
}

pub(super) fn list_policy_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, PolicyError> {
    let read_dir_err = |error| PolicyError::ReadDir {
        dir: dir.to_path_buf(),
        error,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir_err)? {
        let entry = entry.map_err(read_dir_err)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !is_policy_file(&name) {
            continue;
        }
        let path = entry.path();
        // Follow symlinks (deployments often link a release directory in).
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The files of one policy set, sorted by name.
pub(super) struct PolicyFiles {
    pub(super) origin: String,
    pub(super) files: Vec<(String, String)>,
}

impl PolicyFiles {
    pub(super) fn read_dir(dir: &Path) -> Result<Self, PolicyError> {
        let mut files = Vec::new();
        for (name, path) in list_policy_files(dir)? {
            let bytes = std::fs::read(&path).map_err(|source| PolicyError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let text = String::from_utf8(bytes).map_err(|_| PolicyError::NotUtf8 { path })?;
            files.push((name, text));
        }
        Ok(PolicyFiles {
            origin: dir.display().to_string(),
            files,
        })
    }

    pub(super) fn embedded() -> Self {
        let mut files: Vec<(String, String)> = EMBEDDED_FILES
            .iter()
            .filter(|(name, _)| is_policy_file(name))
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect();
        files.sort();
        PolicyFiles {
            origin: "the embedded default policy".into(),
            files,
        }
    }

    /// Hex SHA-256 over each file in name order: name length (u64 BE), name,
    /// content length (u64 BE), content. Length prefixes make the encoding
    /// unambiguous; the same files hash the same wherever they live.
    pub(super) fn hash(&self) -> String {
        let mut h = Sha256::new();
        for (name, text) in &self.files {
            h.update((name.len() as u64).to_be_bytes());
            h.update(name.as_bytes());
            h.update((text.len() as u64).to_be_bytes());
            h.update(text.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::policy::test_support::files;

    #[test]
    fn hash_is_order_and_boundary_sensitive() {
        let a = files(&[("a.rego", "xy"), ("b.rego", "z")]).hash();
        let b = files(&[("b.rego", "z"), ("a.rego", "xy")]).hash();
        let c = files(&[("a.rego", "x"), ("b.rego", "yz")]).hash();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn only_policy_files_belong_to_the_set() {
        for name in [
            "jitssh.rego",
            "jitssh_test.rego",
            "data.json",
            "data-extra.json",
        ] {
            assert!(is_policy_file(name), "{name}");
        }
        for name in [
            "README.md",
            "example-input.json",
            ".#jitssh.rego",
            "jitssh.rego.swp",
            "jitssh.rego~",
        ] {
            assert!(!is_policy_file(name), "{name}");
        }
    }
}
