//! Partner Center simulator (in progress on this branch).
