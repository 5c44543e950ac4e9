//! The relay's UDP socket, with an optional larger kernel receive buffer.
//!
//! Every subscriber's acknowledgements, every publisher's media and every handshake arrive on
//! this one socket. With Linux's default 208 KiB receive buffer, the relay's socket dropped
//! 1,172 datagrams in 10 s at 300 subscribers (docs/BENCHMARKS.md); 512 KiB stopped that. A
//! larger buffer is not simply better: past what the relay can process, it queues stale
//! datagrams instead of dropping them, and at twice the machine's capacity 1-8 MiB made the
//! relay fall seconds behind. So the default stays the system's, and `--udp-buffer-bytes`
//! sets it.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
};

use socket2::{Domain, Protocol, Socket, Type};

/// The kernel buffer sizes a socket ended up with (as Linux reports them: twice the payload
/// room asked for, to cover its own bookkeeping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffers {
    pub recv: usize,
    pub send: usize,
}

/// Binds `addr` (dual-stack when it is `[::]`) and, when `buffer` is not 0, asks for `buffer`
/// bytes of receive buffer. The system's limit (`net.core.rmem_max`) caps what an
/// unprivileged process gets; with `CAP_NET_ADMIN` the relay goes past it (`SO_RCVBUFFORCE`),
/// as quic-go does. Returns the socket and the sizes it has; getting less than asked is not an
/// error.
pub fn bind(addr: SocketAddr, buffer: usize) -> io::Result<(UdpSocket, Buffers)> {
    bind_one(addr, buffer, false)
}

/// Binds `n` sockets to the same address with `SO_REUSEPORT` (a group the kernel spreads
/// incoming datagrams over), each as [`bind`] does. With port 0 the first socket picks the port
/// and the others join it. The sockets are in the group's order: index `i` is the socket a
/// reuseport steering program ([`crate::shard`]) selects with `i`.
///
/// A port some other socket holds is refused (`AddrInUse`), even when that socket has
/// `SO_REUSEPORT` too: a second relay started on the same port by mistake would otherwise join
/// the group and take a share of the first one's datagrams.
pub fn bind_group(
    addr: SocketAddr,
    buffer: usize,
    n: usize,
) -> io::Result<(Vec<UdpSocket>, Buffers)> {
    if addr.port() != 0 {
        // A plain bind fails on a port any socket holds; the probe is closed at once.
        drop(bind_one(addr, 0, false)?);
    }
    let (first, buffers) = bind_one(addr, buffer, true)?;
    let mut addr = addr;
    addr.set_port(first.local_addr()?.port());
    let mut sockets = vec![first];
    for _ in 1..n {
        sockets.push(bind_one(addr, buffer, true)?.0);
    }
    Ok((sockets, buffers))
}

fn bind_one(addr: SocketAddr, buffer: usize, reuse_port: bool) -> io::Result<(UdpSocket, Buffers)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        set_int(&socket, libc::SO_REUSEPORT, 1)?;
    }
    if let SocketAddr::V6(v6) = addr {
        if v6.ip().is_unspecified() {
            // `[::]` also takes IPv4, whatever net.ipv6.bindv6only says.
            socket.set_only_v6(false)?;
        }
    }
    if buffer > 0 {
        // Failures leave the default: the relay works, only with more drops under load.
        let _ = socket.set_recv_buffer_size(buffer);
        if !granted(socket.recv_buffer_size().unwrap_or(0), buffer) {
            // Past the system limit: needs CAP_NET_ADMIN.
            let _ = set_int(&socket, libc::SO_RCVBUFFORCE, buffer);
        }
    }
    socket.bind(&addr.into())?;
    let buffers = Buffers {
        recv: socket.recv_buffer_size()?,
        send: socket.send_buffer_size()?,
    };
    Ok((socket.into(), buffers))
}

/// Whether a buffer Linux reports as `reported` holds the `asked` payload bytes (Linux doubles
/// what it was asked for, to cover its bookkeeping).
pub fn granted(reported: usize, asked: usize) -> bool {
    reported >= asked.saturating_mul(2)
}

/// Sets an integer `SOL_SOCKET` option.
fn set_int(socket: &Socket, option: libc::c_int, value: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    set_option(socket, option, &value)
}

/// Sets a `SOL_SOCKET` option to `value`, passed by pointer with its exact size.
///
/// `value` must be what the option expects (a `c_int`, a `sock_fprog` whose program outlives the
/// call, ...): the kernel reads `size_of::<T>()` bytes from it.
pub(crate) fn set_option<T>(
    socket: &impl std::os::fd::AsRawFd,
    option: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: a valid socket descriptor, and a pointer to a live `T` with its exact length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn asks_for_the_buffer_and_gets_at_least_the_default() {
        let (_plain, default) = bind((Ipv4Addr::LOCALHOST, 0).into(), 0).unwrap();
        let (_big, big) = bind((Ipv4Addr::LOCALHOST, 0).into(), 4 << 20).unwrap();
        assert!(big.recv >= default.recv);
        // At least what the system lets any process have (more with CAP_NET_ADMIN).
        let limit = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
        };
        if let Some(rmem) = limit("rmem_max") {
            assert!(
                granted(big.recv, (4 << 20).min(rmem)),
                "{big:?}, rmem_max {rmem}"
            );
        }
        assert_eq!(big.send, default.send, "the send buffer is left as it is");
    }

    #[test]
    fn a_group_shares_its_port_and_refuses_a_second_group_on_it() {
        let (group, _) = bind_group((Ipv4Addr::LOCALHOST, 0).into(), 0, 3).unwrap();
        let addr = group[0].local_addr().unwrap();
        assert!(group.iter().all(|s| s.local_addr().unwrap() == addr));
        let err = bind_group(addr, 0, 2).expect_err("a second relay on the same port");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(group);
        let (again, _) = bind_group(addr, 0, 2).expect("the port is free again");
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn unspecified_ipv6_takes_ipv4_too() {
        let (socket, _) = bind((Ipv6Addr::UNSPECIFIED, 0).into(), 1 << 20).unwrap();
        let port = socket.local_addr().unwrap().port();
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        client
            .send_to(b"hello", (Ipv4Addr::LOCALHOST, port))
            .unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
    }
}
