//! Transport addresses: a network name and an endpoint, e.g. `quic` and `192.0.2.1:4242`.
//!
//! On the wire an address is `uvarint(len net) | net | uvarint(len endpoint) | endpoint`, and a
//! list is `uvarint(count) | addr*`. Lists from peers are decoded without allocating: the
//! count is checked against the protocol cap and against what the input could possibly hold
//! *before* anything else, so a 2-byte address cannot be inflated into a heap object.

use std::fmt;

use crate::WireError;
use crate::codec::{Reader, Writer, uvarint_len};

/// The smallest encoded address: two empty strings.
const MIN_ADDR_LEN: usize = 2;

/// An address borrowed from the bytes it was decoded from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrRef<'a> {
    /// The network: `quic` or `mem` today.
    pub net: &'a str,
    /// Network-specific endpoint; for QUIC a literal `host:port`.
    pub endpoint: &'a str,
}

impl<'a> AddrRef<'a> {
    /// Decodes one address from the reader. Both fields must be UTF-8.
    pub fn decode(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let save = r.clone();
        let parsed = (|| {
            let net = utf8(r.len_prefixed(usize::MAX)?)?;
            let endpoint = utf8(r.len_prefixed(usize::MAX)?)?;
            Ok(Self { net, endpoint })
        })();
        if parsed.is_err() {
            *r = save;
        }
        parsed
    }

    /// Bytes the encoding takes.
    pub fn encoded_len(&self) -> usize {
        uvarint_len(self.net.len() as u64)
            + self.net.len()
            + uvarint_len(self.endpoint.len() as u64)
            + self.endpoint.len()
    }

    /// Encodes the address.
    pub fn encode(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        let need = self.encoded_len();
        if need > w.remaining() {
            return Err(WireError::BufferTooSmall {
                need,
                have: w.remaining(),
            });
        }
        w.put_len_prefixed(self.net.as_bytes())?;
        w.put_len_prefixed(self.endpoint.as_bytes())
    }

    /// An owned copy.
    pub fn to_owned_addr(&self) -> Addr {
        Addr {
            net: self.net.to_owned(),
            endpoint: self.endpoint.to_owned(),
        }
    }
}

impl fmt::Debug for AddrRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.endpoint)
    }
}

impl fmt::Display for AddrRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.endpoint)
    }
}

/// An owned address, for tables that outlive the packet it arrived in.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    /// The network: `quic` or `mem` today.
    pub net: String,
    /// Network-specific endpoint; for QUIC a literal `host:port`.
    pub endpoint: String,
}

impl Addr {
    /// An address from its two parts.
    pub fn new(net: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Self {
            net: net.into(),
            endpoint: endpoint.into(),
        }
    }

    /// Borrows it.
    pub fn as_ref(&self) -> AddrRef<'_> {
        AddrRef {
            net: &self.net,
            endpoint: &self.endpoint,
        }
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.as_ref(), f)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_ref(), f)
    }
}

/// A validated list of addresses, still in its encoded form: iterating decodes lazily and
/// cannot fail, because [`AddrList::decode`] has already checked every entry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AddrList<'a> {
    raw: &'a [u8],
    count: usize,
}

impl<'a> AddrList<'a> {
    /// Decodes `uvarint(count) | addr*` with at most `cap` entries.
    ///
    /// The count is refused before any entry is read when it exceeds `cap`
    /// ([`WireError::TooMany`]) or when the remaining input could not hold that many addresses
    /// ([`WireError::Truncated`]).
    pub fn decode(r: &mut Reader<'a>, cap: usize) -> Result<Self, WireError> {
        let save = r.clone();
        let result = Self::decode_inner(r, cap);
        if result.is_err() {
            *r = save;
        }
        result
    }

    fn decode_inner(r: &mut Reader<'a>, cap: usize) -> Result<Self, WireError> {
        let count = r.uvarint()?;
        if count > cap as u64 {
            return Err(WireError::TooMany { count, max: cap });
        }
        let count = usize::try_from(count).map_err(|_| WireError::TooMany { count, max: cap })?;
        if count > r.remaining() / MIN_ADDR_LEN {
            return Err(WireError::Truncated);
        }
        let mut body = r.clone();
        let start = body.position();
        for _ in 0..count {
            AddrRef::decode(&mut body)?;
        }
        let len = body.position() - start;
        let raw = r.bytes(len)?;
        Ok(Self { raw, count })
    }

    /// Number of addresses.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the list is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The addresses, borrowed.
    pub fn iter(&self) -> AddrListIter<'a> {
        AddrListIter {
            r: Reader::new(self.raw),
            left: self.count,
        }
    }

    /// Bytes the list's encoding takes (count prefix included).
    pub fn encoded_len(&self) -> usize {
        uvarint_len(self.count as u64) + self.raw.len()
    }

    /// Bytes a list of `addrs` takes.
    pub fn encoded_len_of<'b>(addrs: impl IntoIterator<Item = AddrRef<'b>>) -> usize {
        let (n, body) = addrs
            .into_iter()
            .fold((0u64, 0), |(n, l), a| (n + 1, l + a.encoded_len()));
        uvarint_len(n) + body
    }

    /// Encodes `addrs` as a list. Nothing is written if it does not fit.
    pub fn encode<'b, I>(w: &mut Writer<'_>, addrs: I) -> Result<(), WireError>
    where
        I: IntoIterator<Item = AddrRef<'b>>,
        I::IntoIter: Clone,
    {
        let it = addrs.into_iter();
        let need = Self::encoded_len_of(it.clone());
        if need > w.remaining() {
            return Err(WireError::BufferTooSmall {
                need,
                have: w.remaining(),
            });
        }
        w.put_uvarint(it.clone().count() as u64)?;
        for a in it {
            a.encode(w)?;
        }
        Ok(())
    }
}

impl fmt::Debug for AddrList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for AddrList<'a> {
    type Item = AddrRef<'a>;
    type IntoIter = AddrListIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over an [`AddrList`].
#[derive(Clone, Debug)]
pub struct AddrListIter<'a> {
    r: Reader<'a>,
    left: usize,
}

impl<'a> Iterator for AddrListIter<'a> {
    type Item = AddrRef<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Every entry was validated by `AddrList::decode`, so this cannot fail; if it somehow
        // did, ending the iteration is the safe answer.
        AddrRef::decode(&mut self.r).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for AddrListIter<'_> {}

fn utf8(b: &[u8]) -> Result<&str, WireError> {
    std::str::from_utf8(b).map_err(|_| WireError::NotUtf8)
}
