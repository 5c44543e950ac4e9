//! A one-client UDP shaper for tests: forwards a client's datagrams to a server untouched and
//! the server's replies at a limited rate through a bounded queue (excess is dropped, as on a
//! congested link). QUIC's congestion control then slows the server's sending to that client.

use std::{collections::VecDeque, net::SocketAddr, time::Duration};

use tokio::{net::UdpSocket, task::JoinHandle, time::Instant};

pub struct Shaper {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Shaper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shaper {
    /// Listens on 127.0.0.1:0 and relays to `server`, limiting server->client to
    /// `down_bits_per_s` with at most `queue_bytes` queued.
    pub async fn start(server: SocketAddr, down_bits_per_s: u64, queue_bytes: usize) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = front.local_addr().unwrap();
        let server = SocketAddr::from(([127, 0, 0, 1], server.port()));
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let mut queue: VecDeque<Vec<u8>> = VecDeque::new();
            let mut queued = 0usize;
            let mut next_send = Instant::now();
            let mut a = vec![0u8; 65536];
            let mut b = vec![0u8; 65536];
            loop {
                let wake = if queue.is_empty() {
                    Instant::now() + Duration::from_secs(3600)
                } else {
                    next_send
                };
                tokio::select! {
                    r = front.recv_from(&mut a) => {
                        let Ok((n, from)) = r else { return };
                        client = Some(from);
                        let _ = back.send_to(&a[..n], server).await;
                    }
                    r = back.recv_from(&mut b) => {
                        let Ok((n, _)) = r else { return };
                        if queued + n <= queue_bytes {
                            queued += n;
                            queue.push_back(b[..n].to_vec());
                        }
                    }
                    () = tokio::time::sleep_until(wake) => {
                        if let (Some(pkt), Some(to)) = (queue.pop_front(), client) {
                            queued -= pkt.len();
                            let _ = front.send_to(&pkt, to).await;
                            let secs = (pkt.len() as f64 * 8.0) / down_bits_per_s as f64;
                            next_send = Instant::now().max(next_send) + Duration::from_secs_f64(secs);
                        }
                    }
                }
            }
        });
        Self { addr, task }
    }
}
