//! Thread-per-core QUIC serving (`--runtime sharded`, the default; `shared` is the other).
//!
//! The relay runs one *shard* per worker thread: a single-threaded tokio runtime with its own
//! UDP socket and its own quinn endpoint, all sockets bound to the same port with
//! `SO_REUSEPORT`. A session lives on one shard from handshake to close, with its QUIC
//! connection, its moq-transport tasks and its subscribers' pumps, so the per-object path of a
//! session never crosses threads. On a multi-threaded runtime the same path woke other worker
//! threads several times per object, and at low fan-out a third of the relay's CPU was threads
//! parking and waking (docs/BENCHMARKS.md, "Thread-per-core shards").
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
//! ([`attach_steering`]) sends every packet that carries one of these IDs to the shard it names:
//! every short-header packet, and long-header packets whose destination ID has the relay's
//! length ([`CID_LEN`], 9 bytes, which clients rarely pick for their first Initial).
//!
//! **Placing new connections: pack, then spread.** A client's first flight carries a
//! connection ID it chose itself, so the program sends it to one *placement target* shard,
//! which [`Placement`] picks: the lowest-numbered shard that is busy less than
//! [`SPILL_PERMILLE`] of its thread's time, or the least busy one when all are past it. An idle
//! or lightly loaded relay thus runs its sessions on one thread, where a track's objects reach
//! its subscribers without waking other threads, and more threads join as the load grows. On
//! the 2-core bench machine, sessions spread over two threads cost up to 50% more CPU per
//! Gbit/s than the same sessions on one (docs/BENCHMARKS.md, "Packing sessions onto shards").
//! Every [`MEASURE_EVERY`] shard 0 reads each shard thread's CPU time (one wake-up for all of
//! them: an idle relay's timer wake-ups were a tenth of its CPU at one subscriber) and
//! re-attaches the program when the target changes. A client whose first flight straddles a
//! change of target (a ClientHello in two datagrams) has its handshake split over two shards;
//! its retransmission reaches the new target, and the stray half times out with the handshake.

use std::{
    io,
    net::UdpSocket,
    sync::{
        atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use quinn::ConnectionIdGenerator;

/// Length of the connection IDs the shards issue. Not quinn's default of 8: browsers pick 8
/// bytes for their first Initial's destination ID, and the steering program tells the relay's
/// own IDs from those by their length.
pub const CID_LEN: usize = 9;

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
pub fn endpoint_config(
    shard: usize,
    shards: usize,
    reset_key: Arc<dyn quinn::crypto::HmacKey>,
) -> quinn::EndpointConfig {
    assert!(
        shards <= MAX_SHARDS && shard < shards,
        "shard {shard} of {shards}"
    );
    let (shard, shards) = (shard as u8, shards as u8);
    let mut config = quinn::EndpointConfig::new(reset_key);
    config.cid_generator(move || Box::new(ShardCids { shard, shards }));
    config
}

// Classic BPF opcodes (linux/bpf_common.h).
const BPF_LD_B_ABS: u16 = 0x10 | 0x20; // BPF_LD (0) | BPF_B | BPF_ABS
const BPF_JMP_JSET_K: u16 = 0x05 | 0x40;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_ALU_MOD_K: u16 = 0x04 | 0x90;
const BPF_RET_A: u16 = 0x06 | 0x10;
const BPF_RET_K: u16 = 0x06;

/// The steering program: run by the kernel on each datagram's UDP payload, it returns the
/// index of the group's socket to deliver to. `target` is the shard that takes new
/// connections.
///
/// ```text
///  0: A = payload[0]              first byte of the QUIC packet
///  1: if A & 0x80 goto 5          long header
///  2: A = payload[1]              short header: first byte of the destination CID
///  3: A = A % shards
///  4: return A
///  5: A = payload[5]              long header: destination CID length
///  6: if A != CID_LEN goto 10
///  7: A = payload[6]              one of the relay's IDs: its first byte
///  8: A = A % shards
///  9: return A
/// 10: return target               a client's first flight (its own ID)
/// ```
///
/// A datagram too short for a load ends the program with 0 (shard 0), which drops it as
/// quinn would anywhere.
pub fn steering_program(shards: usize, target: usize) -> Vec<libc::sock_filter> {
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        insn(BPF_LD_B_ABS, 0, 0, 0),
        insn(BPF_JMP_JSET_K, 3, 0, 0x80),
        insn(BPF_LD_B_ABS, 0, 0, 1),
        insn(BPF_ALU_MOD_K, 0, 0, shards as u32),
        insn(BPF_RET_A, 0, 0, 0),
        insn(BPF_LD_B_ABS, 0, 0, 5),
        insn(BPF_JMP_JEQ_K, 0, 3, CID_LEN as u32),
        insn(BPF_LD_B_ABS, 0, 0, 6),
        insn(BPF_ALU_MOD_K, 0, 0, shards as u32),
        insn(BPF_RET_A, 0, 0, 0),
        insn(BPF_RET_K, 0, 0, target as u32),
    ]
}

/// Attaches [`steering_program`] to the reuseport group `socket` belongs to (any member will
/// do; the program is the group's, and attaching again replaces it).
pub fn attach_steering(socket: &UdpSocket, shards: usize, target: usize) -> io::Result<()> {
    let mut program = steering_program(shards, target);
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_mut_ptr(),
    };
    // The kernel copies the program during the call; `program` outlives it.
    crate::udp::set_option(socket, libc::SO_ATTACH_REUSEPORT_CBPF, &fprog)
}

