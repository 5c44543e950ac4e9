//! Thread-per-core QUIC serving (`--runtime sharded`; the default is one shared runtime).
//!
//! The relay runs one *shard* per worker thread: a single-threaded tokio runtime with its own
//! UDP socket and its own quinn endpoint, all sockets bound to the same port with
//! `SO_REUSEPORT`. A session lives on one shard from handshake to close, with its QUIC
//! connection, its moq-transport tasks and its subscribers' pumps, so the per-object path of a
//! session never crosses threads. On a multi-threaded runtime the same path woke other worker
//! threads several times per object, and at low fan-out a third of the relay's CPU was threads
//! parking and waking. On the 2-core bench machine sharding cut CPU per Gbit/s at 1 subscriber
//! by about a fifth but cost 5-7% at 300 (more, smaller receive calls on more sockets), so it
//! is not the default (docs/BENCHMARKS.md, "Thread-per-core shards").
//!
//! Tracks cross shards through their cache: the ingest of a track runs on its publisher's
//! shard ([`crate::origin::Broadcast`] keeps that shard's runtime), and a push into the cache
//! wakes subscribers' pumps wherever they are.
//!
//! **Keeping a connection on its shard.** The kernel spreads datagrams over a reuseport group
//! by a hash of the 4-tuple, which changes when a client's address does (NAT rebinding,
//! migration); the packets would then reach a shard that does not know the connection. So each
//! shard issues connection IDs whose first byte names it (`byte % shards == shard`, the rest
//! random, as QUIC-LB's plaintext mode does), and a classic BPF program attached to the group
//! ([`attach_steering`]) sends every short-header packet to the shard its destination
//! connection ID names. Long-header packets (the handshake) keep the 4-tuple hash: the client's
//! first Initial carries a connection ID it chose itself.

use std::{io, net::UdpSocket, sync::Arc, time::Duration};

use quinn::ConnectionIdGenerator;

/// Length of the connection IDs the relay issues (quinn's default).
pub const CID_LEN: usize = 8;

/// The most shards: the shard index must fit the first byte of a connection ID.
pub const MAX_SHARDS: usize = 128;

/// Which shard issued a connection ID whose first byte is `first` (what the steering program
/// computes).
pub fn shard_of(first: u8, shards: usize) -> usize {
    usize::from(first) % shards
}

/// Issues random connection IDs whose first byte names the shard.
#[derive(Debug)]
struct ShardCids {
    shard: u8,
    shards: u8,
}

impl ConnectionIdGenerator for ShardCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut bytes: [u8; CID_LEN] = rand::random();
        bytes[0] = tag(bytes[0], self.shard, self.shards);
        quinn::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// A first byte that keeps `random`'s entropy above the shard index: `r * shards + shard` for
/// `r = random % (256 / shards)`, so it never overflows and `% shards` gives the shard back.
fn tag(random: u8, shard: u8, shards: u8) -> u8 {
    let room = 256 / u16::from(shards);
    let r = u16::from(random) % room;
    u8::try_from(r * u16::from(shards) + u16::from(shard)).expect("below 256 by construction")
}

/// The endpoint configuration of shard `shard` of `shards`.
pub fn endpoint_config(shard: usize, shards: usize) -> quinn::EndpointConfig {
    assert!(
        shards <= MAX_SHARDS && shard < shards,
        "shard {shard} of {shards}"
    );
    let (shard, shards) = (shard as u8, shards as u8);
    let mut config = quinn::EndpointConfig::default();
    config.cid_generator(move || Box::new(ShardCids { shard, shards }));
    config
}

// Classic BPF opcodes (linux/bpf_common.h).
const BPF_LD_B_ABS: u16 = 0x10 | 0x20; // BPF_LD (0) | BPF_B | BPF_ABS
const BPF_JMP_JSET_K: u16 = 0x05 | 0x40;
const BPF_ALU_MOD_K: u16 = 0x04 | 0x90;
const BPF_RET_A: u16 = 0x06 | 0x10;
const BPF_RET_K: u16 = 0x06;

