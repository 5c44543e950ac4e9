//! The library half of the load generator: pieces the end-to-end tests share with it.
//!
//! * [`hostile`]: hostile peers for the relay's hostile-peer suite (`moqcast-hostile`).
//! * [`shaper`]: a slow link for one QUIC client (a UDP forwarder with a paced, bounded queue),
//!   used by `moqcast-bench --slow-subscribers` and by the relay's slow-subscriber tests.

pub mod hostile;
pub mod shaper;
