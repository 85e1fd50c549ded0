//! Pooled packet buffers with one lifecycle: get → fill → send (borrows) → release.
//!
//! A [`Packet`] owns a buffer from one of two size classes, [`MAX_PACKET_LEN`] (64 KiB, any
//! frame) and [`MAX_MEDIA_PACKET_LEN`] (1,280 bytes: a media datagram and its channel byte,
//! rounded up to the IPv6 minimum MTU). Dropping or [`Packet::release`]-ing it returns the
//! buffer to its pool, so in steady state nothing is allocated.
//!
//! Rust's ownership turns the reference's two lifecycle bugs into compile errors: `release`
//! consumes the packet (no double release) and nothing can touch it afterwards (no use after
//! release). The `packet-debug` feature adds the checks types cannot make: released buffers
//! are poisoned, and [`outstanding`] counts live packets per class so a test can assert that
//! everything it got was given back.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

pub use nodenet_wire::MAX_PACKET_LEN;

/// The media size class: a 1,200-byte datagram plus its channel byte, rounded up to 1,280.
pub const MAX_MEDIA_PACKET_LEN: usize = 1280;

/// Buffers each class keeps for reuse; beyond that, released buffers are freed.
const POOL_KEEP: [usize; 2] = [512, 4096];

/// The size class of a packet's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SizeClass {
    /// 64 KiB: any frame.
    Full,
    /// 1,280 bytes: media datagrams and small frames.
    Media,
}

impl SizeClass {
    /// Capacity of this class's buffers.
    pub const fn capacity(self) -> usize {
        match self {
            Self::Full => MAX_PACKET_LEN,
            Self::Media => MAX_MEDIA_PACKET_LEN,
        }
    }

    /// The smallest class that holds `len` bytes, if any.
    pub const fn for_len(len: usize) -> Option<Self> {
        if len <= MAX_MEDIA_PACKET_LEN {
            Some(Self::Media)
        } else if len <= MAX_PACKET_LEN {
            Some(Self::Full)
        } else {
            None
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::Full => 0,
            Self::Media => 1,
        }
    }
}

struct Pool {
    free: Mutex<Vec<Box<[u8]>>>,
    #[cfg(feature = "packet-debug")]
    outstanding: std::sync::atomic::AtomicI64,
}

static POOLS: [Pool; 2] = [Pool::new(), Pool::new()];

impl Pool {
    const fn new() -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            #[cfg(feature = "packet-debug")]
            outstanding: std::sync::atomic::AtomicI64::new(0),
        }
    }

    fn take(&self, class: SizeClass) -> Box<[u8]> {
        #[cfg(feature = "packet-debug")]
        self.outstanding
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reused = self.free.lock().map(|mut f| f.pop()).unwrap_or_default();
        reused.unwrap_or_else(|| vec![0u8; class.capacity()].into_boxed_slice())
    }

    fn give(&self, class: SizeClass, buf: Box<[u8]>) {
        #[cfg(feature = "packet-debug")]
        let buf = {
            self.outstanding
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let mut buf = buf;
            buf.fill(0xdb);
            buf
        };
        let keep = POOL_KEEP[class.index()];
        if let Ok(mut free) = self.free.lock() {
            if free.len() < keep {
                if free.capacity() == 0 {
                    // One allocation for the pool's lifetime, so pushes never reallocate.
                    free.reserve_exact(keep);
                }
                free.push(buf);
            }
        }
        // Otherwise the pool is full (or poisoned) and the buffer is freed here.
    }
}

/// Packets of `class` currently handed out and not yet released (`packet-debug` only).
#[cfg(feature = "packet-debug")]
pub fn outstanding(class: SizeClass) -> i64 {
    POOLS[class.index()]
        .outstanding
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// A pooled buffer holding one frame (or one media datagram).
///
/// `Deref` gives the filled bytes (`..len`); [`Packet::buf_mut`] gives the whole capacity to
/// fill, and [`Packet::set_len`] marks how much of it is the packet.
pub struct Packet {
    buf: Box<[u8]>,
    len: usize,
    class: SizeClass,
}

impl Packet {
    /// A 64 KiB packet, empty.
    pub fn get() -> Self {
        Self::of_class(SizeClass::Full)
    }

    /// A 1,280-byte packet, empty.
    pub fn get_media() -> Self {
        Self::of_class(SizeClass::Media)
    }

    /// An empty packet of `class`.
    pub fn of_class(class: SizeClass) -> Self {
        Self {
            buf: POOLS[class.index()].take(class),
            len: 0,
            class,
        }
    }

    /// A packet of the smallest class that holds `bytes`, filled with a copy of them.
    pub fn copy_from(bytes: &[u8]) -> Result<Self, PacketTooLarge> {
        let class = SizeClass::for_len(bytes.len()).ok_or(PacketTooLarge { len: bytes.len() })?;
        let mut p = Self::of_class(class);
        p.buf[..bytes.len()].copy_from_slice(bytes);
        p.len = bytes.len();
        Ok(p)
    }

    /// The whole buffer, to fill before [`Packet::set_len`].
    pub fn buf_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Marks the first `len` bytes of the buffer as the packet.
    pub fn set_len(&mut self, len: usize) -> Result<(), PacketTooLarge> {
        if len > self.buf.len() {
            return Err(PacketTooLarge { len });
        }
        self.len = len;
        Ok(())
    }

    /// Capacity of the buffer.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The buffer's size class.
    pub fn class(&self) -> SizeClass {
        self.class
    }

    /// Returns the buffer to its pool. Dropping the packet does the same; this names the
    /// moment.
    pub fn release(self) {}
}

impl Drop for Packet {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        POOLS[self.class.index()].give(self.class, buf);
    }
}

impl Deref for Packet {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl DerefMut for Packet {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

impl AsRef<[u8]> for Packet {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packet")
            .field("len", &self.len)
            .field("class", &self.class)
            .finish()
    }
}

/// A packet would exceed its buffer (or every size class).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{len} bytes do not fit a packet buffer")]
pub struct PacketTooLarge {
    /// The length asked for.
    pub len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_copies() {
        let p = Packet::copy_from(&[1, 2, 3]).unwrap();
        assert_eq!((&*p, p.class()), (&[1u8, 2, 3][..], SizeClass::Media));
        let big = vec![7u8; 2000];
        let p = Packet::copy_from(&big).unwrap();
        assert_eq!(
            (p.len(), p.class(), p.capacity()),
            (2000, SizeClass::Full, MAX_PACKET_LEN)
        );
        assert!(Packet::copy_from(&vec![0u8; MAX_PACKET_LEN]).is_ok());
        assert_eq!(
            Packet::copy_from(&vec![0u8; MAX_PACKET_LEN + 1]).unwrap_err(),
            PacketTooLarge {
                len: MAX_PACKET_LEN + 1
            }
        );
    }

    #[test]
    fn fill_and_set_len() {
        let mut p = Packet::get_media();
        p.buf_mut()[..4].copy_from_slice(b"abcd");
        p.set_len(4).unwrap();
        assert_eq!(&*p, b"abcd");
        assert!(p.set_len(MAX_MEDIA_PACKET_LEN + 1).is_err());
        p.release();
    }
}
