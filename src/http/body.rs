//! Body framing: an incremental chunked decoder (for client uploads and
//! upstream responses) and the chunked encoder used to relay streams.

use super::HttpError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    SizeExtension,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerLine,
    TrailerLf { empty_line: bool },
    Done,
}

/// Decodes `Transfer-Encoding: chunked` incrementally, as bytes arrive.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    size_digits: u8,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self {
            state: State::Size,
            size: 0,
            size_digits: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes from `input`, appending payload to `out`. Returns how
    /// many input bytes were used; stops early once the last chunk and its
    /// trailers are complete (what follows belongs to the next message).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.size_digits >= 15 {
                            return Err(HttpError::InvalidChunk);
                        }
                        self.size = self.size * 16 + u64::from(hex_value(b));
                        self.size_digits += 1;
                    }
                    b';' | b' ' | b'\t' if self.size_digits > 0 => {
                        self.state = State::SizeExtension
                    }
                    b'\r' if self.size_digits > 0 => self.state = State::SizeLf,
                    _ => return Err(HttpError::InvalidChunk),
                },
                State::SizeExtension => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(HttpError::InvalidChunk),
                    _ => {}
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(HttpError::InvalidChunk);
                    }
                    self.state = if self.size == 0 {
                        State::TrailerLineStart
                    } else {
                        State::Data(self.size)
                    };
                    self.size = 0;
                    self.size_digits = 0;
                }
                State::Data(remaining) => {
                    let take = remaining.min((input.len() - i) as u64) as usize;
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(HttpError::InvalidChunk);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(HttpError::InvalidChunk);
                    }
                    self.state = State::Size;
                }
                State::TrailerLineStart => {
                    self.state = if b == b'\r' {
                        State::TrailerLf { empty_line: true }
                    } else {
                        State::TrailerLine
                    };
                }
                State::TrailerLine => {
                    if b == b'\r' {
                        self.state = State::TrailerLf { empty_line: false };
                    }
                }
                State::TrailerLf { empty_line } => {
                    if b != b'\n' {
                        return Err(HttpError::InvalidChunk);
                    }
                    if empty_line {
                        self.state = State::Done;
                        return Ok(i + 1);
                    }
                    self.state = State::TrailerLineStart;
                }
                State::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Appends one chunk (size line, payload, CRLF) to `out`.
pub fn encode_chunk(out: &mut Vec<u8>, payload: &[u8]) {
    if payload.is_empty() {
        return;
    }
    let mut size = [0u8; 16];
    let mut n = payload.len();
    let mut at = size.len();
    while n > 0 || at == size.len() {
        at -= 1;
        size[at] = b"0123456789abcdef"[n % 16];
        n /= 16;
    }
    out.extend_from_slice(&size[at..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(pieces: &[&[u8]]) -> Result<(Vec<u8>, bool), HttpError> {
        let mut dec = ChunkedDecoder::new();
        let mut out = Vec::new();
        for p in pieces {
            dec.decode(p, &mut out)?;
        }
        Ok((out, dec.is_done()))
    }

    #[test]
    fn decodes_split_anywhere() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        for cut in 0..body.len() {
            let (out, done) = decode_all(&[&body[..cut], &body[cut..]]).unwrap();
            assert_eq!(out, b"hello world");
            assert!(done);
        }
    }

    #[test]
    fn stops_at_message_end() {
        let mut dec = ChunkedDecoder::new();
        let mut out = Vec::new();
        let used = dec.decode(b"1\r\na\r\n0\r\n\r\nGET /", &mut out).unwrap();
        assert_eq!(used, 11);
        assert!(dec.is_done());
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode_all(&[b"zz\r\n"]).is_err());
        assert!(decode_all(&[b"3\r\nabcX"]).is_err());
        assert!(decode_all(&[b"ffffffffffffffffff\r\n"]).is_err());
    }

    #[test]
    fn encodes_chunks() {
        let mut out = Vec::new();
        encode_chunk(&mut out, &[b'x'; 26]);
        assert!(out.starts_with(b"1a\r\n"));
        let (decoded, _) = decode_all(&[&out, LAST_CHUNK]).unwrap();
        assert_eq!(decoded.len(), 26);
    }
}
