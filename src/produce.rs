//! The producers: each runs on its own interval in its organisation's
//! task, asks the sources, and publishes its segment of `/metrics` to the
//! store ([`crate::state`]).
//!
//! * [`poll`]: the enrollment poll (`GetEnrollmentStatusesForOrganization`,
//!   every page, and `GetEnrollmentStatus`);
//! * [`walk`]: the organisation walk (names, OUs, states, tags), kept in
//!   `--storage.path` across restarts.

pub mod poll;
pub mod walk;
