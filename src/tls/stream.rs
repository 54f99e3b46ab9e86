//! One stream type for plain TCP and TLS, so the client connection loop,
//! the relay and the upstream pools are written once. An enum rather than
//! a generic: the pipeline is compiled once, and a plain connection pays
//! one predictable branch per read or write (no allocation, no dynamic
//! dispatch); the TLS state is boxed so plain connections stay small.

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// A client connection as the server sees it.
pub type ClientStream = MaybeTls<monoio_rustls::ServerTlsStream<TcpStream>>;
/// An upstream connection as the pools hold it.
pub type UpstreamStream = MaybeTls<monoio_rustls::ClientTlsStream<TcpStream>>;

pub enum MaybeTls<T> {
    Plain(TcpStream),
    Tls(Box<Guarded<T>>),
}

/// A TLS stream with what sluice needs beside it: its socket's descriptor
/// (monoio-rustls does not lend out the socket) and a record of I/O
/// whose future was dropped before it finished.
///
/// monoio-rustls moves its read (write) buffer into the pending socket
/// operation and puts it back when the operation completes; a future
/// dropped in between (a timeout, a `select!`) leaves it missing, and the
/// next read (write) would panic. So a cancelled read or write marks its
/// direction broken, and later calls in that direction fail with an error
/// instead: the connection is closed soon after in every such case (a
/// timed-out head still gets its 408 written, since writing is unaffected
/// by a cancelled read).
pub struct Guarded<T> {
    stream: T,
    fd: RawFd,
    read_in_flight: bool,
    write_in_flight: bool,
}

fn broken(direction: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        format!("TLS {direction} was cancelled earlier; the connection is unusable"),
    )
}

impl<T> MaybeTls<T> {
    pub fn tls(stream: T, fd: RawFd) -> Self {
        MaybeTls::Tls(Box::new(Guarded {
            stream,
            fd,
            read_in_flight: false,
            write_in_flight: false,
        }))
    }

    /// The plain socket, when this is not TLS.
    pub fn plain(&self) -> Option<&TcpStream> {
        match self {
            MaybeTls::Plain(s) => Some(s),
            MaybeTls::Tls(_) => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }
}

impl<T> AsRawFd for MaybeTls<T> {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            MaybeTls::Plain(s) => s.as_raw_fd(),
            MaybeTls::Tls(t) => t.fd,
        }
    }
}

impl<T: AsyncReadRent> AsyncReadRent for MaybeTls<T> {
    async fn read<B: IoBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        match self {
            MaybeTls::Plain(s) => s.read(buf).await,
            MaybeTls::Tls(t) => {
                if t.read_in_flight {
                    return (Err(broken("read")), buf);
                }
                t.read_in_flight = true;
                let result = t.stream.read(buf).await;
                t.read_in_flight = false;
                result
            }
        }
    }

    async fn readv<B: IoVecBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        match self {
            MaybeTls::Plain(s) => s.readv(buf).await,
            MaybeTls::Tls(t) => {
                if t.read_in_flight {
                    return (Err(broken("read")), buf);
                }
                t.read_in_flight = true;
                let result = t.stream.readv(buf).await;
                t.read_in_flight = false;
                result
            }
        }
    }
}

impl<T: AsyncWriteRent> AsyncWriteRent for MaybeTls<T> {
    async fn write<B: IoBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        match self {
            MaybeTls::Plain(s) => s.write(buf).await,
            MaybeTls::Tls(t) => {
                if t.write_in_flight {
                    return (Err(broken("write")), buf);
                }
                t.write_in_flight = true;
                let result = t.stream.write(buf).await;
                t.write_in_flight = false;
                result
            }
        }
    }

    async fn writev<B: IoVecBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        match self {
            MaybeTls::Plain(s) => s.writev(buf).await,
            MaybeTls::Tls(t) => {
                if t.write_in_flight {
                    return (Err(broken("write")), buf);
                }
                t.write_in_flight = true;
                let result = t.stream.writev(buf).await;
                t.write_in_flight = false;
                result
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            MaybeTls::Plain(s) => s.flush().await,
            MaybeTls::Tls(t) => {
                if t.write_in_flight {
                    return Err(broken("write"));
                }
                t.write_in_flight = true;
                let result = t.stream.flush().await;
                t.write_in_flight = false;
                result
            }
        }
    }

    /// TLS: sends close_notify, then shuts the socket's writing half.
    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            MaybeTls::Plain(s) => s.shutdown().await,
            MaybeTls::Tls(t) => {
                if t.write_in_flight {
                    return Err(broken("write"));
                }
                t.write_in_flight = true;
                let result = t.stream.shutdown().await;
                t.write_in_flight = false;
                result
            }
        }
    }
}
