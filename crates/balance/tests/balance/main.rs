//! Behavioural tests of the public balancer API, one module per concern.

mod availability;
mod common;
mod concurrency;
mod hashing;
mod peak_ewma;
mod random_least_request;
mod round_robin;
