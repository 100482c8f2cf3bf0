//! The UDP system calls std does not offer: segmentation offload both ways (GSO sends many
//! same-sized datagrams in one call, GRO returns many in one read) and socket buffer sizes.
//! Everything here degrades to one datagram per call where the kernel lacks the feature.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

// From linux/udp.h; the libc crate defines them only for some targets.
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// Datagrams per GSO send. The kernel allows 64, but the whole batch must also fit in one
/// 64 KiB IP packet before segmentation.
pub const MAX_SEGMENTS: usize = 40;

/// Kernel socket buffer we ask for each way (capped by net.core.rmem_max / wmem_max): at a
/// gigabit the default ~200 KiB fills within 2 ms of scheduling delay, and every overflow
/// is a loss QUIC must recover.
const SOCKET_BUFFER: libc::c_int = 4 << 20;

/// What the kernel offers on this socket.
#[derive(Clone, Copy, Debug, Default)]
pub struct Offload {
    pub gso: bool,
    pub gro: bool,
    /// The receive and send buffer sizes the kernel granted, bytes.
    pub rcvbuf: usize,
    pub sndbuf: usize,
}

impl Offload {
    /// A warning when the kernel granted smaller buffers than asked, naming the sysctl to
    /// raise: a burst that overflows the receive buffer is loss QUIC must repair.
    pub fn buffer_warning(&self) -> Option<String> {
        let want = SOCKET_BUFFER as usize;
        let short: Vec<String> = [
            ("receive", self.rcvbuf, "net.core.rmem_max"),
            ("send", self.sndbuf, "net.core.wmem_max"),
        ]
        .into_iter()
        .filter(|(_, got, _)| *got < want)
        .map(|(what, got, sysctl)| {
            format!(
                "UDP {what} buffer is {} KiB, asked {} KiB: raise it with \
                 `sysctl -w {sysctl}={}`",
                got / 1024,
                want / 1024,
                2 * want
            )
        })
        .collect();
        (!short.is_empty()).then(|| short.join("; "))
    }
}

/// Sets the socket buffers and turns GRO on; reports which offloads are available and the
/// buffer sizes granted.
pub fn configure(socket: &impl AsRawFd) -> Offload {
    let fd = socket.as_raw_fd();
    // Larger buffers are an optimisation: a refusal leaves the defaults, which still work.
    // The kernel caps them at net.core.rmem_max / wmem_max (read back below).
    let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, SOCKET_BUFFER);
    let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, SOCKET_BUFFER);
    // Linux reports twice what it grants for data (the rest is its bookkeeping).
    let granted = |name| getsockopt(fd, libc::SOL_SOCKET, name).map_or(0, |v| v as usize / 2);
    Offload {
        gso: getsockopt(fd, libc::SOL_UDP, UDP_SEGMENT).is_ok(),
        gro: setsockopt(fd, libc::SOL_UDP, UDP_GRO, 1).is_ok(),
        rcvbuf: granted(libc::SO_RCVBUF),
        sndbuf: granted(libc::SO_SNDBUF),
    }
}

fn setsockopt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed alongside it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn getsockopt(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Control-message room for one `c_int` (the GRO segment size), aligned for cmsghdr.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// One read: `len` bytes from `from`, datagrams of `segment` bytes each (the last may be
/// shorter). Without GRO, `segment == len`.
pub struct Datagrams {
    pub len: usize,
    pub from: SocketAddr,
    pub segment: usize,
}

impl Datagrams {
    /// Where each datagram lies in the buffer (none for an empty datagram).
    pub fn ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> {
        let (len, segment) = (self.len, self.segment.max(1));
        (0..len)
            .step_by(segment)
            .map(move |s| s..len.min(s + segment))
    }

    /// Datagrams read, counting an empty one: what a read costs against a loop's budget.
    pub fn count(&self) -> usize {
        self.len.div_ceil(self.segment.max(1)).max(1)
    }
}

/// Reads the next datagram, or the next GRO run of datagrams, into `buf`.
pub fn recv(socket: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Datagrams> {
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
    let mut control = CmsgBuf([0; 64]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: every pointer in `msg` refers to a live local or to `buf`, with its length.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        // Never hand quiche part of a datagram.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "datagram larger than the receive buffer, dropped",
        ));
    }
    let len = n as usize;
    let mut segment = len;
    // SAFETY: the kernel filled `msg_control` with well-formed headers up to msg_controllen;
    // the CMSG_* helpers stay within it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                if size > 0 {
                    segment = size as usize;
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let from = socket_addr(&addr)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown address family"))?;
    Ok(Datagrams { len, from, segment })
}

