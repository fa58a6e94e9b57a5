//! External tools some tests drive (lua5.1, promtool, kubectl, Helm through
//! Python). `.ci/run` installs them and sets `UPGRADE_GUARD_TOOLS=required`,
//! so there a missing tool fails the test; on a developer machine without it
//! the test says what to install and passes over.

use std::path::PathBuf;

/// The tool's path, or None (after saying how to install it) when it is
/// missing and not required.
pub fn tool(name: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        let required = std::env::var("UPGRADE_GUARD_TOOLS").is_ok_and(|v| v == "required");
        assert!(
            !required,
            "{name} is required here: install it with `{install}`"
        );
        eprintln!("skipped: {name} is not installed (`{install}`; .ci/run installs it)");
    }
    found
}
