//! The library half of the load generator: pieces the end-to-end tests share with it.
//!
//! * [`shaper`]: a slow link for one QUIC client (a UDP forwarder with a paced, bounded queue),
//!   used by `moqcast-bench --slow-subscribers` and by the relay's slow-subscriber tests.

pub mod shaper;