/// Sends `data` to `to` as datagrams of `segment` bytes (the last may be shorter), in one
/// call with GSO. Without GSO pass `segment >= data.len()`.
pub fn send(socket: &impl AsRawFd, data: &[u8], segment: usize, to: SocketAddr) -> io::Result<()> {
    let (mut addr, addr_len) = raw_addr(to);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = CmsgBuf([0; 64]);
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = addr_len;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if segment < data.len() {
        // SAFETY: `control` has room for one cmsghdr carrying a u16 (CMSG_SPACE(2) <= 64).
        unsafe {
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment as u16);
        }
    }
    // SAFETY: every pointer in `msg` refers to a live local or to `data`, with its length;
    // the kernel only reads through them.
    let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn socket_addr(addr: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a =
                unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(
                SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )
                .into(),
            )
        }
        _ => None,
    }
}

fn raw_addr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// The sizes granted are read back; a shortfall names the sysctl that caps it.
    #[test]
    fn granted_buffers_are_read_back() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let o = configure(&socket);
        assert!(o.rcvbuf > 0 && o.sndbuf > 0, "{o:?}");
        let want = SOCKET_BUFFER as usize;
        match o.buffer_warning() {
            None => assert!(o.rcvbuf >= want && o.sndbuf >= want, "{o:?}"),
            Some(w) => assert!(w.contains("sysctl -w net.core."), "{w}"),
        }
        let small = Offload {
            rcvbuf: 208 * 1024,
            sndbuf: want,
            ..o
        };
        assert_eq!(
            small.buffer_warning().unwrap(),
            "UDP receive buffer is 208 KiB, asked 4096 KiB: raise it with \
             `sysctl -w net.core.rmem_max=8388608`"
        );
    }

    /// A datagram that does not fit the buffer is refused, not passed on cut short.
    #[test]
    fn a_truncated_datagram_is_an_error() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let to = rx.local_addr().unwrap();
        tx.send_to(&[7; 2000], to).unwrap();
        tx.send_to(&[8; 100], to).unwrap();
        let mut buf = vec![0; 1000];
        let err = recv(&rx, &mut buf).err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::InvalidData));
        let d = recv(&rx, &mut buf).unwrap();
        assert_eq!((d.len, buf[0]), (100, 8));
    }

    /// A GSO send arrives as the same datagrams, whether or not GRO rejoins them.
    #[test]
    fn segments_round_trip() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // A lost datagram fails the test instead of hanging it.
        rx.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        configure(&rx);
        let tx_offload = configure(&tx);
        let to = rx.local_addr().unwrap();
        let data: Vec<u8> = (0..1200 * 3 + 500).map(|i| i as u8).collect();
        let segment = if tx_offload.gso { 1200 } else { data.len() };
        send(&tx, &data, segment, to).unwrap();
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut buf = vec![0; 65536];
        while got.iter().map(Vec::len).sum::<usize>() < data.len() {
            let d = recv(&rx, &mut buf).unwrap();
            assert_eq!(d.from, tx.local_addr().unwrap());
            for r in d.ranges() {
                got.push(buf[r].to_vec());
            }
        }
        let expect: Vec<Vec<u8>> = data.chunks(segment).map(<[u8]>::to_vec).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn empty_datagram_has_no_range_but_counts() {
        let d = Datagrams {
            len: 0,
            from: "127.0.0.1:1".parse().unwrap(),
            segment: 0,
        };
        assert_eq!(d.ranges().count(), 0);
        assert_eq!(d.count(), 1);
    }

    #[test]
    fn addresses_convert_both_ways() {
        for a in ["127.0.0.1:4443", "[::1]:5000", "[fe80::1%2]:9"] {
            let a: SocketAddr = a.parse().unwrap();
            let (raw, _) = raw_addr(a);
            assert_eq!(socket_addr(&raw), Some(a));
        }
    }
}
