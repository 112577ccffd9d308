//! Finding the installed PostgreSQL server binaries: `PATH` first, then the usual install
//! directories.

use std::path::{Path, PathBuf};

use super::ClusterError;

/// Where PostgreSQL's binaries are looked for after `PATH`, in order.
const INSTALL_DIRS: &[&str] = &[
    "/usr/lib/postgresql/*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql*/bin",
    "/usr/local/opt/postgresql*/bin",
    "/Applications/Postgres.app/Contents/Versions/latest/bin",
];

/// The installed PostgreSQL binaries used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// Directory holding `initdb` and `postgres`.
    pub bin_dir: PathBuf,
}

impl Binaries {
    /// Finds `initdb` and `postgres`: `PATH` first, then the usual install directories
    /// (the highest version first where a directory pattern matches several).
    pub fn find() -> Result<Self, ClusterError> {
        let from_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .find(|dir| has_server_binaries(dir));
        if let Some(dir) = from_path {
            // Resolve symlinks (e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb) so
            // both binaries come from the same installation.
            let bin_dir = std::fs::canonicalize(dir.join("initdb"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .filter(|d| has_server_binaries(d))
                .unwrap_or(dir);
            return Ok(Self { bin_dir });
        }
        INSTALL_DIRS
            .iter()
            .flat_map(|pattern| expand(pattern))
            .find(|dir| has_server_binaries(dir))
            .map(|bin_dir| Self { bin_dir })
            .ok_or(ClusterError::NoBinaries)
    }

    pub(super) fn initdb(&self) -> PathBuf {
        self.bin_dir.join("initdb")
    }

    pub(super) fn postgres(&self) -> PathBuf {
        self.bin_dir.join("postgres")
    }
}

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// Expands one `*` in a path pattern; matches sorted by version, highest first.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let Some(star) = pattern.find('*') else {
        return vec![PathBuf::from(pattern)];
    };
    let (head, tail) = (&pattern[..star], &pattern[star + 1..]);
    let (parent, prefix) = match head.rfind('/') {
        Some(i) => (&head[..=i], &head[i + 1..]),
        None => ("./", head),
    };
    let (segment_rest, after) = match tail.find('/') {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, ""),
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix) && n.ends_with(segment_rest) && n.len() >= prefix.len() + segment_rest.len())
        .collect();
    names.sort_by_key(|n| std::cmp::Reverse(version_key(n)));
    names.into_iter().map(|n| PathBuf::from(format!("{parent}{n}{after}"))).collect()
}

/// Numeric parts of a name (`postgresql@15` → [15], `9.6` → [9, 6]) so 15 sorts above 9.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let mut names = vec!["9.6", "15", "10", "postgresql@14", "postgresql@9"];
        names.sort_by_key(|n| std::cmp::Reverse(version_key(n)));
        assert_eq!(names, ["15", "postgresql@14", "10", "9.6", "postgresql@9"]);
    }

    #[test]
    fn pattern_expansion_finds_highest_version_first() {
        let root = std::env::temp_dir().join(format!("pgcluster-expand-{}", std::process::id()));
        for v in ["9.6", "15", "13"] {
            std::fs::create_dir_all(root.join(v).join("bin")).unwrap();
        }
        let found = expand(&format!("{}/*/bin", root.display()));
        let _ = std::fs::remove_dir_all(&root);
        let found: Vec<String> = found.iter().map(|p| p.strip_prefix(&root).unwrap().display().to_string()).collect();
        assert_eq!(found, ["15/bin", "13/bin", "9.6/bin"]);
    }
}
