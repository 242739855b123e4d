//! Partner Center client (in progress on this branch).