/// A shard past this share of its thread's time (in thousandths) takes no new connections
/// while a lower-numbered or less busy shard does.
pub const SPILL_PERMILLE: u32 = 600;

/// How often shard 0 measures the shard threads' CPU time.
pub const MEASURE_EVERY: Duration = Duration::from_millis(200);

/// The default saturation mark (`--coalesce-above`): a shard awake (not parked waiting for
/// events) at least this share of the time, in thousandths, is saturated, and subscribers'
/// objects start to go out in coalesced sends ([`Placement::coalescing`]).
pub const COALESCE_ABOVE_PERMILLE: u32 = 900;

/// Whether the relay coalesces next, given whether it does now, its busiest shard's awake
/// share and the saturation mark `above` (thousandths). A coalescing relay goes back to
/// sending each object at once below two thirds of the mark: coalescing itself lowers the
/// share (at 1000 subscribers on the bench machine, from about 1.0 to about 0.8-0.9), so the
/// way back is far below the way in, or it would flap.
pub fn coalesce_next(now: bool, awake: u32, above: u32) -> bool {
    if now {
        awake >= above * 2 / 3
    } else {
        awake >= above
    }
}

/// The shard that takes new connections, given each shard's recent busy share (thousandths of
/// its thread's time): the first one below `spill`, else the least busy.
pub fn placement_target(busy: &[u32], spill: u32) -> usize {
    busy.iter().position(|&b| b < spill).unwrap_or_else(|| {
        busy.iter()
            .enumerate()
            .min_by_key(|&(_, &b)| b)
            .map_or(0, |(i, _)| i)
    })
}

/// The shards' load and where new connections go ([`placement_target`]).
#[derive(Debug)]
pub struct Placement {
    busy: Vec<AtomicU32>,
    sessions: Vec<AtomicU64>,
    /// Each shard thread's CPU-time clock (`pthread_getcpuclockid`), -1 until it registered
    /// (Linux's thread CPU clocks end in binary 110, so -1 is never one).
    clocks: Vec<AtomicI32>,
    /// Each shard's awake time (not parked in its runtime's event wait), from its runtime's
    /// park hooks ([`spawn`]).
    awake: Vec<AwakeClock>,
    /// Each shard's recent awake share, in thousandths.
    awake_share: Vec<AtomicU32>,
    /// Whether a shard is saturated, so that every shard coalesces ([`coalesce_next`]).
    coalescing: AtomicBool,
    /// Zero of the awake clocks.
    epoch: Instant,
    /// The saturation mark ([`coalesce_next`]), in thousandths.
    coalesce_above: u32,
    target: AtomicUsize,
    /// A handle on the group (a duplicate of shard 0's socket) to re-attach the program.
    group: UdpSocket,
}

