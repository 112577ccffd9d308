//! Who runs the cluster, and its private directory: PostgreSQL refuses to run as root.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{io, ClusterError};

/// The unprivileged account the cluster runs as when this process is root.
pub const UNPRIVILEGED_USER: &str = "nobody";

/// Who runs the cluster: this process's user, or `nobody` when this process is root.
pub(super) struct Owner {
    ids: Option<(u32, u32)>,
}

impl Owner {
    pub(super) fn current() -> Result<Self, ClusterError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(Owner { ids: None });
        }
        let name = std::ffi::CString::new(UNPRIVILEGED_USER).expect("no NUL in a constant");
        // SAFETY: getpwnam takes a NUL-terminated name and returns null or a pointer to a static
        // record, read at once before any other passwd call.
        let record = unsafe { libc::getpwnam(name.as_ptr()) };
        if record.is_null() {
            return Err(ClusterError::NoUnprivilegedUser(UNPRIVILEGED_USER.to_owned()));
        }
        // SAFETY: non-null, as checked.
        let (uid, gid) = unsafe { ((*record).pw_uid, (*record).pw_gid) };
        Ok(Owner { ids: Some((uid, gid)) })
    }

    /// Runs `cmd` as this owner, in a neutral environment.
    pub(super) fn apply(&self, cmd: &mut Command) {
        // A locale the machine lacks (a laptop's LANG) must not stop initdb or the server.
        cmd.env("LC_ALL", "C").env_remove("PGDATA").env_remove("PGPORT");
        if let Some((uid, gid)) = self.ids {
            // std drops supplementary groups when root changes uid.
            std::os::unix::process::CommandExt::uid(cmd, uid);
            std::os::unix::process::CommandExt::gid(cmd, gid);
        }
    }
}

/// Creates the cluster's private directory (owned by the account that runs the cluster).
pub(super) fn make_dir(owner: &Owner) -> Result<PathBuf, ClusterError> {
    use std::os::unix::fs::PermissionsExt as _;
    // As root, the directory goes under /tmp: world-writable with the sticky bit, so the
    // unprivileged supervisor may remove the directory it owns.
    let base = match owner.ids {
        Some(_) if Path::new("/tmp").is_dir() => PathBuf::from("/tmp"),
        _ => std::env::temp_dir(),
    };
    let mut random = [0u8; 6];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random)).ok();
    let name = format!("iotpay-pgcluster-{}-{}", std::process::id(), hex::encode(random));
    let dir = base.join(name);
    std::fs::create_dir(&dir).map_err(io(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("setting permissions of {}", dir.display())))?;
    if let Some((uid, gid)) = owner.ids {
        if let Err(e) = std::os::unix::fs::chown(&dir, Some(uid), Some(gid)) {
            let _ = std::fs::remove_dir(&dir);
            return Err(ClusterError::Io {
                what: format!("giving {} to {UNPRIVILEGED_USER}", dir.display()),
                source: e,
            });
        }
    }
    Ok(dir)
}
