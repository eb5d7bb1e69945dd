//! One file per command (as mini-redis has): each holds its flags and the function that runs
//! it. The tree that dispatches to them is [`crate::cli`].
pub mod backup;
pub mod batch;
pub mod check;
pub mod exchange;
pub mod history;
pub mod keys;
pub mod matches;
pub mod review;
pub mod serve;
pub mod takedown;