impl Placement {
    /// Attaches the steering program to `group`'s reuseport group, with shard 0 taking new
    /// connections. A shard awake at least `coalesce_above` thousandths of the time makes every
    /// shard coalesce ([`coalesce_next`]).
    pub fn new(group: &UdpSocket, shards: usize, coalesce_above: u32) -> io::Result<Arc<Self>> {
        attach_steering(group, shards, 0)?;
        Ok(Arc::new(Self {
            busy: (0..shards).map(|_| AtomicU32::new(0)).collect(),
            sessions: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            clocks: (0..shards).map(|_| AtomicI32::new(-1)).collect(),
            awake: (0..shards).map(|_| AwakeClock::default()).collect(),
            awake_share: (0..shards).map(|_| AtomicU32::new(0)).collect(),
            coalescing: AtomicBool::new(false),
            epoch: Instant::now(),
            coalesce_above,
            target: AtomicUsize::new(0),
            group: group.try_clone()?,
        }))
    }

    pub fn shards(&self) -> usize {
        self.busy.len()
    }

    /// The shard new connections go to now.
    pub fn target(&self) -> usize {
        self.target.load(Ordering::Relaxed)
    }

    /// Shard `shard`'s busy share over its last measurement, in thousandths.
    pub fn busy(&self, shard: usize) -> u32 {
        self.busy[shard].load(Ordering::Relaxed)
    }

    /// Shard `shard`'s awake share over its last measurement, in thousandths.
    pub fn awake(&self, shard: usize) -> u32 {
        self.awake_share[shard].load(Ordering::Relaxed)
    }

    /// Whether a shard is saturated, so that the pumps of every shard coalesce what they send.
    pub fn coalescing(&self) -> bool {
        self.coalescing.load(Ordering::Relaxed)
    }

