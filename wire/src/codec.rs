//! Reader and writer over borrowed bytes: the building blocks of every nodenet codec.

use nodenet_kad::{ID_LEN, NodeId};

use crate::WireError;

/// Longest uvarint encoding of a `u64`.
pub(crate) const MAX_VARINT_LEN: usize = 10;

/// Bytes the minimal uvarint encoding of `v` takes (1 ..= 10).
pub const fn uvarint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// A cursor over borrowed input. Every read either returns a value (slices alias the input)
/// and advances, or returns an error and leaves the cursor where it was.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub const fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(*self.array()?))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(*self.array()?))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(*self.array()?))
    }

    /// Reads a big-endian two's-complement `i64`.
    pub fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(*self.array()?))
    }

    /// Reads a LEB128 uvarint. Non-minimal encodings are accepted (the reference accepts them);
    /// an encoding past 64 bits is [`WireError::VarintOverflow`].
    pub fn uvarint(&mut self) -> Result<u64, WireError> {
        let (v, n) = read_uvarint(&self.buf[self.pos..])?;
        self.pos += n;
        Ok(v)
    }

    /// Reads a uvarint length and checks it against `max` before anything is sized by it.
    pub fn len_prefix(&mut self, max: usize) -> Result<usize, WireError> {
        let save = self.pos;
        let v = self.uvarint()?;
        match usize::try_from(v) {
            Ok(n) if n <= max => Ok(n),
            _ => {
                self.pos = save;
                Err(WireError::TooLarge {
                    len: v,
                    max: max as u64,
                })
            }
        }
    }

    /// Reads `n` bytes, borrowed from the input.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.remaining() {
            return Err(WireError::Truncated);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads a uvarint length (at most `max`) and then that many bytes.
    pub fn len_prefixed(&mut self, max: usize) -> Result<&'a [u8], WireError> {
        let save = self.pos;
        let n = self.len_prefix(max)?;
        self.bytes(n).inspect_err(|_| self.pos = save)
    }

    /// Reads a fixed-size array, borrowed from the input.
    pub fn array<const N: usize>(&mut self) -> Result<&'a [u8; N], WireError> {
        let b = self.bytes(N)?;
        // `bytes` returned exactly N bytes.
        b.try_into().map_err(|_| WireError::Truncated)
    }

    /// Reads a 32-byte [`NodeId`].
    pub fn id(&mut self) -> Result<NodeId, WireError> {
        Ok(NodeId::from_bytes(*self.array::<ID_LEN>()?))
    }

    /// Everything not yet read, consuming it.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// True when everything has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Succeeds only if everything has been read: the check that makes a codec canonical.
    pub fn finish(&self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            len => Err(WireError::TrailingBytes { len }),
        }
    }
}

/// A cursor over a caller-owned output buffer. It never grows the buffer: a write that does
/// not fit returns [`WireError::BufferTooSmall`] and writes nothing.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Writes one byte.
    pub fn put_u8(&mut self, v: u8) -> Result<(), WireError> {
        self.put_bytes(&[v])
    }

    /// Writes a big-endian `u16`.
    pub fn put_u16(&mut self, v: u16) -> Result<(), WireError> {
        self.put_bytes(&v.to_be_bytes())
    }

    /// Writes a big-endian `u32`.
    pub fn put_u32(&mut self, v: u32) -> Result<(), WireError> {
        self.put_bytes(&v.to_be_bytes())
    }

    /// Writes a big-endian `u64`.
    pub fn put_u64(&mut self, v: u64) -> Result<(), WireError> {
        self.put_bytes(&v.to_be_bytes())
    }

    /// Writes a big-endian `i64`.
    pub fn put_i64(&mut self, v: i64) -> Result<(), WireError> {
        self.put_bytes(&v.to_be_bytes())
    }

    /// Writes the minimal uvarint encoding of `v`.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "each byte takes the low 7 bits"
    )]
    pub fn put_uvarint(&mut self, mut v: u64) -> Result<(), WireError> {
        let mut tmp = [0u8; MAX_VARINT_LEN];
        let mut n = 0;
        while v >= 0x80 {
            tmp[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        tmp[n] = v as u8;
        self.put_bytes(&tmp[..=n])
    }

    /// Writes raw bytes.
    pub fn put_bytes(&mut self, b: &[u8]) -> Result<(), WireError> {
        let have = self.remaining();
        if b.len() > have {
            return Err(WireError::BufferTooSmall {
                need: b.len(),
                have,
            });
        }
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
        Ok(())
    }

    /// Writes a uvarint length and then the bytes.
    pub fn put_len_prefixed(&mut self, b: &[u8]) -> Result<(), WireError> {
        let need = uvarint_len(b.len() as u64) + b.len();
        if need > self.remaining() {
            return Err(WireError::BufferTooSmall {
                need,
                have: self.remaining(),
            });
        }
        self.put_uvarint(b.len() as u64)?;
        self.put_bytes(b)
    }

    /// Writes a 32-byte [`NodeId`].
    pub fn put_id(&mut self, id: &NodeId) -> Result<(), WireError> {
        self.put_bytes(id.as_bytes())
    }

    /// Bytes written so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Room left in the buffer.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The written prefix of the buffer.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.pos]
    }

    /// Ends writing and returns the number of bytes written.
    pub fn finish(self) -> usize {
        self.pos
    }
}

/// Decodes a uvarint from the front of `buf`: the value and the bytes it took.
///
/// Accepts what Go's `binary.Uvarint` accepts (non-minimal encodings included), so nodes of the
/// reference implementation interoperate.
pub(crate) fn read_uvarint(buf: &[u8]) -> Result<(u64, usize), WireError> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        if i == MAX_VARINT_LEN - 1 && b > 1 {
            return Err(WireError::VarintOverflow);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok((v, i + 1));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        // Ten bytes, all with the continuation bit: longer than any u64.
        return Err(WireError::VarintOverflow);
    }
    Err(WireError::Truncated)
}
