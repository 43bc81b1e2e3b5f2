//! The discovery sources. Each keeps what it needs to resume after a
//! failure, so the driver only has to call [`crate::Source::next`] again.

pub mod dns;
pub mod etcd;
pub mod fixed;
pub mod registry;
