//! Where the CLI looks on disk by default: the configuration's file name and the sandbox's directory.
//! Below `config`, `sandbox` and `stack`, so that each of them can use these without importing another.

use std::path::PathBuf;

/// The configuration's file name, in the current directory and in the sandbox's.
pub const CONFIG_FILE: &str = "cosell.toml";

/// Where the sandbox keeps its store and the config that operations find by default.
pub fn sandbox_dir() -> PathBuf {
    PathBuf::from(".cosell").join("sandbox")
}
