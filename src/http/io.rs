//! Owned-buffer socket helpers over monoio: append reads into a growing
//! `Vec<u8>` and write a whole buffer, handing the buffer back.

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use std::io;

/// Smallest free space offered to one read.
const READ_RESERVE: usize = 4 * 1024;

/// Reads once, appending to `buf`. `Ok(0)` is end of stream.
pub async fn read_append<S: AsyncReadRent>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_RESERVE {
        buf.reserve(READ_RESERVE.max(buf.len() / 2));
    }
    let owned = std::mem::take(buf);
    let len = owned.len();
    let (res, slice) = stream.read(owned.slice_mut(len..)).await;
    *buf = slice.into_inner();
    res
}

/// Writes all of `buf`, then clears it, keeping its allocation.
pub async fn write_all_clear<S: AsyncWriteRent>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    let owned = std::mem::take(buf);
    let (res, mut owned) = stream.write_all(owned).await;
    owned.clear();
    *buf = owned;
    res.map(|_| ())
}
