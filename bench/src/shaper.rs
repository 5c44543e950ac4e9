//! A slow link for one subscriber: a UDP forwarder between one QUIC client and the relay that
//! passes the client's datagrams through untouched and paces the relay's datagrams to the
//! client at a fixed bit rate through a bounded queue, dropping what does not fit (a congested
//! access link's tail drop). The relay's congestion control then slows its sending to that
//! subscriber, as a real slow viewer would make it.
//!
//! [`Pacer`] is the link model (no I/O, callers pass `now`); [`Shaper`] runs it on two sockets.
//! The load generator (`--slow-subscribers`) and the end-to-end tests (a slow subscriber through
//! a relay) both use it.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{net::UdpSocket, task::JoinHandle, time::Instant};

/// A fixed-rate link with a byte-bounded FIFO queue.
#[derive(Debug)]
pub struct Pacer {
    bits_per_s: u64,
    queue_bytes: usize,
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    /// When the link has finished sending the previous datagram.
    free_at: Option<Instant>,
    pub dropped: u64,
}

impl Pacer {
    pub fn new(bits_per_s: u64, queue_bytes: usize) -> Self {
        Self {
            bits_per_s: bits_per_s.max(1),
            queue_bytes,
            queue: VecDeque::new(),
            queued: 0,
            free_at: None,
            dropped: 0,
        }
    }

    /// Queues a datagram; false when the queue is full and it was dropped.
    pub fn offer(&mut self, datagram: Vec<u8>) -> bool {
        if self.queued + datagram.len() > self.queue_bytes {
            self.dropped += 1;
            return false;
        }
        self.queued += datagram.len();
        self.queue.push_back(datagram);
        true
    }

    /// When the head of the queue may leave (`None` while the queue is empty).
    pub fn due(&self, now: Instant) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        Some(self.free_at.map_or(now, |t| t.max(now)))
    }

    /// The head of the queue if the link is free at `now`; the link is then busy for the
    /// datagram's time on the wire at the configured rate.
    pub fn pop(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.free_at.is_some_and(|t| t > now) {
            return None;
        }
        let datagram = self.queue.pop_front()?;
        self.queued -= datagram.len();
        let wire = Duration::from_secs_f64(datagram.len() as f64 * 8.0 / self.bits_per_s as f64);
        // An idle link starts now; a busy one right after the previous datagram.
        let start = self.free_at.map_or(now, |t| t.max(now));
        self.free_at = Some(start + wire);
        Some(datagram)
    }
}

/// A running shaper: point the slow client at [`Shaper::addr`].
pub struct Shaper {
    pub addr: SocketAddr,
    /// Relay-to-client datagrams dropped at the full queue.
    pub dropped: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for Shaper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shaper {
    /// Listens on loopback (the relay's address family) and forwards to `relay`, limiting
    /// relay-to-client traffic to `bits_per_s` with at most `queue_bytes` queued. A relay bound
    /// to an unspecified address (`[::]:PORT`, `0.0.0.0:PORT`) is reached at `127.0.0.1:PORT`.
    pub async fn start(
        relay: SocketAddr,
        bits_per_s: u64,
        queue_bytes: usize,
    ) -> std::io::Result<Self> {
        let relay = if relay.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], relay.port()))
        } else {
            relay
        };
        let (front_addr, back_addr): (SocketAddr, SocketAddr) = if relay.is_ipv6() {
            (
                ([0u16, 0, 0, 0, 0, 0, 0, 1], 0).into(),
                ([0u16; 8], 0).into(),
            )
        } else {
            (([127, 0, 0, 1], 0).into(), ([0, 0, 0, 0], 0).into())
        };
        let front = UdpSocket::bind(front_addr).await?;
        let back = UdpSocket::bind(back_addr).await?;
        let addr = front.local_addr()?;
        let dropped = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(forward(
            front,
            back,
            relay,
            bits_per_s,
            queue_bytes,
            dropped.clone(),
        ));
        Ok(Self {
            addr,
            dropped,
            task,
        })
    }
}

async fn forward(
    front: UdpSocket,
    back: UdpSocket,
    relay: SocketAddr,
    bits_per_s: u64,
    queue_bytes: usize,
    dropped: Arc<AtomicU64>,
) {
    let mut pacer = Pacer::new(bits_per_s, queue_bytes);
    let mut client: Option<SocketAddr> = None;
    let mut up = vec![0u8; 65536];
    let mut down = vec![0u8; 65536];
    loop {
        let due = pacer.due(Instant::now());
        tokio::select! {
            r = front.recv_from(&mut up) => {
                let Ok((n, from)) = r else { return };
                client = Some(from);
                let _ = back.send_to(&up[..n], relay).await;
            }
            r = back.recv_from(&mut down) => {
                let Ok((n, _)) = r else { return };
                if !pacer.offer(down[..n].to_vec()) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            () = tokio::time::sleep_until(due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))), if due.is_some() => {
                while let Some(datagram) = pacer.pop(Instant::now()) {
                    if let Some(to) = client {
                        let _ = front.send_to(&datagram, to).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_at_the_rate_and_drops_past_the_queue() {
        let t0 = Instant::now();
        // 8000 bit/s: a 100-byte datagram takes 100 ms on the wire. Room for 3 queued.
        let mut p = Pacer::new(8_000, 300);
        assert_eq!(p.due(t0), None);
        for _ in 0..4 {
            p.offer(vec![0; 100]);
        }
        assert_eq!(p.dropped, 1, "the fourth does not fit");
        assert_eq!(p.queued, 300);
        // The first leaves at once, the next only after its 100 ms.
        assert!(p.pop(t0).is_some());
        assert_eq!(p.due(t0), Some(t0 + Duration::from_millis(100)));
        assert!(p.pop(t0 + Duration::from_millis(50)).is_none());
        assert!(p.pop(t0 + Duration::from_millis(100)).is_some());
        assert!(p.pop(t0 + Duration::from_millis(150)).is_none());
        assert!(p.pop(t0 + Duration::from_millis(200)).is_some());
        assert_eq!(p.due(t0 + Duration::from_millis(200)), None);
        assert!(p.pop(t0 + Duration::from_secs(9)).is_none());
        // After an idle spell the link starts again at once, not in the past.
        let t1 = t0 + Duration::from_secs(10);
        p.offer(vec![0; 100]);
        p.offer(vec![0; 100]);
        assert_eq!(p.due(t1), Some(t1));
        assert!(p.pop(t1).is_some());
        assert_eq!(p.due(t1), Some(t1 + Duration::from_millis(100)));
    }

    #[test]
    fn long_run_rate_matches_the_setting() {
        let t0 = Instant::now();
        let mut p = Pacer::new(200_000, 1 << 20);
        let mut now = t0;
        let mut sent = 0usize;
        for _ in 0..1000 {
            p.offer(vec![0; 1200]);
        }
        // Serve the queue for 2 s of simulated time in 1 ms steps.
        while now < t0 + Duration::from_secs(2) {
            while let Some(d) = p.pop(now) {
                sent += d.len();
            }
            now += Duration::from_millis(1);
        }
        let bits_per_s = sent as f64 * 8.0 / 2.0;
        assert!(
            (bits_per_s - 200_000.0).abs() < 5_000.0,
            "{bits_per_s} bit/s"
        );
    }
}
