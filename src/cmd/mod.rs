//! One file per client command.
pub mod backup;
pub mod exchange;
pub mod keys;