    fn clock_ns(&self) -> u64 {
        // One more than the time since the epoch: 0 marks a parked shard.
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Shard `shard`'s runtime woke up (its `on_thread_unpark` hook).
    pub fn unparked(&self, shard: usize) {
        self.awake[shard]
            .since
            .store(self.clock_ns(), Ordering::Relaxed);
    }

    /// Shard `shard`'s runtime is about to wait for events (its `on_thread_park` hook).
    pub fn parked(&self, shard: usize) {
        let clock = &self.awake[shard];
        let since = clock.since.swap(0, Ordering::Relaxed);
        if since != 0 {
            clock
                .total
                .fetch_add(self.clock_ns().saturating_sub(since), Ordering::Relaxed);
        }
    }

    /// Shard `shard`'s awake time so far, the interval it is awake in now included.
    fn awake_time(&self, shard: usize) -> Duration {
        let clock = &self.awake[shard];
        loop {
            let total = clock.total.load(Ordering::Relaxed);
            let since = clock.since.load(Ordering::Relaxed);
            // A park between the two loads moved the open interval into `total`: read again.
            if clock.total.load(Ordering::Relaxed) != total {
                continue;
            }
            let open = if since == 0 {
                0
            } else {
                self.clock_ns().saturating_sub(since)
            };
            return Duration::from_nanos(total + open);
        }
    }

    /// Sessions open on shard `shard`.
    pub fn sessions(&self, shard: usize) -> u64 {
        self.sessions[shard].load(Ordering::Relaxed)
    }

    /// Counts a session on `shard` until the guard drops.
    pub fn session(self: &Arc<Self>, shard: usize) -> SessionGuard {
        self.sessions[shard].fetch_add(1, Ordering::Relaxed);
        SessionGuard {
            placement: self.clone(),
            shard,
        }
    }

    /// Records `shard`'s busy share and, on shard 0, moves the target if the shares call for
    /// it.
    fn update(&self, shard: usize, busy: u32) {
        self.busy[shard].store(busy, Ordering::Relaxed);
        if shard != 0 {
            return;
        }
        let current = self.target();
        let busy: Vec<u32> = self
            .busy
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let target = placement_target(&busy, SPILL_PERMILLE);
        if target != current {
            match attach_steering(&self.group, self.shards(), target) {
                Ok(()) => {
                    self.target.store(target, Ordering::Relaxed);
                    tracing::debug!(target, ?busy, "new connections go to another shard");
                }
                Err(e) => tracing::warn!(error = %e, "could not move the shard placement target"),
            }
        }
    }

    /// Records the shards' awake shares and whether the relay coalesces from now on.
    fn update_awake(&self, awake: &[u32]) {
        for (share, &a) in self.awake_share.iter().zip(awake) {
            share.store(a, Ordering::Relaxed);
        }
        let busiest = awake.iter().copied().max().unwrap_or(0);
        let was = self.coalescing();
        let next = coalesce_next(was, busiest, self.coalesce_above);
        if next != was {
            self.coalescing.store(next, Ordering::Relaxed);
            tracing::debug!(?awake, coalescing = next, "relay saturation changed");
        }
    }

    /// Called on shard `shard`'s thread: lets [`Placement::measure`] read the thread's CPU
    /// time from shard 0.
    pub fn register(&self, shard: usize) {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: `pthread_self` is the calling (live) thread; `clock` is a live clockid_t.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        // Awake from here until the runtime first parks.
        self.unparked(shard);
        if rc == 0 {
            self.clocks[shard].store(clock, Ordering::Relaxed);
        } else {
            tracing::warn!(
                shard,
                rc,
                "no CPU clock for the shard's thread: counted as idle"
            );
        }
    }

    /// Runs on shard 0 until dropped: every [`MEASURE_EVERY`] reads each registered shard
    /// thread's CPU time and awake time, keeps averages of its busy and awake shares weighted
    /// to the last 0.4 s or so, and updates the placement and which shards coalesce.
    pub async fn measure(self: Arc<Self>) {
        let mut tick = tokio::time::interval(MEASURE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shards = self.shards();
        let mut last = std::time::Instant::now();
        let mut cpu: Vec<Option<Duration>> = vec![None; shards];
        let mut smooth = vec![0f64; shards];
        let mut awake: Vec<Duration> = (0..shards).map(|i| self.awake_time(i)).collect();
        let mut awake_smooth = vec![0f64; shards];
        loop {
            tick.tick().await;
            let now = std::time::Instant::now();
            let wall = now.duration_since(last).as_secs_f64();
            last = now;
            // Shard 0 last: its update moves the target.
            for i in (0..shards).rev() {
                let clock = self.clocks[i].load(Ordering::Relaxed);
                let used = (clock != -1).then(|| cpu_time(clock)).flatten();
                if let (Some(before), Some(after), true) = (cpu[i], used, wall > 0.0) {
                    let share = (after.saturating_sub(before).as_secs_f64() / wall).min(1.0);
                    smooth[i] = 0.5 * smooth[i] + 0.5 * share;
                }
                cpu[i] = used;
                let now_awake = self.awake_time(i);
                if wall > 0.0 {
                    let share = (now_awake.saturating_sub(awake[i]).as_secs_f64() / wall).min(1.0);
                    awake_smooth[i] = 0.5 * awake_smooth[i] + 0.5 * share;
                }
                awake[i] = now_awake;
                self.update(i, (smooth[i] * 1000.0) as u32);
            }
            let shares: Vec<u32> = awake_smooth.iter().map(|a| (a * 1000.0) as u32).collect();
            self.update_awake(&shares);
        }
    }
}

/// A shard's awake time: closed intervals, and the start of the open one.
#[derive(Debug, Default)]
struct AwakeClock {
    /// Nanoseconds awake in intervals that ended.
    total: AtomicU64,
    /// [`Placement::clock_ns`] when the current interval began; 0 while parked.
    since: AtomicU64,
}

/// How a pump holds back what it sends while a shard is saturated.
#[derive(Debug, Clone)]
pub struct Coalesce {
    placement: Arc<Placement>,
    window: Duration,
}

impl Coalesce {
    /// For the relay's pumps: `None` with a zero window.
    pub fn new(placement: &Arc<Placement>, window: Duration) -> Option<Self> {
        (!window.is_zero()).then(|| Self {
            placement: placement.clone(),
            window,
        })
    }

    /// How long new objects wait to go out together now: the window while a shard is
    /// saturated, else not at all.
    pub fn window(&self) -> Option<Duration> {
        self.placement.coalescing().then_some(self.window)
    }
}

/// A session counted on its shard ([`Placement::session`]).
pub struct SessionGuard {
    placement: Arc<Placement>,
    shard: usize,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.placement.sessions[self.shard].fetch_sub(1, Ordering::Relaxed);
    }
}

/// CPU time a thread has used, from its CPU-time clock (`None` once the thread is gone).
fn cpu_time(clock: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: any clock id is safe to ask for (an invalid one fails); `ts` is a live timespec.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

thread_local! {
    static CURRENT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The shard this thread serves, if it is a shard's thread.
pub fn current() -> Option<usize> {
    CURRENT.with(|c| c.get())
}

/// Runs one thread per element of `inputs`, each building a single-threaded runtime and
/// running `serve(shard, input)` on it. The runtimes' park hooks keep `placement`'s awake
/// clocks. Returns the threads' results as they end, over `done`.
pub fn spawn<T, F, Fut>(
    inputs: Vec<T>,
    placement: &Arc<Placement>,
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
        let (woke, parks) = (placement.clone(), placement.clone());
        std::thread::Builder::new()
            .name(format!("moqcast-shard-{shard}"))
            .spawn(move || {
                CURRENT.with(|c| c.set(Some(shard)));
                let res = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .on_thread_unpark(move || woke.unparked(shard))
                    .on_thread_park(move || parks.parked(shard))
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

    /// Shard 0's sampler reads other threads' CPU clocks: a spinning thread registered as
    /// shard 0 is seen busy, the sleeping thread registered as shard 1 idle.
    #[test]
    fn the_sampler_reads_each_shard_threads_cpu_time() {
        let (sockets, _) =
            crate::udp::bind_group(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 0, 2).unwrap();
        let placement = Placement::new(&sockets[0], 2, COALESCE_ABOVE_PERMILLE).unwrap();
        placement.register(1);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinner = {
            let (placement, stop) = (placement.clone(), stop.clone());
            std::thread::spawn(move || {
                placement.register(0);
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        // Half a core is enough to tell them apart, even on a machine busy with other tests.
        let seen = rt.block_on(async {
            let _sampler = crate::OwnedTask(tokio::spawn(placement.clone().measure()));
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                tokio::time::sleep(MEASURE_EVERY).await;
                if placement.busy(0) >= 500 {
                    return true;
                }
            }
            false
        });
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        assert!(
            seen,
            "the spinning shard was seen {} busy",
            placement.busy(0)
        );
        assert!(placement.busy(1) < 200, "{}", placement.busy(1));
    }

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
    /// names, whichever client port it comes from; so does a long-header one that carries one of
    /// the relay's IDs; a client's first flight goes to the placement target, and moving the
    /// target moves only those.
    #[test]
    fn the_kernel_steers_by_connection_id_and_places_first_flights() {
        let shards = 4;
        let (sockets, _) =
            crate::udp::bind_group(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 0, shards).unwrap();
        let placement = Placement::new(&sockets[0], shards, COALESCE_ABOVE_PERMILLE).unwrap();
        let addr = sockets[0].local_addr().unwrap();
        for s in &sockets {
            assert_eq!(s.local_addr().unwrap(), addr);
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        let expect = |socket: &UdpSocket, packet: &[u8], shard: usize, what: &str| {
            socket.send_to(packet, addr).unwrap();
            let mut buf = [0u8; 64];
            let (n, _) = sockets[shard].recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], packet, "{what} to shard {shard}");
        };
        // An Initial: long header, version 1, then the destination ID's length and bytes.
        let long = |first: u8, dcid: &[u8]| {
            let mut p = vec![first, 0, 0, 0, 1, dcid.len() as u8];
            p.extend_from_slice(dcid);
            p.extend_from_slice(&[0; 8]);
            p
        };
        for target in [0usize, 3, 1] {
            if target != placement.target() {
                // A shard past the spill share moves new connections off it.
                let mut busy = vec![SPILL_PERMILLE; shards];
                busy[target] = 0;
                for (i, b) in busy.iter().enumerate().rev() {
                    placement.update(i, *b);
                }
            }
            assert_eq!(placement.target(), target);
            for client in 0..4u8 {
                let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
                for shard in 0..shards {
                    let first = tag(client * 37 + shard as u8, shard as u8, shards as u8);
                    expect(&socket, &[0x40, first, client, 7], shard, "short header");
                    let mut cid = [client; CID_LEN];
                    cid[0] = first;
                    expect(&socket, &long(0xe0, &cid), shard, "Handshake, relay's ID");
                    expect(&socket, &long(0xc0, &cid), shard, "Initial, relay's ID");
                }
                // First flights: the client's own IDs (8 and 20 bytes) go to the target.
                for len in [8usize, 20] {
                    let cid = vec![client.wrapping_mul(31).wrapping_add(len as u8); len];
                    expect(&socket, &long(0xc0, &cid), target, "first Initial");
                    expect(&socket, &long(0xd0, &cid), target, "0-RTT");
                }
            }
        }
    }

    /// A shard starts coalescing at the mark and stops only well below it; mark 0 coalesces
    /// always.
    #[test]
    fn saturation_has_hysteresis() {
        let m = COALESCE_ABOVE_PERMILLE;
        assert!(!coalesce_next(false, 899, m));
        assert!(coalesce_next(false, 900, m));
        assert!(coalesce_next(true, 850, m), "coalescing lowers the share");
        assert!(coalesce_next(true, 600, m));
        assert!(!coalesce_next(true, 599, m));
        assert!(coalesce_next(false, 0, 0));
        assert!(coalesce_next(true, 0, 0));
        assert!(
            !coalesce_next(false, 1000, 1001),
            "a mark above 1000 never coalesces"
        );
    }

    /// The park hooks keep a shard's awake clock: a runtime blocked in its own work counts as
    /// awake, one waiting on a timer does not.
    #[test]
    fn park_hooks_measure_the_awake_time() {
        let (sockets, _) =
            crate::udp::bind_group(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 0, 1).unwrap();
        let placement = Placement::new(&sockets[0], 1, COALESCE_ABOVE_PERMILLE).unwrap();
        let (woke, parks) = (placement.clone(), placement.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .on_thread_unpark(move || woke.unparked(0))
            .on_thread_park(move || parks.parked(0))
            .build()
            .unwrap();
        let (busy, idle) = rt.block_on(async {
            // As each shard does when it starts serving.
            placement.register(0);
            let start = placement.awake_time(0);
            // Work that never yields (a blocking sleep stands for it).
            std::thread::sleep(Duration::from_millis(300));
            tokio::task::yield_now().await;
            let after_work = placement.awake_time(0);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after_wait = placement.awake_time(0);
            (after_work - start, after_wait - after_work)
        });
        assert!(
            busy >= Duration::from_millis(290),
            "awake {busy:?} while working"
        );
        assert!(
            idle < Duration::from_millis(150),
            "awake {idle:?} while waiting"
        );
    }

    #[test]
    fn new_connections_pack_onto_the_first_shard_with_room_then_the_least_busy() {
        assert_eq!(placement_target(&[0, 0, 0], 600), 0);
        assert_eq!(placement_target(&[599, 0, 0], 600), 0);
        assert_eq!(placement_target(&[600, 100, 0], 600), 1);
        assert_eq!(placement_target(&[900, 700, 650], 600), 2);
        assert_eq!(placement_target(&[900, 610, 650], 600), 1);
        assert_eq!(placement_target(&[], 600), 0);
    }
}