/// The steering program: run by the kernel on each datagram's UDP payload, it returns the
/// index of the group's socket to deliver to; an index past the group makes the kernel fall
/// back to its 4-tuple hash.
///
/// ```text
/// 0: A = payload[0]               first byte of the QUIC packet
/// 1: if A & 0x80 goto 5           long header: handshake
/// 2: A = payload[1]               short header: first byte of the destination CID
/// 3: A = A % shards
/// 4: return A
/// 5: return 0xffffffff            (the 4-tuple hash)
/// ```
pub fn steering_program(shards: usize) -> Vec<libc::sock_filter> {
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        insn(BPF_LD_B_ABS, 0, 0, 0),
        insn(BPF_JMP_JSET_K, 3, 0, 0x80),
        insn(BPF_LD_B_ABS, 0, 0, 1),
        insn(BPF_ALU_MOD_K, 0, 0, shards as u32),
        insn(BPF_RET_A, 0, 0, 0),
        insn(BPF_RET_K, 0, 0, u32::MAX),
    ]
}

/// Attaches [`steering_program`] to the reuseport group `socket` belongs to (any member will
/// do; the program is the group's).
pub fn attach_steering(socket: &UdpSocket, shards: usize) -> io::Result<()> {
    let mut program = steering_program(shards);
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_mut_ptr(),
    };
    // The kernel copies the program during the call; `program` outlives it.
    crate::udp::set_option(socket, libc::SO_ATTACH_REUSEPORT_CBPF, &fprog)
}

thread_local! {
    static CURRENT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The shard this thread serves, if it is a shard's thread.
pub fn current() -> Option<usize> {
    CURRENT.with(|c| c.get())
}

/// Runs one thread per element of `inputs`, each building a single-threaded runtime and
/// running `serve(shard, input)` on it. Returns the threads' results as they end, over `done`.
pub fn spawn<T, F, Fut>(
    inputs: Vec<T>,
    serve: F,
    done: tokio::sync::mpsc::Sender<(usize, anyhow::Result<()>)>,
) -> io::Result<()>
where
    T: Send + 'static,
    F: Fn(usize, T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let serve = Arc::new(serve);
    for (shard, input) in inputs.into_iter().enumerate() {
        let serve = serve.clone();
        let done = done.clone();
        std::thread::Builder::new()
            .name(format!("moqcast-shard-{shard}"))
            .spawn(move || {
                CURRENT.with(|c| c.set(Some(shard)));
                let res = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|runtime| runtime.block_on(serve(shard, input)));
                let _ = done.blocking_send((shard, res));
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;

    #[test]
    fn connection_ids_name_their_shard_and_stay_random() {
        for shards in [1usize, 2, 3, 7, 16, MAX_SHARDS] {
            for shard in 0..shards {
                let mut gen = ShardCids {
                    shard: shard as u8,
                    shards: shards as u8,
                };
                let mut firsts = std::collections::HashSet::new();
                for _ in 0..64 {
                    let cid = gen.generate_cid();
                    assert_eq!(cid.len(), CID_LEN);
                    assert_eq!(shard_of(cid[0], shards), shard);
                    firsts.insert(cid[0]);
                }
                if shards <= 16 {
                    assert!(firsts.len() > 4, "first bytes vary: {firsts:?}");
                }
            }
        }
        for random in 0..=255u8 {
            assert_eq!(shard_of(tag(random, 2, 3), 3), 2);
        }
    }

    /// The kernel runs the program: a short-header datagram reaches the socket its second byte
    /// names, whichever client port it comes from.
    #[test]
    fn the_kernel_steers_short_headers_by_connection_id() {
        let shards = 4;
        let (sockets, _) =
            crate::udp::bind_group(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 0, shards).unwrap();
        attach_steering(&sockets[0], shards).unwrap();
        let addr = sockets[0].local_addr().unwrap();
        for s in &sockets {
            assert_eq!(s.local_addr().unwrap(), addr);
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        for client in 0..6 {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            for (target, shard) in sockets.iter().enumerate() {
                let first = tag(client * 37 + target as u8, target as u8, shards as u8);
                let packet = [0x40, first, client, target as u8];
                socket.send_to(&packet, addr).unwrap();
                let mut buf = [0u8; 16];
                let (n, _) = shard.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], &packet, "client {client} to shard {target}");
            }
        }
        // A long-header packet goes by the hash: to exactly one of them.
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        socket.send_to(&[0xc0, 0, 0, 0, 1], addr).unwrap();
        let mut got = 0;
        for s in &sockets {
            s.set_nonblocking(true).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        for s in &sockets {
            let mut buf = [0u8; 16];
            if s.recv_from(&mut buf).is_ok() {
                got += 1;
            }
        }
        assert_eq!(got, 1);
    }
}
