//! `Change`: one edit of one host file, as data. The plan produces them, the journal records
//! them before they are made, and undo/redo replays them.

use serde::{Deserialize, Serialize};

/// Set the file at `path` (relative to the host root) from `before` to `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub path: String,
    pub before: String,
    pub after: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}: {} -> {}", self.path, self.before, self.after)
    }
}
